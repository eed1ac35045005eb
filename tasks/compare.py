"""Prefect tasks of the comparison (flows/compare.py); each calls pgrpo.experiments.compare.

    from tasks.compare import train_seed, evaluate_seed, summarize
    train_seed.fn("params.yaml", ["grpo", "pgrpo"], 1, "pgrpo")   # the bare function

No Prefect cache keys here: train_policy resumes from its final checkpoint, so a finished
(seed, algorithm) costs a model load on a rerun, and pgrpo.experiments.compare.evaluate_seed skips an
evaluation whose inputs and code are unchanged (its own key, next to its outputs).
Retries as the pipeline's stages: once, on errors a second try can fix.
"""

from __future__ import annotations

import contextlib
import os

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pgrpo.experiments import compare as cmp
from tasks.stages import ProgressLogger, artifact_key, in_prefect_run, retry_if_transient

_RETRY = {"retries": 1, "retry_delay_seconds": 10, "retry_condition_fn": retry_if_transient}


def _config(params_file: str, algorithms: list[str] | None, seeds: list[int]) -> cmp.CompareConfig:
    return cmp.load_compare(params_file, seeds, algorithms)


@contextlib.contextmanager
def _under(parent_run: str | None):
    """Stage runs attach to the comparison's MLflow run `parent_run` (given: a task on a Dask
    worker, another process, maybe another machine), as under the flow's pipeline_run."""
    if parent_run is None:
        yield
        return
    from pgrpo.tracking.mlflow_tracking import PARENT_ENV

    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = parent_run  # a Dask worker runs one task at a time (one thread)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before


@task(name="train_seed", task_run_name="train-{algorithm}-seed{seed}", **_RETRY)
def train_seed(params_file: str, algorithms: list[str] | None, seed: int, algorithm: str,
               parent_run: str | None = None) -> dict:
    with _under(parent_run):
        return _train_seed(params_file, algorithms, seed, algorithm)


def _train_seed(params_file: str, algorithms: list[str] | None, seed: int, algorithm: str) -> dict:
    cfg = _config(params_file, algorithms, [seed])
    if not in_prefect_run():
        return cmp.train_seed(params_file, cfg, seed, algorithm)
    from pgrpo.core.config import policy_config

    total = policy_config(params_file, None).steps
    progress = ProgressLogger(total, key=f"{artifact_key('compare', algorithm)}-seed{seed}",
                              description=f"{algorithm}, seed {seed}: {total} steps")
    out = cmp.train_seed(params_file, cfg, seed, algorithm, loggers=[progress])
    progress.close()
    return out


@task(name="evaluate_seed", task_run_name="evaluate-seed{seed}", **_RETRY)
def evaluate_seed(params_file: str, algorithms: list[str] | None, seed: int,
                  parent_run: str | None = None) -> dict:
    with _under(parent_run):
        return cmp.evaluate_seed(params_file, _config(params_file, algorithms, [seed]), seed)


@task(name="summarize_comparison")
def summarize(params_file: str, algorithms: list[str] | None, seeds: list[int]) -> dict:
    cfg = _config(params_file, algorithms, seeds)
    summary = cmp.write_summary(cmp.read_seed_metrics(cfg), cfg)
    if in_prefect_run():
        report = (cmp.reports_root(cfg.name) / "report.md").read_text(encoding="utf-8")
        create_markdown_artifact(report, key="pgrpo-comparison",
                                 description="algorithms over seeds: claims, per-group rewards")
        create_table_artifact(
            [{"claim": c["claim"], "estimate": c["mean"], "ci_low": c["ci_low"],
              "ci_high": c["ci_high"], "verdict": c["verdict"]} for c in summary["claims"]],
            key="pgrpo-comparison-claims", description="the paper's claims, checked")
    return summary
