"""Prefect tasks of the mechanism experiment (flows/mechanism.py); each calls pgrpo.experiments.mechanism_run.

    from tasks.mechanism import run_grid, report
    results = run_grid.fn("ci", {"seeds": [0, 1]})            # the bare function

No Prefect cache: the grid resumes by itself (a finished cell's result file is reused).
On a Dask cluster (flows/mechanism.py, dask_address) the flow maps `base_policy` and `cell`
over the grid instead of `run_grid`'s process pool.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pgrpo.experiments import mechanism_run as run
from pgrpo.experiments.mechanism import Cell, run_cell
from pgrpo.experiments.mechanism_config import MechanismConfig, load_config
from pgrpo.experiments.mechanism_world import pretrain
from tasks.stages import in_prefect_run


@task(name="mechanism_grid")
def run_grid(preset: str, overrides: dict) -> list[dict]:
    return run.run_grid(load_config(preset, overrides))


# One task per base policy and per cell: the grid on a Dask cluster (flows/dask_runner.py),
# each call as a process-pool worker makes it (one torch thread).

@task(name="mechanism_base_policy", task_run_name="base-policy-tilt{tilt}")
def base_policy(cfg: MechanismConfig, tilt: float) -> str:
    run.one_thread()
    return str(pretrain(cfg, tilt, Path(cfg.work_dir) / "policies"))


@task(name="mechanism_cell", task_run_name="{cell.name}")
def cell(cfg: MechanismConfig, cell: Cell, policy_dir: str) -> dict:
    run.one_thread()
    return run_cell(cfg, cell, policy_dir)


@task(name="mechanism_report")
def report(preset: str, overrides: dict) -> dict:
    """Summary, report.md and figures (the grid's cells are all cached by now), MLflow if on."""
    summary = run.run_experiment(load_config(preset, overrides))
    if in_prefect_run():
        cfg = load_config(preset, overrides)
        text = (Path(cfg.report_dir) / "report.md").read_text(encoding="utf-8")
        create_markdown_artifact(text, key="pgrpo-mechanism", description="verdicts and tables")
        create_table_artifact(
            [{"optimizer": b["optimizer"], "condition": b["condition"], "tilt": b["tilt"],
              "claim": c["id"], "difference": c["mean"], "lo": c["lo"], "hi": c["hi"],
              "verdict": c["verdict"]} for b in summary["blocks"] for c in b["claims"]],
            key="pgrpo-mechanism-verdicts", description="the paper's claims, decided per block")
    return summary
