"""The Prefect flow `pgrpo-pipeline`: every stage of dvc.yaml as a visible task run.

    python -m flows.pipeline                                  # params.yaml, as `dvc repro`
    python -m flows.pipeline --steps 2 --algorithms pgrpo     # overrides: see below
    python -c "from flows.pipeline import pipeline; pipeline('configs/smoke.yaml')"
    python -m flows.serve          # a deployment to trigger from the UI (scripts/ui.sh start)

    prepare -> assign_groups -> train_reward -> train_policy (one per algorithm) -> evaluate

The flow body runs inside one MLflow parent run (pgrpo.tracking.mlflow_tracking.pipeline_run);
every task's run_stage attaches its child run to it.

DVC and Prefect never disagree:
- without overrides (every knob None, or equal to the params file's value) the stages
  run on the params file itself, and if that is params.yaml in a DVC repo (dvc.yaml +
  .dvc/ in the working directory) each finished stage is recorded with
  `dvc commit -f <stage>`: afterwards `dvc status` reports the pipeline up to date, as
  after `dvc repro`. Another params file (configs/smoke.yaml) is never committed: dvc.yaml
  describes params.yaml;
- with overrides the stages run on an effective params file (a temp file, kept as the
  `pgrpo-flow-params` artifact and in the MLflow parent run) and nothing is committed
  to DVC: the outputs then differ from what params.yaml describes, and `dvc status`
  says so. To make an override permanent, edit params.yaml (or `dvc exp run -S`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pgrpo.stages import registry
from pgrpo.core.config import merge_params, parse_sets, read_params, write_temp_params
from pgrpo.orchestration.pipeline import PIPELINE_LOCK, check_params, lock_wait
from pgrpo.orchestration.run_lock import run_lock
from tasks import stages

# One definition per knob: the flow's signature (the UI form) and PipelineParams share it.
ParamsFile = Annotated[str, Field(min_length=1, description=(
    "params file with one section per stage, relative to the repo root"))]
Algorithms = Annotated[list[str] | None, Field(min_length=1, description=(
    "algorithms to train and evaluate: keys of the params file's `algorithms` section; "
    "empty = all of them"))]
Estimators = Annotated[list[str] | None, Field(min_length=1, description=(
    "advantage estimators registered in pgrpo.core.advantages (grpo, pgrpo, pgrpo_scale, ...) to "
    "train, each as an algorithm of its own name in place of the `algorithms` section; "
    "empty = the params file's algorithms"))]
Steps = Annotated[int | None, Field(ge=1, description=(
    "policy.steps (optimizer rounds per algorithm); empty = the params file's"))]
LearningRate = Annotated[float | None, Field(gt=0, lt=1, description=(
    "policy.lr (AdamW learning rate of the policy); empty = the params file's"))]
GroupMethod = Annotated[Literal["label", "cluster", "random"] | None, Field(description=(
    "assign_groups.method: given labels, clustering, or random groups (the ablation); "
    "empty = the params file's"))]
Seed = Annotated[int | None, Field(ge=0, description=(
    "seed of prepare, assign_groups, reward and policy (evaluate keeps its own, so every "
    "run is judged on the same draw); empty = the params file's"))]
RefreshCache = Annotated[bool, Field(description=(
    "run every stage even if its params and input files are unchanged since a cached run"))]
Overrides = Annotated[list[str] | None, Field(description=(
    "any other param as SECTION.KEY=VALUE, e.g. policy.beta=0.04 (as --set on the CLI); "
    "applied after the knobs above"))]
RunName = Annotated[str | None, Field(description=(
    "name of the MLflow parent run; empty = \"prefect-\" + this flow run's name"))]
DvcSync = Annotated[bool, Field(description=(
    "for a run in its own checkout (a work-pool deployment, flows/workpool.py): the knobs go "
    "into its params.yaml, `dvc pull` fetches what its dvc.lock lists and the DVC remote holds "
    "(stages then up to date are not run), and the run is saved as a DVC experiment and "
    "pushed: dvc.lock to the git origin, outputs to the DVC remote"))]


class PipelineParams(BaseModel):
    """The flow's parameters, validated (also what the Prefect UI form shows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    params_file: ParamsFile = "params.yaml"
    algorithms: Algorithms = None
    estimators: Estimators = None
    steps: Steps = None
    lr: LearningRate = None
    group_method: GroupMethod = None
    seed: Seed = None
    refresh_cache: RefreshCache = False
    overrides: Overrides = None
    run_name: RunName = None
    dvc_sync: DvcSync = False

    def effective(self) -> dict[str, Any]:
        """The params file with the knobs applied; a clear error for an unknown algorithm."""
        path = Path(self.params_file)
        if not path.is_file():
            raise FileNotFoundError(f"params file {path} does not exist "
                                    f"(working directory {Path.cwd()})")
        params = read_params(path)
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
        if self.algorithms is not None:
            known = out.get("algorithms") or {}
            unknown = [a for a in self.algorithms if a not in known]
            if unknown:
                raise ValueError(f"algorithms {unknown} are not in {path} section `algorithms` "
                                 f"(listed: {sorted(known)})")
            out["algorithms"] = {a: known[a] for a in dict.fromkeys(self.algorithms)}
        if self.estimators is not None:
            from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS

            if self.algorithms is not None:
                raise ValueError("give algorithms or estimators, not both")
            unknown = [e for e in self.estimators if e not in ADVANTAGE_ESTIMATORS]
            if unknown:
                raise ValueError(f"estimators {unknown} are not registered; registered: "
                                 f"{sorted(ADVANTAGE_ESTIMATORS)}")
            out["algorithms"] = {e: {"advantage": e} for e in dict.fromkeys(self.estimators)}
        knobs = {"policy.steps": self.steps, "policy.lr": self.lr,
                 "assign_groups.method": self.group_method,
                 **{f"{s}.seed": self.seed for s in ("prepare", "assign_groups", "reward", "policy")}}
        overlay = parse_sets([])
        for dotted, value in knobs.items():
            if value is not None:
                section, key = dotted.split(".")
                overlay.setdefault(section, {})[key] = value
        out = merge_params(out, overlay, where="the flow's knobs")
        return merge_params(out, parse_sets(self.overrides or []), where="overrides")


def effective_params_file(p: PipelineParams) -> tuple[str, bool]:
    """(file the stages run on, overridden?): the params file itself if nothing changes."""
    effective = p.effective()
    if effective == read_params(p.params_file):
        return p.params_file, False
    tmp = write_temp_params(effective, f"# {p.params_file} with the flow's overrides "
                            "(flows/pipeline.py)\n", prefix="pgrpo-flow-params-")
    return str(tmp), True


# --------------------------------------------------------------------------- DVC

def is_dvc_repo(cwd: Path | None = None) -> bool:
    cwd = cwd or Path.cwd()
    return (cwd / "dvc.yaml").is_file() and (cwd / ".dvc").is_dir()


def _dvc(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def dvc_commit_wanted(params_file: str, overridden: bool) -> tuple[bool, str]:
    """Commit to DVC only what dvc.yaml describes: params.yaml (its params file), unchanged."""
    if overridden:
        return False, "overrides: outputs not committed to DVC"
    if not is_dvc_repo():
        return False, "not a DVC repo: nothing committed"
    if Path(params_file).resolve() != (Path.cwd() / "params.yaml").resolve():
        return False, f"{params_file} is not dvc.yaml's params.yaml: outputs not committed to DVC"
    return True, "each stage recorded with dvc commit"


def own_checkout(p: PipelineParams, log) -> None:
    """dvc_sync: this working copy is the run's own, so its knobs become its params.yaml (DVC
    then records them, and `dvc exp save` keeps them) and its inputs come from the remote.
    The knobs, applied again to that params.yaml, change nothing: the run is not overridden."""
    from pgrpo.core.config import write_params

    if not is_dvc_repo():
        raise ValueError(f"dvc_sync: {Path.cwd()} is not a DVC repo (dvc.yaml and .dvc/)")
    if Path(p.params_file) != Path("params.yaml"):
        raise ValueError(f"dvc_sync runs on params.yaml, what dvc.yaml describes, not "
                         f"{p.params_file}: give its knobs as overrides")
    effective = p.effective()
    if effective != read_params("params.yaml"):
        write_params(effective, "params.yaml")
    pulled = _dvc("pull", "--allow-missing").strip().splitlines()
    log.info("dvc pull: %s", pulled[-1] if pulled else "nothing to fetch")


def dvc_up_to_date(stage: str, algorithm: str | None, names: set[str]) -> bool:
    target = f"{stage}@{algorithm}" if algorithm and f"{stage}@{algorithm}" in names else stage
    return target in names and json.loads(_dvc("status", "--json", target) or "{}") == {}


def push_experiment(name: str) -> str:
    """Save this checkout's run as DVC experiment `name` and push it: its commit (params.yaml,
    dvc.lock) to the git remote `origin`, its outputs to the default DVC remote."""
    # what DVC leaves to git (cache: false metrics, plots, figures) is new and untracked in
    # this checkout; everything else it wrote is cached and git-ignored
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"],
                               capture_output=True, text=True, check=True).stdout.split()
    _dvc("exp", "save", "-f", "-n", name, *[a for f in untracked for a in ("-I", f)])
    _dvc("exp", "push", "origin", name)
    return (f"saved and pushed as DVC experiment {name!r}: dvc exp pull origin {name} && "
            f"dvc exp apply {name} && dvc pull")


def dvc_stage_names() -> set[str]:
    return set(_dvc("stage", "list", "--name-only").split())


def dvc_commit(stage: str, algorithm: str | None, names: set[str]) -> str | None:
    """`dvc commit -f` the stage (foreach/matrix: <stage>@<algorithm>); None if dvc.yaml lacks it."""
    target = f"{stage}@{algorithm}" if algorithm else stage
    if target not in names:
        return None
    _dvc("commit", "-f", "-q", target)
    return target


# --------------------------------------------------------------------------- the flow

def pipeline(params_file: ParamsFile = "params.yaml", algorithms: Algorithms = None,
             estimators: Estimators = None, steps: Steps = None, lr: LearningRate = None, group_method: GroupMethod = None,
             seed: Seed = None, refresh_cache: RefreshCache = False,
             overrides: Overrides = None, run_name: RunName = None,
             dvc_sync: DvcSync = False) -> dict[str, Any]:
    """P-GRPO pipeline: prepare, assign_groups, train_reward, train_policy per algorithm, evaluate.

    Knobs left empty keep the params file's values. With any override the stages run
    on an effective copy of the params file and DVC is not told (dvc status then shows
    the outputs as changed); without overrides each stage is `dvc commit`ed.
    """
    from prefect.runtime import flow_run

    from pgrpo.core.config import load_section
    from pgrpo.tracking.mlflow_tracking import TrackingConfig, pipeline_run

    log = get_run_logger()
    p = PipelineParams(params_file=params_file, algorithms=algorithms, estimators=estimators,
                       steps=steps, lr=lr,
                       group_method=group_method, seed=seed, refresh_cache=refresh_cache,
                       overrides=overrides, run_name=run_name, dvc_sync=dvc_sync)
    if p.dvc_sync:
        own_checkout(p, log)
    path, overridden = effective_params_file(p)
    try:
        algs = check_params(path)
        create_markdown_artifact(
            f"## parameters ({'overrides of ' if overridden else ''}{p.params_file})\n\n"
            f"```yaml\n{Path(path).read_text(encoding='utf-8')}```", key="pgrpo-flow-params",
            description="the params file the stages ran on")
        commit, why = dvc_commit_wanted(p.params_file, overridden)
        names = dvc_stage_names() if commit else None
        log.info("stages run on %s; %s", path, why)
        track = load_section(path, "tracking", TrackingConfig)
        results: dict[str, Any] = {}
        # The whole flow holds the pipeline's lock: a `dvc repro` or a second flow in this
        # workspace stops with the holder's name instead of interleaving its writes.
        with run_lock(PIPELINE_LOCK, f"prefect flow run {flow_run.get_name()}", lock_wait()), \
                pipeline_run(track, path, p.run_name or f"prefect-{flow_run.get_name()}"):
            for stage, alg in registry.plan(algs):
                if p.dvc_sync and names is not None and dvc_up_to_date(stage, alg, names):
                    log.info("%s%s: up to date with what dvc pull fetched, not run", stage,
                             f"@{alg}" if alg else "")
                    continue
                t = getattr(stages, stage)
                # Outputs deleted or rewritten since the cached run: run it again.
                if p.refresh_cache or not stages.cache_usable(stage, path, alg):
                    t = t.with_options(refresh_cache=True)
                kwargs = {"algorithm": alg} if alg else {}
                results[f"{stage}/{alg}" if alg else stage] = t(params_file=path, **kwargs)
                stages.record_outputs(stage, path, alg)
                if names is not None and not dvc_commit(stage, alg, names):
                    log.warning("dvc.yaml has no stage %s%s: not recorded in DVC", stage,
                                f"@{alg}" if alg else "")
        if p.dvc_sync:
            log.info("%s", push_experiment(flow_run.get_name()))
        return results
    finally:
        if overridden:
            Path(path).unlink(missing_ok=True)


# Prefect takes parameter descriptions from the docstring (over Annotated Field ones):
# generate its Args section from the one definition, then make the function a flow.
pipeline.__doc__ += "\n    Args:\n" + "".join(f"        {name}: {field.description}\n"
                                               for name, field in PipelineParams.model_fields.items())
pipeline = flow(name="pgrpo-pipeline", log_prints=True)(pipeline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the pgrpo-pipeline flow once, here")
    for name, field in PipelineParams.model_fields.items():
        if field.annotation is bool:
            parser.add_argument(f"--{name}", action="store_true", help=field.description)
            continue
        if name == "overrides":  # --set KEY=VALUE, repeatable, as every other CLI
            parser.add_argument("--set", dest="overrides", action="append", default=None,
                                metavar="KEY=VALUE", help=field.description)
            continue
        kind = {"algorithms": lambda s: s.split(","), "estimators": lambda s: s.split(","),
                "params_file": str, "run_name": str}.get(name)
        parser.add_argument(f"--{name}", type=kind or yaml.safe_load, default=field.default,
                            help=field.description)
    args = vars(parser.parse_args(argv))
    try:
        PipelineParams(**args)
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pipeline(**args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
