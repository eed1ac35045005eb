"""Run one pipeline stage from a params file, tracked in MLflow: the `cmd` of every DVC stage.

    python -m pgrpo.orchestration.pipeline prepare                       # params.yaml, section prepare
    python -m pgrpo.orchestration.pipeline assign_groups
    python -m pgrpo.orchestration.pipeline train_reward                  # section reward
    python -m pgrpo.orchestration.pipeline train_policy --algorithm pgrpo   # policy + algorithms.pgrpo
    python -m pgrpo.orchestration.pipeline evaluate --params configs/smoke.yaml
    python -m pgrpo.orchestration.pipeline train_policy --algorithm grpo --set policy.lr=1e-5   # not for DVC
    dvc repro                                              # all of them, in order (dvc.yaml)

    from pgrpo.orchestration.pipeline import run_stage                   # Prefect tasks call the same
    metrics = run_stage("train_reward", "params.yaml")

run_stage only loads the stage's config section, calls the stage function with the
default paths of pgrpo.core.paths (relative to the working directory: the repo root) and
records it as a child run of the pipeline's MLflow run (pgrpo.tracking.mlflow_tracking: section
`tracking`; off, or mlflow missing, and nothing is recorded). The stage logic lives in
the stage modules; nothing here repeats it. Returns the stage's metrics dict
(train_policy: where the policy went, its last step and groups).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pgrpo.stages import registry

from pgrpo.core import paths
from pgrpo.core.config import PolicyConfig, load_section, params_with_sets, policy_config, read_params
from pgrpo.orchestration.run_lock import RunLocked, lock_name, run_lock

PIPELINE_LOCK = "pipeline"  # the lock of the pipeline's own outputs (a flow holds it throughout)

STAGES = registry.NAMES  # what each reads and writes: pgrpo.stages.registry


def _check(stage: str, params_file: Path, algorithm: str | None) -> None:
    if registry.stage(stage).per_algorithm and not algorithm:
        raise ValueError("train_policy needs an algorithm (--algorithm NAME, a key of the "
                         f"`algorithms` section of {params_file})")
    if not registry.stage(stage).per_algorithm and algorithm:
        raise ValueError(f"--algorithm applies to train_policy only, not to {stage!r} "
                         "(evaluate evaluates every algorithm listed in the params file)")
    if not params_file.is_file():
        raise FileNotFoundError(f"params file {params_file} does not exist")


def run_stage(stage: str, params_file: str | Path = "params.yaml",
              algorithm: str | None = None, loggers: list | None = None,
              policy_root: str | Path | None = None,
              reports_dir: str | Path | None = None,
              tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `stage` with its section of `params_file` (train_policy: for `algorithm`).

    `loggers`: extra pgrpo.core.metric_log.MetricLogger objects fed every training step
    (train_policy only), e.g. a Prefect progress artifact.
    `policy_root` (train_policy, evaluate): where policies live, one folder per
    algorithm (default models/policy); `reports_dir` (evaluate): default reports/.
    pgrpo.experiments.compare uses them to keep its seeds apart from the pipeline's outputs,
    and `tags` (extra MLflow tags of the stage's run) to mark its seed.
    """
    from pgrpo.tracking.mlflow_tracking import TrackingConfig, stage_run

    params_file = Path(params_file)
    _check(stage, params_file, algorithm)
    check_params(params_file)  # every section, not only this stage's: fail before any work
    track = load_section(params_file, "tracking", TrackingConfig)
    if loggers and stage != "train_policy":
        raise ValueError(f"loggers: only train_policy logs per step, not {stage!r}")
    where = {"policy_root": Path(policy_root or paths.MODELS / "policy"),
             "reports_dir": Path(reports_dir or paths.REPORTS)}
    if (stage not in ("train_policy", "evaluate") and policy_root) or \
            (stage != "evaluate" and reports_dir):
        raise ValueError(f"policy_root / reports_dir: not folders {stage!r} writes to")
    cfg, logged = stage_configs(stage, params_file, algorithm)
    runner = functools.partial(RUNNERS[stage], loggers=loggers) if loggers else RUNNERS[stage]
    command = f"stage {stage}{'@' + algorithm if algorithm else ''} ({' '.join(sys.argv)})"
    with run_lock(stage_lock(stage, algorithm, **where), command, lock_wait()), \
            stage_run(stage, track, params=logged, algorithm=algorithm,
                      params_file=params_file, tags=tags) as run:
        return runner(cfg, algorithm, track if run else None, **where)


def stage_lock(stage: str, algorithm: str | None, policy_root: Path, reports_dir: Path) -> str:
    """The lock a stage takes (pgrpo.orchestration.run_lock): the pipeline's, or its own output folder's."""
    if policy_root == paths.MODELS / "policy" and reports_dir == paths.REPORTS:
        return PIPELINE_LOCK
    return lock_name(policy_root / algorithm if stage == "train_policy" else reports_dir)


def lock_wait() -> float:
    """Seconds to wait for a held lock ($PGRPO_LOCK_WAIT, default 0: stop at once and say who)."""
    raw = os.environ.get("PGRPO_LOCK_WAIT", "0")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"PGRPO_LOCK_WAIT must be a number of seconds, got {raw!r}") from None


# Top-level sections a pipeline params file may hold (`compare` is pgrpo.experiments.compare's).
SECTIONS = ("prepare", "assign_groups", "reward", "policy", "algorithms", "evaluate", "tracking",
            "compare")


def check_params(params_file: str | Path) -> list[str]:
    """Validate every stage's config (every algorithm's too) before any stage runs, so a typo
    in `evaluate` fails `prepare` and not the evaluation after hours of training. Raises one
    ValueError that lists every problem found; returns the algorithms."""
    from pgrpo.tracking.mlflow_tracking import TrackingConfig

    params_file = Path(params_file)
    params = read_params(params_file)
    problems = [f"unknown section {s!r} (sections: {', '.join(SECTIONS)})"
                for s in params if s not in SECTIONS]
    algorithms = list(params.get("algorithms") or {})
    if not algorithms:
        problems.append("section `algorithms` is empty: nothing to train")
    for stage in STAGES:
        for alg in (algorithms if stage == "train_policy" else [None]):
            try:
                stage_configs(stage, params_file, alg)
            except ValueError as e:
                problems.append(str(e).removeprefix(f"{params_file}, "))
    try:
        load_section(params_file, "tracking", TrackingConfig)
    except ValueError as e:
        problems.append(str(e).removeprefix(f"{params_file}, "))
    problems += _prompt_table_problems(params_file, algorithms)
    problems = list(dict.fromkeys(problems))  # each section's error once, not once per stage
    if problems:
        raise ValueError(f"{params_file}: {len(problems)} problem(s), nothing was run:\n- "
                         + "\n- ".join(problems))
    return algorithms


def _prompt_table_problems(params_file: Path, algorithms: list[str]) -> list[str]:
    """Each algorithm's prompt table has the columns its reward reads (once it exists)."""
    from pgrpo.core.prompts import prompt_table_problems

    out = []
    for alg in algorithms:
        try:
            cfg = policy_config(params_file, alg)
        except ValueError:
            continue  # already listed
        reward = cfg.reward if not Path(cfg.reward).is_dir() else "reward model"
        out += prompt_table_problems(cfg.prompts, reward, cfg.groups)
    return [f"policy.prompts: {p}" for p in dict.fromkeys(out)]


def stage_configs(stage: str, params_file: Path, algorithm: str | None) -> tuple[Any, dict]:
    """The stage's validated config(s) and what of them MLflow logs as params."""
    if stage == "prepare":
        from pgrpo.stages.data.prepare import PrepareConfig
        cfg = load_section(params_file, "prepare", PrepareConfig)
    elif stage == "assign_groups":
        from pgrpo.stages.groups.assign_groups import AssignConfig
        cfg = load_section(params_file, "assign_groups", AssignConfig)
    elif stage == "train_reward":
        from pgrpo.stages.data.prepare import PrepareConfig
        from pgrpo.stages.reward.train_reward import RewardConfig
        # policy pairs sample the base policy (policy.model) and label with prepare's noise
        cfg = (load_section(params_file, "reward", RewardConfig),
               load_section(params_file, "policy", PolicyConfig),
               load_section(params_file, "prepare", PrepareConfig))
        return cfg, cfg[0].model_dump()
    elif stage == "train_policy":
        cfg = policy_config(params_file, algorithm)
    else:
        from pgrpo.stages.evaluation.eval_config import EvalConfig
        algorithms = list(read_params(params_file).get("algorithms") or {})
        cfg = (load_section(params_file, "evaluate", EvalConfig),
               load_section(params_file, "policy", PolicyConfig), algorithms)
        return cfg, {"evaluate": cfg[0].model_dump(), "policy": cfg[1].model_dump(),
                     "algorithms": algorithms}
    return cfg, cfg.model_dump()


# --------------------------------------------------------------------------- stages
# `track` is the TrackingConfig when an MLflow run is active, else None.

def _prepare(cfg, algorithm, track, **where) -> dict:
    from pgrpo.stages.data.prepare import prepare

    return _logged(prepare(cfg, paths.PROCESSED), "prepare", track)


def _assign_groups(cfg, algorithm, track, **where) -> dict:
    from pgrpo.stages.groups.assign_groups import assign_groups

    return _logged(assign_groups(cfg, paths.PROCESSED / "users.parquet",
                                 paths.PROCESSED / "pairs.parquet", paths.PROCESSED),
                   "groups", track)


def _train_reward(cfgs, algorithm, track, **where) -> dict:
    from pgrpo.stages.reward.train_reward import train_reward

    cfg, policy, prepare = cfgs
    extra, stats = None, None
    if cfg.policy_pairs:  # pairs between the base policy's own samples, judged by the users
        from pgrpo.stages.reward.policy_pairs import policy_pairs
        extra, stats = policy_pairs(
            policy.model, paths.PROCESSED, cfg.policy_pairs, cfg.policy_samples_per_prompt,
            cfg.policy_pairs_per_prompt, policy.max_new_tokens, policy.temperature,
            prepare.bt_temperature, policy.system_prompt, cfg.seed)
    out = paths.MODELS / "reward"
    metrics = _logged(train_reward(cfg, paths.PROCESSED / "pairs.parquet",
                                   paths.PROCESSED / "groups.parquet", out, extra, stats),
                      "rm", track)
    if track and track.log_models:
        from pgrpo.tracking.mlflow_models import log_reward_model
        from pgrpo.tracking.server import best_effort
        best_effort("the reward model", lambda: log_reward_model(out, register=track.register_models))
    return metrics


def _train_policy(cfg: PolicyConfig, algorithm: str, track, policy_root: Path,
                  reports_dir: Path, loggers: list | None = None) -> dict:
    from pgrpo.orchestration.policy_training import train

    out = policy_root / algorithm
    extra = list(loggers or [])
    if track:
        from pgrpo.tracking.mlflow_logger import MlflowLogger, parent_curves
        from pgrpo.tracking.mlflow_tracking import parent_run_id

        extra.append(MlflowLogger())
        parent = parent_run_id()
        if parent:  # the per-group curves where the chart view opens (parent_curves); a copy,
            # so at the end it waits less for a server that is down than the stage's own record
            extra.append(MlflowLogger(parent, flush_timeout=30, rename=parent_curves(algorithm)))
    # here or on cfg.num_processes processes; a checkpoint is resumed only under the code
    # that wrote it (and its config and inputs)
    result = train(cfg, out, extra, fingerprint={"code": _code_hashes("train_policy")})
    if track:
        from pgrpo.core.metric_log import read_metrics
        from pgrpo.stages.evaluation.plots import plot_group_rewards
        from pgrpo.tracking.mlflow_tracking import log_figure
        from pgrpo.tracking.server import best_effort
        # A temp folder: the figure is for the MLflow run only, not a DVC output.
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_group_rewards({algorithm: read_metrics(out / "metrics.jsonl")},
                                     result["group_names"], Path(tmp) / "group_rewards.png")
            best_effort("the reward curves", lambda: log_figure(png))
        if track.log_models:
            from pgrpo.tracking.mlflow_models import log_policy
            best_effort(f"the policy {algorithm}", lambda: log_policy(
                Path(result["model_dir"]), algorithm, register=track.register_models))
    return result


def _evaluate(cfgs, algorithm, track, policy_root: Path, reports_dir: Path) -> dict:
    from pgrpo.stages.evaluation.evaluate import evaluate

    eval_cfg, policy, algorithms = cfgs
    # the base policy's evaluation is reused only under the code that computed it
    results = evaluate(eval_cfg, policy, algorithms, paths.PROCESSED, paths.MODELS / "reward",
                       policy_root, reports_dir, fingerprint={"code": _code_hashes("evaluate")})
    if track:
        from pgrpo.tracking.server import best_effort
        best_effort("the evaluation", lambda: record_evaluation(results, track, reports_dir))
    return results


def record_evaluation(results: dict, track, reports_dir: Path) -> None:
    """Log an evaluation (its metrics.json dict, figures, report) to the active MLflow run;
    also what pgrpo.experiments.compare_record uses to record a seed again from its files."""
    from pgrpo.tracking.mlflow_tracking import log_artifact_files, log_figure, log_metrics_flat

    log_metrics_flat(results, prefix="eval")
    for png in sorted((reports_dir / "figures").glob("*.png")):
        log_figure(png)
    log_artifact_files([reports_dir / "report.md", reports_dir / "metrics.json"])
    # Champion = best policy of this pipeline run; only registered versions can be aliased.
    if track.log_models and track.register_models:
        from pgrpo.tracking.mlflow_models import promote_best_policy
        # Picked on the validation prompts (evaluate.val_prompts_per_group), which none of
        # the report's numbers use; the test numbers would make the champion's look better.
        by = results["champion_by"]
        promote_best_policy({a: r[by] for a, r in results["algorithms"].items()}, f"eval/{by}")


def _code_hashes(stage: str) -> dict[str, str]:
    """Content hashes of the code `stage` runs (pgrpo.orchestration.stage_code). Bookkeeping, not stage
    code: it decides whether a checkpoint may be resumed, never what a stage outputs."""
    from pgrpo.orchestration.stage_key import code_hashes

    return code_hashes(stage)


def _logged(metrics: dict, prefix: str, track) -> dict:
    if track:
        from pgrpo.tracking.mlflow_tracking import log_metrics_flat
        from pgrpo.tracking.server import best_effort
        best_effort(f"the {prefix} metrics", lambda: log_metrics_flat(metrics, prefix=prefix))
    return metrics


RUNNERS = {"prepare": _prepare, "assign_groups": _assign_groups, "train_reward": _train_reward,
           "train_policy": _train_policy, "evaluate": _evaluate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one pipeline stage (the cmd of dvc.yaml)")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--algorithm", default=None,
                        help="train_policy: a key of the params file's `algorithms` section")
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one param, e.g. --set policy.lr=1e-5 (repeatable; the "
                        "params file is not changed, so DVC does not record the result)")
    args = parser.parse_args(argv)
    label = f"{args.params} with --set {' '.join(args.sets)}" if args.sets else args.params
    try:
        with params_with_sets(args.params, args.sets) as params_file:
            try:
                result = run_stage(args.stage, params_file, args.algorithm)
            except (ValueError, FileNotFoundError, ConnectionError) as e:
                # name the user's file, not the temporary copy the overrides went into
                raise type(e)(str(e).replace(str(params_file), label)) from None
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RunLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    summary = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    print(json.dumps({"stage": args.stage, "algorithm": args.algorithm, **summary}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
