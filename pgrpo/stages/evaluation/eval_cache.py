"""Each policy's evaluation, computed once and reused while nothing it depends on changes.

Measuring a policy (its samples, judge and learned rewards, KL to the base, neutral-text
likelihood, validation reward) is most of the evaluate stage. Two kinds of rerun repeat it
for nothing, and both are routine:
- the base policy: every evaluation samples and scores it on the same prompts with the same
  seeds; in a comparison once per policy seed (pgrpo.experiments.compare), the same each time;
- a stopped evaluation (a kill, a lost machine): the policies measured before the stop.
So each measurement is stored under a key of everything it depends on:

- the base model's files, the prompt, group and judge tables, the reward model's files;
- the `evaluate` settings that change a sample or a score (not the interval and verdict
  settings, which only read them), the policy section's system prompt and length cap, the
  neutral text;
- the code that computes them: the caller's `fingerprint` (the pipeline passes the hashes
  of the code the evaluate stage runs, as it does for a checkpoint's). Without one nothing
  is cached: a result the current code did not produce is never served;
- for a trained policy, also its model folder's files (`policy_key`).

A record is a JSON file named by its key under $PGRPO_CACHE/policy_eval (written whole,
then renamed, so a kill mid-write leaves no record): a changed input is a new key, never a
stale hit.

    key = base_key(cfg, policy, processed_dir, reward_dir, {"code": code_hashes("evaluate")})
    record = load(key) or save(key, compute())                       # the base
    record = load(policy_key(key, model_dir)) or save(..., compute())  # a trained policy
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from pgrpo.core.hashing import path_sha256
from pgrpo.core.models import cache_dir, resolve_model

# EvalConfig fields that only read the samples (intervals, verdicts, curves) or say where
# the work runs: a base record serves every value of them.
NOT_IN_KEY = {"n_boot", "ci_level", "convergence_fraction", "smooth_window", "kl_limit", "device"}


def base_key(cfg, policy, processed_dir: Path, reward_dir: Path,
             fingerprint: dict | None) -> str | None:
    """The key of the base policy's evaluation record (None without a code fingerprint)."""
    if not fingerprint:
        return None
    from pgrpo.stages.evaluation.policy_measures import NEUTRAL_TEXT

    record = {
        "model": path_sha256(resolve_model(policy.model)),
        "tables": {n: path_sha256(Path(processed_dir) / n)
                   for n in ("prompts.parquet", "groups.parquet", "judge.parquet")},
        "reward_model": path_sha256(reward_dir),
        "evaluate": {k: v for k, v in cfg.model_dump().items() if k not in NOT_IN_KEY},
        "policy": {"system_prompt": policy.system_prompt, "max_new_tokens": policy.max_new_tokens},
        "neutral_text": path_sha256(cfg.neutral_text or NEUTRAL_TEXT),
        **fingerprint,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def policy_key(base: str | None, model_dir: Path) -> str | None:
    """The key of a trained policy's evaluation record: the base's key (every input and
    setting the measurement shares with the base's, the base model among them, since KL is
    measured against it) and the policy's own files. None where the base's key is None."""
    if base is None:
        return None
    record = {"base": base, "policy": path_sha256(model_dir)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / "policy_eval" / f"{key}.json"


def load(key: str | None) -> dict | None:
    if key is None or not _path(key).is_file():
        return None
    return json.loads(_path(key).read_text(encoding="utf-8"))


def save(key: str | None, record: dict) -> dict:
    if key is not None:
        path = _path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    return record
