"""A comparison's finished seeds recorded in MLflow from their files, where the store lacks them.

    python -m pgrpo.experiments.compare_record --params configs/claim.yaml          # compare.seeds
    python -m pgrpo.experiments.compare_record --params configs/claim.yaml --seeds 0,1

A long comparison can outlive the machine it started on: the pre-registered one keeps its
finished seeds in git (benchmarks/llm_compare/claim_archive/) and restores them on the next
machine as files, without the MLflow runs that logged them on the lost one. This records each
evaluated seed again from what it left on disk, as the comparison logs it
(pgrpo.experiments.compare): one train_policy run per algorithm (its params, every step of its
metrics.jsonl) and one evaluate run (the metrics, report and figures), tagged like the originals
(pgrpo.compare, pgrpo.seed, pgrpo.stage, pgrpo.algorithm) and with pgrpo.recorded_from=files.
A (seed, stage, algorithm) the store already holds is left as it is, so this can run after
every restore and records only what is missing. A seed not evaluated yet is skipped: its
runs are logged by the comparison itself when it finishes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgrpo.core.config import load_section

RECORDED_FROM = {"pgrpo.recorded_from": "files"}


def record_seeds(params_file: str | Path, seeds: list[int] | None = None) -> list[str]:
    """Record in MLflow every evaluated seed's runs the store lacks; returns what was recorded
    ('seed<s>/<algorithm>', 'seed<s>/evaluate')."""
    from pgrpo.experiments.compare import EVALUATED, load_compare, run_tags, seed_dirs
    from pgrpo.orchestration.pipeline import record_evaluation, stage_configs
    from pgrpo.tracking.mlflow_tracking import (
        TrackingConfig,
        find_runs,
        log_metrics_file,
        pipeline_run,
        stage_run,
        tracking_enabled,
    )

    cfg = load_compare(params_file, seeds)
    track = load_section(params_file, "tracking", TrackingConfig)
    if not tracking_enabled(track):
        raise ValueError(f"{params_file}: tracking is off (tracking.enabled), nothing to record to")
    evaluated = [s for s in cfg.seeds if (seed_dirs(s, cfg.name)[1] / EVALUATED).is_file()]
    missing = []  # (seed, algorithm or None for the evaluation)
    for seed in evaluated:
        tags = run_tags(cfg, seed)
        missing += [(seed, alg) for alg in cfg.algorithms if not find_runs(
            track, {**tags, "pgrpo.stage": "train_policy", "pgrpo.algorithm": alg}, 1)]
        if not find_runs(track, {**tags, "pgrpo.stage": "evaluate"}, 1):
            missing.append((seed, None))
    done: list[str] = []
    if not missing:
        return done
    with pipeline_run(track, params_file, f"record {cfg.name or 'compare'} from files"):
        for seed, alg in missing:
            models, reports = seed_dirs(seed, cfg.name)
            seed_file = models / "params.yaml"  # what the seed's stages read (write_seed_params)
            tags = {**run_tags(cfg, seed), **RECORDED_FROM}
            stage = "train_policy" if alg else "evaluate"
            _, logged = stage_configs(stage, seed_file, alg)
            with stage_run(stage, track, params=logged, algorithm=alg, params_file=seed_file,
                           tags=tags) as run:
                if alg:
                    log_metrics_file(models / alg / "metrics.jsonl", run.info.run_id)
                else:  # as the evaluate stage records itself; the seed file has log_models off
                    record_evaluation(json.loads((reports / "metrics.json").read_text()),
                                       load_section(seed_file, "tracking", TrackingConfig), reports)
            done.append(f"seed{seed}/{alg or 'evaluate'}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="the comparison's params file")
    ap.add_argument("--seeds", default=None, help="comma-separated; default compare.seeds")
    args = ap.parse_args(argv)
    try:
        done = record_seeds(args.params, [int(s) for s in args.seeds.split(",")] if args.seeds else None)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(f"{d}: recorded" for d in done) or "every evaluated seed is in the store already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
