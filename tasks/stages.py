"""One thin Prefect task per pipeline stage; each calls pgrpo.orchestration.pipeline.run_stage.

    from tasks.stages import prepare, assign_groups, train_reward, train_policy, evaluate
    metrics = prepare.fn("params.yaml")                 # the bare function, no Prefect run
    key = stage_cache_key("train_policy", "params.yaml", "pgrpo")

What a task adds to run_stage (which does the work and the MLflow child run):
- a cache key: sha256 of the stage's params sections (+ algorithm), of the content
  of its input files (paths and hashes only, never DataFrames) and of the code it runs. Unchanged params and
  inputs reuse the cached result, but only while the outputs on disk are the ones that
  run left (cache_usable / record_outputs; the flow refreshes the cache otherwise): a
  deleted model, or one rewritten by `dvc repro` with other params, is rebuilt.
- retries where they can help: the training stages and evaluate retry once on errors
  that can be transient (out of memory, a locked store, a killed worker); a bad config
  or missing input (ValueError, FileNotFoundError, ...) fails at once. train_policy
  resumes from its last checkpoint on retry (PolicyConfig.resume).
- a markdown / table artifact of what the stage produced (rows and group sizes,
  reward-model accuracy per group, per-group training and evaluation rewards) and a
  progress artifact for train_policy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pgrpo.stages import registry

from pgrpo.core import paths
from pgrpo.core.config import policy_config
from pgrpo.stages.evaluation.report import markdown_table
from pgrpo.orchestration.pipeline import STAGES, run_stage  # noqa: F401 - STAGES is re-exported by tasks
from pgrpo.orchestration.stage_key import result_state
from pgrpo.orchestration.stage_key import stage_cache_key, stage_inputs, stage_params  # noqa: F401 - re-exported

NOT_TRANSIENT = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError,
                 NotImplementedError, ImportError)


# --------------------------------------------------------------------------- cache key

def stage_outputs(stage: str, params_file: str | Path, algorithm: str | None = None) -> list[Path]:
    """What a stage writes, checkpoints aside (pgrpo.stages.registry)."""
    return registry.stage(stage).paths("outputs", algorithm)


def outputs_missing(stage: str, params_file: str | Path, algorithm: str | None = None) -> bool:
    return not all(p.exists() for p in stage_outputs(stage, params_file, algorithm))


def _outputs_record() -> Path:
    """Next to Prefect's cached results: what each cached stage left on disk."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
    return Path(PREFECT_LOCAL_STORAGE_PATH.value()) / "pgrpo-stage-outputs.json"


def _record_id(stage: str, algorithm: str | None) -> str:
    return f"{Path.cwd().resolve()}::{stage}" + (f"@{algorithm}" if algorithm else "")


def _outputs_state(stage: str, params_file: str | Path, algorithm: str | None) -> dict:
    return result_state(stage, params_file, stage_outputs(stage, params_file, algorithm), algorithm)


def cache_usable(stage: str, params_file: str | Path, algorithm: str | None = None) -> bool:
    """A cached result may stand in for running the stage only if the outputs on disk are
    exactly what the run with this cache key left there: not deleted, and not rewritten
    since by another run (other params, `dvc repro`, a flow run with overrides)."""
    if outputs_missing(stage, params_file, algorithm):
        return False
    record = _outputs_record()
    known = json.loads(record.read_text()) if record.is_file() else {}
    return known.get(_record_id(stage, algorithm)) == _outputs_state(stage, params_file, algorithm)


def record_outputs(stage: str, params_file: str | Path, algorithm: str | None = None) -> None:
    """After the stage ran (or came from the cache): remember its key and output hashes."""
    record = _outputs_record()
    known = json.loads(record.read_text()) if record.is_file() else {}
    known[_record_id(stage, algorithm)] = _outputs_state(stage, params_file, algorithm)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, record)


def _cache_key_fn(stage: str):
    def key(context, parameters: dict[str, Any]) -> str:
        return stage_cache_key(stage, parameters.get("params_file", "params.yaml"),
                               parameters.get("algorithm"))
    return key


def retry_if_transient(task, task_run, state) -> bool:
    """Retry unless the error is one a second try cannot fix (bad config, missing input)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - an unreadable result: be safe, do not retry
            return False
    return isinstance(exc, Exception) and not isinstance(exc, NOT_TRANSIENT)


# --------------------------------------------------------------------------- progress

class ProgressLogger:
    """A MetricLogger (pgrpo.core.metric_log) that moves a Prefect progress artifact with the step.

    Updates at most every `every_s` seconds (and on the last step): each is an API call.
    """

    def __init__(self, total_steps: int, key: str, description: str = "", every_s: float = 2.0):
        self.total, self.every_s, self.last = max(int(total_steps), 1), every_s, 0.0
        self.description = description
        self.artifact_id = create_progress_artifact(0.0, key=key, description=description)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = time.monotonic()
        if step >= self.total or now - self.last >= self.every_s:
            self.last = now
            update_progress_artifact(self.artifact_id, min(100.0, 100.0 * step / self.total))

    def close(self) -> None:
        update_progress_artifact(self.artifact_id, 100.0)


# --------------------------------------------------------------------------- summaries

def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else ("–" if v is None else str(v))
    return "\n".join(markdown_table(header, [[cell(v) for v in r] for r in rows]))


def summarize(stage: str, metrics: dict, algorithm: str | None = None) -> str:
    """Markdown of what a stage produced, from its metrics (and its metrics files)."""
    m = metrics or {}
    if stage == "prepare":
        rows = [[t, *(v.get(k) for k in ("total", "train", "eval"))] if isinstance(v, dict)
                else [t, v, None, None] for t, v in (m.get("rows") or {}).items()]
        users = [[g, v.get("total"), v.get("train"), v.get("eval")]
                 for g, v in (m.get("users_per_group") or {}).items()]
        return (f"## prepare ({m.get('source')})\n\n" + _md_table(["table", "rows", "train", "eval"], rows)
                + "\n\n### users per group\n\n" + _md_table(["group", "users", "train", "eval"], users))
    if stage == "assign_groups":
        sizes = [[g, n] for g, n in (m.get("sizes") or {}).items()]
        return (f"## assign_groups ({m.get('method')}): {m.get('n_groups')} groups, "
                f"ARI {m.get('ari')}, purity {m.get('purity')}\n\n" + _md_table(["group", "users"], sizes))
    if stage == "train_reward":
        n = m.get("eval_pairs_per_group") or {}
        acc = [[g, a, n.get(g)] for g, a in (m.get("eval_accuracy_per_group") or {}).items()]
        return (f"## train_reward: held-out accuracy {m.get('eval_accuracy')}\n\n"
                + _md_table(["group", "accuracy", "eval pairs"], acc))
    if stage == "train_policy":
        from pgrpo.core.metric_log import read_metrics
        rows = read_metrics(paths.policy_dir(algorithm) / "metrics.jsonl")
        groups = sorted(k.removeprefix("train/reward/") for k in (rows[-1] if rows else {})
                        if k.startswith("train/reward/"))
        table = [[g, rows[0].get(f"train/reward/{g}"), rows[-1].get(f"train/reward/{g}")]
                 for g in groups]
        return (f"## train_policy {algorithm}: {len(rows)} steps, final train/reward "
                f"{rows[-1].get('train/reward') if rows else None}\n\n"
                + _md_table(["group", "reward at step 1", "reward at last step"], table))
    report = paths.REPORTS / "report.md"  # evaluate renders its own (pgrpo.stages.evaluation.report)
    return report.read_text(encoding="utf-8") if report.is_file() else json.dumps(m, indent=2)


def reward_table(metrics: dict) -> list[dict]:
    """evaluate: one row per (policy, group) with reward, CI and win rate."""
    policies = {"base": metrics.get("base") or {}, **(metrics.get("algorithms") or {})}
    return [{"policy": p, "group": g, **{k: r.get(k) for k in
                                         ("reward", "ci_low", "ci_high", "win_rate", "n")}}
            for p, s in policies.items() for g, r in (s.get("groups") or {}).items()]


def in_prefect_run() -> bool:
    """Artifacts need a run: `task.fn()` outside one (tests, scripts) creates none."""
    from prefect.context import FlowRunContext, TaskRunContext
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def artifact_key(stage: str, algorithm: str | None = None) -> str:
    """pgrpo-<stage>[-<algorithm>]: Prefect keys allow lowercase letters, digits and dashes."""
    key = "-".join(["pgrpo", stage, *([algorithm] if algorithm else [])]).lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in key)


def _artifacts(stage: str, metrics: dict, algorithm: str | None = None) -> None:
    if not in_prefect_run():
        return
    create_markdown_artifact(summarize(stage, metrics, algorithm), key=artifact_key(stage, algorithm),
                             description=f"{stage}: {registry.stage(stage).summary}")
    if stage == "evaluate":
        create_table_artifact(reward_table(metrics), key="pgrpo-group-rewards",
                              description="per-group reward of every policy (evaluate)")
        check = (metrics.get("reward_check") or {}).get("groups") or {}
        if check:
            create_table_artifact([{"group": g, **v} for g, v in check.items()],
                                  key="pgrpo-reward-check",
                                  description="training reward vs the judge on base samples: "
                                  "within-prompt rank correlation (< 0.3: not learnable), "
                                  "between-prompt share, advantage correlation per estimator")


# --------------------------------------------------------------------------- tasks

def _run(stage: str, params_file: str, algorithm: str | None = None, **kw) -> dict:
    metrics = run_stage(stage, params_file=params_file, algorithm=algorithm, **kw)
    _artifacts(stage, metrics, algorithm)
    return metrics


def _opts(stage: str, retries: int = 0) -> dict:
    return {"name": stage, "cache_key_fn": _cache_key_fn(stage), "persist_result": True,
            "retries": retries, "retry_delay_seconds": 10,
            "retry_condition_fn": retry_if_transient if retries else None}


@task(**_opts("prepare"))
def prepare(params_file: str = "params.yaml") -> dict:
    return _run("prepare", params_file)


@task(**_opts("assign_groups"))
def assign_groups(params_file: str = "params.yaml") -> dict:
    return _run("assign_groups", params_file)


@task(**_opts("train_reward", retries=1))
def train_reward(params_file: str = "params.yaml") -> dict:
    return _run("train_reward", params_file)


@task(**_opts("train_policy", retries=1), task_run_name="train_policy-{algorithm}")
def train_policy(params_file: str = "params.yaml", algorithm: str = "pgrpo") -> dict:
    if not in_prefect_run():
        return _run("train_policy", params_file, algorithm)
    total = policy_config(params_file, algorithm).steps
    progress = ProgressLogger(total, key=f"{artifact_key('train_policy', algorithm)}-progress",
                              description=f"train_policy {algorithm}: {total} steps")
    metrics = _run("train_policy", params_file, algorithm, loggers=[progress])
    progress.close()
    return metrics


@task(**_opts("evaluate", retries=1))
def evaluate(params_file: str = "params.yaml") -> dict:
    return _run("evaluate", params_file)
