"""Run the mechanism experiment's grid (resumable, in parallel), report it, track it in MLflow.

    python -m pgrpo.experiments.mechanism_run --preset ci                 # ~2 minutes on 2 cores
    python -m pgrpo.experiments.mechanism_run                             # the full grid (configs/mechanism.yaml)
    python -m pgrpo.experiments.mechanism_run --preset ci --set seeds=[0,1] --set tracking=true
    python -m flows.mechanism                                 # the same as a Prefect flow

A finished cell's result file (work_dir/cells/...json, keyed by everything it depends on)
is reused, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from pgrpo.experiments.mechanism import Cell, cached_result, calibrate, cells, run_cell
from pgrpo.experiments.mechanism_config import CONFIG_DIR, PRESETS, MechanismConfig, load_config
from pgrpo.experiments.mechanism_world import pretrain


def one_thread() -> None:
    """A cell's torch on one core: cells run side by side, one per core, and a cell's
    numbers depend on its thread count (float summation order)."""
    import torch

    torch.set_num_threads(1)


def todo_cells(cfg: MechanismConfig) -> tuple[list[Cell], dict[Cell, dict | None]]:
    """The grid's cells not finished yet, and every cell's cached result (None if none)."""
    grid = cells(cfg)
    results = {c: cached_result(cfg, c) for c in grid}
    return [c for c in grid if results[c] is None], results


def run_grid(cfg: MechanismConfig, log=print) -> list[dict]:
    """Pre-train the base policies, then every cell not already finished (in `workers`
    processes); returns every cell's result in grid order. A progress bar counts cells."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    grid = cells(cfg)
    todo, results = todo_cells(cfg)
    log(f"{len(grid)} cells, {len(grid) - len(todo)} finished before, {len(todo)} to run "
        f"in {cfg.workers} processes")
    policy_root = Path(cfg.work_dir) / "policies"
    tilts = sorted({c.tilt for c in todo})
    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), desc="mechanism cells",
               dynamic_ncols=True)
    if cfg.workers == 1:  # in this process (tests, debugging): no interpreter start-up
        policies = {t: pretrain(cfg, t, policy_root) for t in tilts}
        for c in todo:
            results[c] = run_cell(cfg, c, policies[c.tilt])
            bar.update(1)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=one_thread) as pool:
            policies = dict(zip(tilts, pool.map(pretrain, [cfg] * len(tilts), tilts,
                                                [policy_root] * len(tilts))))
            for folder in policies.values():  # once per policy, before cells read it
                calibrate(cfg, folder)
            log(f"base policies ready after {time.perf_counter() - t0:.0f} s")
            futures = {pool.submit(run_cell, cfg, c, policies[c.tilt]): c for c in todo}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    log(f"grid done in {time.perf_counter() - t0:.0f} s")
    return [results[c] for c in grid]


def log_to_mlflow(results: list[dict], cfg: MechanismConfig, params_file: Path,
                  report_dir: Path | None = None) -> str | None:
    """One parent run, one child run per cell (tags: condition, tilt, estimator, optimizer,
    seed; judge curves per group as step metrics, final / AUC as metrics). Returns the parent."""
    import mlflow

    from pgrpo.experiments.mechanism_report import cell_metrics
    from pgrpo.tracking.mlflow_logger import MlflowLogger
    from pgrpo.tracking.mlflow_tracking import (
        TrackingConfig,
        log_artifact_files,
        pipeline_run,
        stage_run,
    )

    track = TrackingConfig(experiment=cfg.experiment)
    with pipeline_run(track, params_file, run_name=f"mechanism-{len(results)}-cells") as parent:
        for r in results:
            c = r["cell"]
            with stage_run("mechanism_cell", track, params={**c, "offset_sd": r["offset_sd"]},
                           algorithm=c["estimator"]):
                mlflow.set_tags({f"mechanism.{k}": v for k, v in c.items()})
                logger = MlflowLogger()
                for i, step in enumerate(r["eval_steps"]):
                    logger.log_metrics({f"judge/{g}": v[i] for g, v in r["judge"].items()}, step)
                m = cell_metrics(r)
                logger.log_metrics({"final": m["final"], "auc": m["auc"], "final_mean": m["final_mean"],
                                    "auc_mean": m["auc_mean"], "seconds": r["seconds"]}, r["eval_steps"][-1])
                logger.close()  # sent before the cell's run ends
        if report_dir is not None and report_dir.exists():
            log_artifact_files([report_dir], run_id=parent)
    return parent


def run_experiment(cfg: MechanismConfig, params_file: Path | None = None, log=print,
                   report_only: bool = False) -> dict:
    """Grid -> summary -> report (-> MLflow when cfg.tracking). Returns the summary.

    report_only: run nothing, report the cells finished so far (an interrupted grid)."""
    from pgrpo.experiments.mechanism_report import summarize, write_report

    t0 = time.perf_counter()
    if report_only:
        results = [r for r in (cached_result(cfg, c) for c in cells(cfg)) if r is not None]
    else:
        results = run_grid(cfg, log)
    summary = summarize(results, cfg)
    summary["wall_seconds"] = time.perf_counter() - t0  # this invocation's (reused cells cost 0)
    calib = {str(t): calibrate(cfg, pretrain(cfg, t, Path(cfg.work_dir) / "policies")) for t in cfg.tilts}
    summary["calibration"] = calib
    extra = "Base policies (sampled on training prompts of an unused seed): " + "; ".join(
        f"tilt {t}: within-prompt judge SD {c['within_prompt_sd']:.3f}, offset SD {c['offset_sd']:.3f}, "
        f"mean words {c['mean_words']:.1f}" for t, c in calib.items())
    cs = summary["cell_seconds"]
    extra += (f"\n\nTime per cell: {cs['mean']:.1f} s wall on average (one core each, {cfg.workers} "
              f"in parallel); all cells {cs['sum'] / 60:.0f} core-minutes"
              + ("." if report_only else f"; this invocation {summary['wall_seconds'] / 60:.0f} min wall."))
    path = write_report(summary, cfg, extra)
    log(f"report: {path}")
    if cfg.tracking:
        if params_file is None:
            params_file = Path(cfg.report_dir) / "config.yaml"
            params_file.write_text(yaml.safe_dump({"mechanism": cfg.model_dump()}))
        log_to_mlflow(results, cfg, params_file, Path(cfg.report_dir))
    return summary


def print_verdicts(summary: dict) -> None:
    for b in summary["blocks"]:
        for c in b["claims"]:
            print(f"{b['optimizer']:>5} {b['condition']:>6} tilt {b['tilt']}: {c['verdict']:>10}  {c['id']}")


def parse_sets(pairs: list[str]) -> dict:
    """--set key=value (value read as YAML) -> overrides."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {p!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", help=f"{sorted(PRESETS)} or a YAML path")
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument("--report_only", action="store_true",
                        help="run no cell: report those finished so far")
    a = parser.parse_args(argv)
    cfg = load_config(a.preset, parse_sets(a.set))
    files = PRESETS.get(a.preset)
    summary = run_experiment(cfg, CONFIG_DIR / files[-1] if files and not a.set else None,
                             report_only=a.report_only)
    print_verdicts(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
