"""Training curves from metrics.jsonl rows: smoothing, the mean reward over training (AUC) and
the step at which a curve reaches a fraction of its gain. Pure numpy, as metrics.py.

    from pgrpo.stages.evaluation.curves import curve_auc, learning_efficiency, steps_to_fraction
    steps_to_fraction(steps, rewards, 0.9)          # first step at 90% of the improvement
    curve_auc(steps, rewards)                       # mean reward over training
    learning_efficiency(rows, groups, key=curve_key(rows))   # both, per group

A curve is the judge's on validation prompts (JUDGE_CURVE_KEY, logged by
pgrpo.stages.evaluation.judge_curve) when the run logged one, else the training reward's.
NaN policy: metrics.py's (an error that counts them). An empty curve gives NaN (curve_auc)
or None (steps_to_fraction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pgrpo.stages.evaluation.metrics import _finite, _num


def running_mean(values: Sequence[float], window: int = 3) -> np.ndarray:
    """Trailing running mean: out[i] = mean(values[max(0, i - window + 1) : i + 1]).

    The first points average what exists so far, so out[0] = values[0].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = _finite(values, "running_mean")
    if x.size == 0:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    hi = np.arange(1, x.size + 1)
    lo = np.maximum(hi - window, 0)
    return (c[hi] - c[lo]) / (hi - lo)


def _curve(steps: Sequence[float], values: Sequence[float],
           name: str) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=np.float64).ravel(), _finite(values, name)
    if s.size != v.size:
        raise ValueError(f"{name}: {s.size} steps for {v.size} values")
    if s.size > 1 and np.any(np.diff(s) <= 0):
        raise ValueError(f"{name}: steps must be strictly increasing")
    return s, v


def steps_to_fraction(steps: Sequence[float], values: Sequence[float], fraction: float = 0.9,
                      window: int = 3, tail: int | None = None) -> float | None:
    """Convergence speed: the first step where the smoothed curve reaches `fraction` of its gain.

        smoothed = running_mean(values, window)      (trailing, so smoothed[0] = values[0])
        baseline = values[0]
        final    = mean(values[-tail:])              (tail defaults to window)
        target   = baseline + fraction * (final - baseline)
        answer   = steps[first i with smoothed[i] >= target]

    None when the curve does not improve (final <= baseline, also for a single point)
    or never reaches the target. With tail == window, smoothed[-1] == final, so an
    improving curve reaches any fraction <= 1 by its last step at the latest.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s, v = _curve(steps, values, "steps_to_fraction")
    if v.size < 2:
        return None
    tail = window if tail is None else tail
    if tail < 1:
        raise ValueError(f"tail must be >= 1, got {tail}")
    baseline, final = v[0], v[-tail:].mean()
    if not final > baseline:
        return None
    target = baseline + fraction * (final - baseline)
    # A relative tolerance, so round-off in the running mean cannot miss an exact hit.
    hit = np.nonzero(running_mean(v, window) >= target - 1e-12 * max(1.0, abs(target)))[0]
    return float(s[hit[0]]) if hit.size else None


def curve_auc(steps: Sequence[float], values: Sequence[float]) -> float:
    """Area under the reward curve (trapezoid) divided by its step span: the mean reward
    over training, comparable between runs of different lengths. One point gives its
    value, an empty curve NaN."""
    s, v = _curve(steps, values, "curve_auc")
    if v.size == 0:
        return math.nan
    if v.size == 1:
        return float(v[0])
    return float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(s)) / (s[-1] - s[0]))


def reward_curve(rows: Sequence[Mapping], group: str, key: str = "train/reward/{group}"
                 ) -> tuple[list[float], list[float]]:
    """(steps, values) of one group's per-step reward from metrics.jsonl rows.

    A group is absent from steps whose batch held none of its prompts (and a NaN is
    logged as null): those steps are skipped, not filled in.
    """
    name = key.format(group=group)
    pts = [(float(r["step"]), float(r[name])) for r in rows if r.get(name) is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def steps_key(fraction: float) -> str:
    """metrics.json key of the convergence step: steps_to_90 for fraction 0.9."""
    return f"steps_to_{round(fraction * 100):d}"


JUDGE_CURVE_KEY = "judge/reward/{group}"  # written by pgrpo.stages.evaluation.judge_curve
TRAIN_CURVE_KEY = "train/reward/{group}"


def curve_key(rows: Sequence[Mapping]) -> str:
    """The judge's validation curve when the run logged one, else the training reward's."""
    judged = any(k.startswith("judge/reward/") for r in rows for k in r)
    return JUDGE_CURVE_KEY if judged else TRAIN_CURVE_KEY


def learning_efficiency(rows: Sequence[Mapping], groups: Sequence[str], fraction: float = 0.9,
                        window: int = 3, key: str = TRAIN_CURVE_KEY) -> dict[str, dict]:
    """{group: {steps_key(fraction): step or None, "auc": mean reward over training or None}}
    from metrics.jsonl rows (`key`: the training reward, or the judge's curve)."""
    out = {}
    for g in groups:
        steps, values = reward_curve(rows, g, key)
        st = steps_to_fraction(steps, values, fraction, window)
        out[g] = {steps_key(fraction): int(st) if st is not None and st.is_integer() else st,
                  "auc": _num(curve_auc(steps, values)) if steps else None}
    return out
