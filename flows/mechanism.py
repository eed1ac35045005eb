"""The Prefect flow `pgrpo-mechanism`: issue 13's mechanism experiment (pgrpo/experiments/mechanism.py).

    python -m flows.mechanism                          # the full grid (configs/mechanism.yaml)
    python -m flows.mechanism --preset ci              # ~2 minutes
    python -m flows.mechanism --preset ci --seeds 0,1 --estimators grpo,pgrpo --tracking
    python -m flows.mechanism --preset power --dask_address tcp://host:8786   # on a Dask cluster

    base policies (SFT per tilt) -> cells (tilt x condition x estimator x seed x optimizer,
        in parallel processes, resumable) -> report (reports/mechanism: report.md, figures,
        summary.json) -> MLflow (one run per cell) when tracking is on

Every parameter is flat and typed, so the Prefect UI renders a form; empty = the preset's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, unmapped
from pydantic import Field

from pgrpo.experiments.mechanism_run import print_verdicts
from tasks import mechanism as tasks

Preset = Annotated[Literal["full", "ci", "power"], Field(description=(
    "full: configs/mechanism.yaml (the whole grid, ~40 min on 2 cores); ci: ~2 minutes; "
    "power: the rerun at 31 seeds (configs/mechanism_power.yaml, ~1.8 h)"))]
Seeds = Annotated[list[int] | None, Field(min_length=2, description=(
    "paired seeds (>= 2 for an interval); empty = the preset's"))]
Tilts = Annotated[list[float] | None, Field(min_length=1, description=(
    "share of a minority user's SFT answers in the majority's style; empty = the preset's"))]
Conditions = Annotated[list[Literal["clean", "offset", "trap"]] | None, Field(min_length=1, description=(
    "training rewards: clean judge, + per-prompt offset, + partial credit trap; empty = all"))]
Estimators = Annotated[list[Literal["grpo", "grpo_batch", "grpo_none", "pgrpo", "pgrpo_random",
                                    "pgrpo_scale"]] | None, Field(min_length=1, description=(
    "advantage estimators; must include the reference (grpo); empty = the preset's"))]
Optimizers = Annotated[list[Literal["adamw", "sgd"]] | None, Field(min_length=1, description=(
    "adamw (the trainer's) and plain SGD (the control); empty = the preset's"))]
Steps = Annotated[int | None, Field(ge=1, description="training steps per cell; empty = the preset's")]
OffsetShare = Annotated[float | None, Field(ge=0, lt=1, description=(
    "between-prompt share of reward variance in the offset condition; empty = the preset's"))]
Workers = Annotated[int | None, Field(ge=1, description="parallel processes; empty = the preset's")]
Tracking = Annotated[bool | None, Field(description="one MLflow run per cell; empty = the preset's")]
DaskAddress = Annotated[str | None, Field(description=(
    "run the cells on Dask: 'local' (a LocalCluster of `workers` processes here) or a "
    "scheduler such as tcp://host:8786 (flows/dask_runner.py); empty = a process pool here"))]


def _cells_on_dask(preset: str, overrides: dict) -> int:
    """The grid's unfinished cells as Prefect tasks on the flow's DaskTaskRunner: the base
    policies first (calibrated here, where run_grid calibrates them), then every cell."""
    from pgrpo.experiments.mechanism import calibrate
    from pgrpo.experiments.mechanism_config import load_config
    from pgrpo.experiments.mechanism_run import todo_cells

    cfg = load_config(preset, overrides)
    todo, _ = todo_cells(cfg)
    tilts = sorted({c.tilt for c in todo})
    policies = dict(zip(tilts, tasks.base_policy.map(unmapped(cfg), tilts).result()))
    for folder in policies.values():
        calibrate(cfg, Path(folder))
    futures = [tasks.cell.submit(cfg, c, policies[c.tilt]) for c in todo]
    for f in futures:
        f.result()  # raises the first failed cell's error; the others' results are cached
    return len(futures)


_cells_on_dask = flow(name="pgrpo-mechanism-cells")(_cells_on_dask)


def mechanism(preset: Preset = "full", seeds: Seeds = None, tilts: Tilts = None,
              conditions: Conditions = None, estimators: Estimators = None,
              optimizers: Optimizers = None, steps: Steps = None, offset_share: OffsetShare = None,
              workers: Workers = None, tracking: Tracking = None,
              dask_address: DaskAddress = None) -> dict[str, Any]:
    """Decide the paper's claims (higher reward, faster, random groups lose the gain) per
    condition and tilt from paired seeds; writes reports/mechanism.

    Args:
        preset: full (configs/mechanism.yaml), ci (~2 minutes) or power (31 seeds, ~1.8 h)
        seeds: paired seeds; empty = the preset's
        tilts: SFT majority-style shares of the base policies; empty = the preset's
        conditions: clean, offset, trap; empty = the preset's
        estimators: advantage estimators, including grpo (the reference); empty = the preset's
        optimizers: adamw and/or sgd; empty = the preset's
        steps: training steps per cell; empty = the preset's
        offset_share: between-prompt share of reward variance (offset); empty = the preset's
        workers: parallel processes; empty = the preset's
        tracking: one MLflow run per cell; empty = the preset's
        dask_address: 'local' or tcp://host:port: the cells on a Dask cluster; empty = here
    """
    from pgrpo.experiments.mechanism_config import load_config

    log = get_run_logger()
    given = {"seeds": seeds, "tilts": tilts, "conditions": conditions, "estimators": estimators,
             "optimizers": optimizers, "steps": steps, "offset_share": offset_share,
             "workers": workers, "tracking": tracking}
    overrides = {k: v for k, v in given.items() if v is not None}
    cfg = load_config(preset, overrides)  # errors before anything runs
    log.info("mechanism grid: %s", {k: getattr(cfg, k) for k in ("tilts", "conditions",
                                                                "estimators", "seeds", "optimizers")})
    if dask_address:
        from flows.dask_runner import dask_task_runner

        runner = dask_task_runner(dask_address, cfg.workers)
        _cells_on_dask.with_options(task_runner=runner)(preset, overrides)
    else:
        tasks.run_grid(preset, overrides)
    return tasks.report(preset, overrides)  # every cell is cached by now


mechanism = flow(name="pgrpo-mechanism", log_prints=True)(mechanism)


def _list(text: str | None, cast=str):
    return [cast(x) for x in text.split(",")] if text else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the pgrpo-mechanism flow once, here")
    parser.add_argument("--preset", default="full", choices=["full", "ci", "power"])
    for name in ("seeds", "tilts", "conditions", "estimators", "optimizers"):
        parser.add_argument(f"--{name}", default=None, help="comma-separated")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--offset_share", type=float, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tracking", action="store_true", default=None)
    parser.add_argument("--dask_address", default=None,
                        help="'local' or tcp://host:8786: the cells on a Dask cluster")
    a = parser.parse_args(argv)
    summary = mechanism(preset=a.preset, seeds=_list(a.seeds, int), tilts=_list(a.tilts, float),
                        conditions=_list(a.conditions), estimators=_list(a.estimators),
                        optimizers=_list(a.optimizers), steps=a.steps, offset_share=a.offset_share,
                        workers=a.workers, tracking=a.tracking, dask_address=a.dask_address)
    print_verdicts(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
