"""MLflow tracking of pipeline runs: one parent run per pipeline run, a child run per stage.

mlflow is imported inside the functions only, so this module (and TrackingConfig)
imports on machines without it; the trainer never imports this module at all, it
gets an MlflowLogger (pgrpo.tracking.mlflow_logger: sent in the background) through its
MetricLogger protocol. Models: pgrpo.tracking.mlflow_models.

Where runs go: `tracking.tracking_uri` in params, else $MLFLOW_TRACKING_URI, else
sqlite:///mlflow.db in the working directory (the repo root for DVC and Prefect);
experiment `tracking.experiment` ("pgrpo").

How stages find their parent run (DVC runs each stage in its own process, Prefect
runs them all in one flow):
- Prefect (or any driver): the flow body runs inside `pipeline_run(...)`, which
  creates a fresh parent run (or resumes the one already named by the variable) and
  puts its id in $PGRPO_PARENT_RUN_ID; every stage_run under it attaches to it.
- DVC (`dvc repro`, no such variable): stage_run looks in the experiment for the
  newest parent tagged pgrpo.pipeline_key = sha256(params file + git commit) and
  creates it if there is none. So all stages of one `dvc repro` land under one
  parent, and a new params file or commit starts a new parent. Uncommitted code
  changes do not (each child carries pgrpo.git_dirty). Such a parent is marked
  finished after each stage and running again while a stage runs.

Tags of a child run (sources: pgrpo.tracking.provenance): pgrpo.stage, pgrpo.algorithm,
pgrpo.git_commit (and mlflow.source.git.commit), pgrpo.git_dirty, prefect.flow_run_id
inside a Prefect flow run, and under `dvc repro` dvc.<path> = md5 of each data
dependency; the DVC parent carries dvc.<path> of every out in dvc.lock. Outside DVC
there are no dvc.* tags: dvc.lock would describe another run's data.

    from pgrpo.tracking.mlflow_tracking import TrackingConfig, stage_run, log_metrics_flat
    from pgrpo.tracking.mlflow_logger import MlflowLogger
    cfg = TrackingConfig()
    with stage_run("train_policy", cfg, params=policy_cfg.model_dump(), algorithm="pgrpo"):
        train_policy(policy_cfg, out, logger=MlflowLogger())     # train/reward/<group> per step
        log_metrics_flat({"eval": {"casual": 0.7}}, prefix="final")  # final/eval/casual

    mlflow ui --backend-store-uri sqlite:///mlflow.db              # then open localhost:5000
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from pgrpo.core.config import Section
from pgrpo.tracking.mlflow_names import active_run_id, flatten_metrics, flatten_params, safe_key
from pgrpo.tracking.server import best_effort, check_reachable
from pgrpo.tracking.provenance import dvc_tags, git_info, pipeline_key, prefect_tags

PARENT_ENV = "PGRPO_PARENT_RUN_ID"
PIPELINE_KEY_TAG = "pgrpo.pipeline_key"
PARENT_TAG = "pgrpo.parent"  # "dvc": found or created by stage_run; "pipeline_run": a driver's
BATCH = 100  # params / tags per log_batch call


class TrackingConfig(Section):
    """MLflow tracking (params.yaml section `tracking`)."""

    enabled: bool = Field(True, description="record runs in MLflow (needs mlflow installed)")
    experiment: str = Field("pgrpo", description="MLflow experiment name")
    tracking_uri: str | None = Field(
        None, description="None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir")
    log_models: bool = Field(True, description="log the reward model and policies as MLflow models")
    register_models: bool = Field(True, description="register them as pgrpo-reward-model / pgrpo-policy")


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def tracking_enabled(cfg: TrackingConfig) -> bool:
    """cfg.enabled, and mlflow importable (warns when it is on but mlflow is missing)."""
    if not cfg.enabled:
        return False
    if importlib.util.find_spec("mlflow") is None:
        warnings.warn("tracking.enabled is true but mlflow is not installed: nothing is recorded")
        return False
    return True


def _client(cfg: TrackingConfig):
    """Point mlflow (fluent API and client) at cfg's store; returns (client, experiment id)."""
    import mlflow

    check_reachable(resolve_tracking_uri(cfg))
    mlflow.set_tracking_uri(resolve_tracking_uri(cfg))
    return mlflow.MlflowClient(), mlflow.set_experiment(cfg.experiment).experiment_id


# --------------------------------------------------------------------------- runs

def find_runs(cfg: TrackingConfig, tags: Mapping[str, str], max_results: int = 1000) -> list:
    """The runs of cfg's experiment that carry every one of `tags` (key = value)."""
    client, experiment_id = _client(cfg)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment_id], query, max_results=max_results)


def _log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = list(flatten_params(params).items())
    for i in range(0, len(flat), BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in flat[i:i + BATCH]])


def _set_tags(client, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [(safe_key(k), str(v)) for k, v in tags.items() if v is not None]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in items[i:i + BATCH]])


def _new_parent(client, experiment_id: str, params_file: Path, key: str, source: str,
                run_name: str | None, git: dict) -> str:
    from pgrpo.core.config import read_params

    tags = {PIPELINE_KEY_TAG: key, PARENT_TAG: source, "pgrpo.params_file": str(params_file),
            "pgrpo.git_commit": git.get("commit"), "pgrpo.git_dirty": git.get("dirty"),
            "mlflow.source.git.commit": git.get("commit"), **prefect_tags()}
    run = client.create_run(experiment_id, run_name=run_name or f"pipeline-{key[:8]}",
                            tags={k: v for k, v in tags.items() if v is not None})
    if params_file.is_file():
        _log_params(client, run.info.run_id, read_params(params_file))
        client.log_artifact(run.info.run_id, str(params_file))
    return run.info.run_id


def _find_or_create_dvc_parent(client, experiment_id: str, params_file: Path, git: dict) -> str:
    key = pipeline_key(params_file, git.get("commit"))
    found = client.search_runs(
        [experiment_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and tags.`{PARENT_TAG}` = 'dvc'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    return _new_parent(client, experiment_id, params_file, key, "dvc", None, git)


@contextmanager
def pipeline_run(cfg: TrackingConfig, params_file: str | Path = "params.yaml",
                 run_name: str | None = None) -> Iterator[str | None]:
    """The parent run of one pipeline run (Prefect flows); yields its id, None if tracking is off.

    Resumes the run named by $PGRPO_PARENT_RUN_ID if set, else creates one. Inside
    the block $PGRPO_PARENT_RUN_ID names it, so stage_run calls attach to it from
    any thread. Ends it FINISHED, or FAILED / KILLED if the block raises.
    """
    if not tracking_enabled(cfg):
        yield None
        return
    client, experiment_id = _client(cfg)
    previous = os.environ.get(PARENT_ENV)
    if previous:
        client.update_run(_checked_parent(client, previous), status="RUNNING")
        run_id = previous
    else:
        git = git_info()
        run_id = _new_parent(client, experiment_id, Path(params_file),
                             pipeline_key(params_file, git.get("commit")), "pipeline_run",
                             run_name, git)
    os.environ[PARENT_ENV] = run_id
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status)
        if previous is None:
            os.environ.pop(PARENT_ENV, None)


def _checked_parent(client, run_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as e:
        import mlflow
        raise ValueError(f"${PARENT_ENV}={run_id} names no run in the tracking store "
                         f"{mlflow.get_tracking_uri()}: {e}") from None
    return run_id


@contextmanager
def stage_run(stage: str, cfg: TrackingConfig, params: Mapping[str, Any] | None = None,
              algorithm: str | None = None, params_file: str | Path = "params.yaml",
              tags: Mapping[str, str] | None = None):
    """A child run for one stage (and algorithm); yields mlflow's ActiveRun, None if tracking is off.

    The parent: $PGRPO_PARENT_RUN_ID, else the DVC parent of (params_file, git commit).
    `params` (the stage's config, nested dicts allowed) is logged flattened; `tags` are
    added to the run's own (e.g. a comparison's seed).
    """
    if not tracking_enabled(cfg):
        yield None
        return
    import mlflow

    client, experiment_id = _client(cfg)
    git = git_info()
    dvc_stage = os.environ.get("DVC_STAGE")
    child_dvc, parent_dvc = dvc_tags(dvc_stage, os.environ.get("DVC_ROOT", ".")) \
        if dvc_stage else ({}, {})
    parent = os.environ.get(PARENT_ENV)
    owns_parent = not parent  # the DVC parent's status follows its stages
    if parent:
        _checked_parent(client, parent)
    else:
        parent = _find_or_create_dvc_parent(client, experiment_id, Path(params_file), git)
        _set_tags(client, parent, parent_dvc)
    tags = {"pgrpo.stage": stage, "pgrpo.algorithm": algorithm, "dvc.stage": dvc_stage,
            "pgrpo.git_commit": git.get("commit"), "mlflow.source.git.commit": git.get("commit"),
            "pgrpo.git_dirty": git.get("dirty"), **prefect_tags(),
            **{safe_key(k): v for k, v in child_dvc.items()}, **(tags or {})}
    name = f"{stage}-{algorithm}" if algorithm else stage
    status = "FAILED"
    try:
        run = mlflow.start_run(experiment_id=client.get_run(parent).info.experiment_id,
                               run_name=name, parent_run_id=parent,
                               nested=mlflow.active_run() is not None,
                               tags={k: v for k, v in tags.items() if v is not None})
    except BaseException:
        if owns_parent:
            client.set_terminated(parent, status)
        raise
    try:
        if params:
            _log_params(client, run.info.run_id, params)
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:  # the work is done: a server gone meanwhile must not fail the stage now
        best_effort(f"MLflow run {name} ({status})", lambda: mlflow.end_run(status))
        if owns_parent:
            best_effort(f"MLflow parent run {parent}", lambda: client.set_terminated(parent, status))


def parent_run_id(run_id: str | None = None) -> str | None:
    """The parent of `run_id` (default: the active run)."""
    import mlflow

    run_id = run_id or active_run_id()
    return mlflow.MlflowClient().get_run(run_id).data.tags.get("mlflow.parentRunId")


# --------------------------------------------------------------------------- metrics and files

def log_metrics_flat(metrics: Mapping[str, Any], prefix: str = "", step: int | None = None,
                     run_id: str | None = None) -> dict[str, float]:
    """Log a nested summary ({"casual": {"reward": 0.7}} -> <prefix>/casual/reward); returns it."""
    from pgrpo.tracking.mlflow_logger import MlflowLogger

    flat = flatten_metrics(metrics, prefix)
    if flat:
        logger = MlflowLogger(run_id or active_run_id())
        logger.log_metrics(flat, step or 0)
        logger.close()
    return flat


def log_metrics_file(path: str | Path, run_id: str | None = None) -> int:
    """Log a metrics.jsonl (pgrpo.core.metric_log.JsonlLogger) step by step; returns the row count."""
    from pgrpo.tracking.mlflow_logger import MlflowLogger
    from pgrpo.core.metric_log import read_metrics

    logger = MlflowLogger(run_id)
    rows = read_metrics(path)
    for row in rows:
        logger.log_metrics({k: v for k, v in row.items() if k != "step"}, row["step"])
    logger.close()
    return len(rows)


def log_artifact_files(paths: list[str | Path], artifact_path: str | None = None,
                       run_id: str | None = None) -> None:
    """Log files and folders (a folder keeps its name) to a run; a missing path is an error."""
    import mlflow

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"cannot log artifacts that do not exist: {missing}")
    client, run_id = mlflow.MlflowClient(), run_id or active_run_id()
    for p in map(Path, paths):
        if p.is_dir():
            sub = f"{artifact_path}/{p.name}" if artifact_path else p.name
            client.log_artifacts(run_id, str(p), sub)
        else:
            client.log_artifact(run_id, str(p), artifact_path)


def log_figure(png: str | Path, artifact_path: str = "plots", run_id: str | None = None) -> str:
    """Log a PNG (e.g. per-group reward curves from pgrpo.stages.evaluation.plots); returns its artifact path."""
    png = Path(png)
    if png.suffix.lower() != ".png" or not png.is_file():
        raise FileNotFoundError(f"{png} is not an existing .png file")
    log_artifact_files([png], artifact_path, run_id)
    return f"{artifact_path}/{png.name}"
