"""The names and values MLflow accepts, and the active run: shared by the run bookkeeping
(pgrpo.tracking.mlflow_tracking) and the background metric sender
(pgrpo.tracking.mlflow_logger), which each import this and never each other.

    flatten_metrics({"eval": {"casual": 0.7}}, "final")   # {"final/eval/casual": 0.7}
    flatten_params({"policy": {"lr": 3e-5}})               # {"policy.lr": "3e-05"}
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from numbers import Real
from typing import Any

MAX_PARAM_VALUE = 6000  # MLflow's limits (mlflow.utils.validation)
MAX_KEY = 250


def safe_key(name: str) -> str:
    """A metric / param / tag name MLflow accepts anywhere: other characters become "_".

    Colons too: MLflow refuses them on Windows.
    """
    key = re.sub(r"[^/\w.\- ]", "_", str(name)).strip("/")
    key = re.sub(r"/{2,}", "/", key)
    if len(key) > MAX_KEY:  # keep it unique: a hash of the full name replaces the tail
        key = key[:MAX_KEY - 9] + "~" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return key


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}, "l": [1, 2]} -> {"a.b": "1", "l": "1,2"}; values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name))
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[:MAX_PARAM_VALUE - 3] + "..."
        out[safe_key(name)] = text
    return out


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dicts joined by '/'; strings, lists, bools, None and NaN skipped."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name))
        elif isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value):
            out[safe_key(name)] = float(value)
    return out


def active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside `with stage_run(...)`")
    return run.info.run_id
