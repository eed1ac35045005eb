"""Evaluation metrics: pure numpy, no torch or pandas. Training curves (AUC, steps to a
fraction of the gain) are pgrpo.stages.evaluation.curves.

    from pgrpo.stages.evaluation.metrics import bootstrap_ci, win_rate, t_interval, interval_verdict
    mean, lo, hi = bootstrap_ci(rewards, clusters=prompt_ids, seed=0)   # 95% percentile CI
    win_rate(policy_rewards, base_rewards)          # paired; a tie counts 0.5
    minority_majority_gap({"a": 0.9, "b": 0.2, "c": 0.4}, {"a": 50, "b": 10, "c": 8})  # 0.6
    t_interval(per_seed_means, 0.95)                # Student-t interval over seeds
    interval_verdict(lo, hi, margin=0.05)           # supported / contradicted / equivalent / ...
    seeds_to_resolve(per_seed_differences, margin=0.05)   # seeds that would decide, if it held

NaN policy: a NaN (or inf) among the values is an error that says how many there
are; callers drop missing points on purpose (and say so) before calling. An empty
input gives NaN (bootstrap_ci, win_rate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _finite(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} of {x.size} values are NaN or infinite; drop them first")
    return x


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 clusters: Sequence | None = None) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its percentile-bootstrap interval.

    `n_boot` resamples with replacement (numpy Generator seeded with `seed`); lo / hi
    are the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled means.
    With `clusters` (one label per value, e.g. the prompt a completion answers) whole
    clusters are resampled: samples of one prompt are correlated, and resampling them
    one by one would make the interval too narrow. One value (or one cluster) gives
    lo = hi = mean: there is nothing to resample. Empty input gives three NaNs.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = _finite(values, "bootstrap_ci")
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if clusters is None:
        sums, counts = x, np.ones_like(x)
    else:
        labels = np.asarray(clusters).ravel()
        if labels.size != x.size:
            raise ValueError(f"bootstrap_ci: {labels.size} cluster labels for {x.size} values")
        _, inv = np.unique(labels, return_inverse=True)
        sums, counts = np.bincount(inv, weights=x), np.bincount(inv).astype(np.float64)
    if sums.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
    # Ratio of resampled totals: the mean over every value in the drawn clusters.
    means = sums[idx].sum(1) / counts[idx].sum(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    # Clamp float round-off (e.g. all values equal) so that lo <= mean <= hi holds.
    return mean, float(min(lo, mean)), float(max(hi, mean))


def stratified_mean_ci(values: Sequence[float], strata: Sequence, clusters: Sequence,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                       baseline: Sequence[float] | None = None) -> tuple[float, float, float]:
    """(estimate, lo, hi) of the unweighted mean over strata (groups) of each stratum's mean,
    by a percentile bootstrap that resamples whole clusters (prompts) within each stratum.

    With `baseline` (paired with `values`: same prompt, same sampling seed), the estimate
    is the paired difference values - baseline, and both are resampled with the same
    clusters: the interval of a policy's gain over the base, narrower than the two
    separate intervals because prompt difficulty cancels.
    """
    x = _finite(values, "stratified_mean_ci")
    y = np.zeros_like(x) if baseline is None else _finite(baseline, "stratified_mean_ci baseline")
    st, cl = np.asarray(strata).ravel(), np.asarray(clusters).ravel()
    if not (x.size == y.size == st.size == cl.size):
        raise ValueError(f"stratified_mean_ci: {x.size} values, {y.size} baseline, {st.size} "
                         f"strata, {cl.size} clusters")
    if x.size == 0:
        return math.nan, math.nan, math.nan
    d = x - y
    rng = np.random.default_rng(seed)
    estimate, boots = 0.0, np.zeros(n_boot)
    names = np.unique(st)
    for name in names:
        sel = st == name
        _, inv = np.unique(cl[sel], return_inverse=True)
        sums, counts = np.bincount(inv, weights=d[sel]), np.bincount(inv).astype(np.float64)
        estimate += sums.sum() / counts.sum()
        idx = rng.integers(0, sums.size, size=(n_boot, sums.size))
        boots += sums[idx].sum(1) / counts[idx].sum(1)
    estimate, boots = estimate / len(names), boots / len(names)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(estimate), float(min(lo, estimate)), float(max(hi, estimate))


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of paired samples where a beats b; a tie counts 0.5 (so a vs itself is 0.5).

    a[i] and b[i] must answer the same prompt with the same sampling seed.
    Empty input gives NaN.
    """
    x, y = _finite(a, "win_rate a"), _finite(b, "win_rate b")
    if x.shape != y.shape:
        raise ValueError(f"win_rate needs paired samples: got {x.size} and {y.size} values")
    if x.size == 0:
        return math.nan
    return float(np.mean((x > y) + 0.5 * (x == y)))


def majority_group(group_sizes: Mapping[str, int]) -> str:
    """The largest group; a tie goes to the first name in sorted order (deterministic)."""
    if not group_sizes:
        raise ValueError("no groups")
    return min(group_sizes, key=lambda g: (-group_sizes[g], str(g)))


def minority_majority_gap(per_group_means: Mapping[str, float],
                          group_sizes: Mapping[str, int]) -> float | None:
    """Majority group's reward minus the unweighted MEAN of the other groups' rewards.

    Positive: the minorities are served worse than the majority; the mean (not the min)
    so one tiny noisy group does not decide it (the worst group is reported separately).
    Only groups present in `per_group_means` count; the majority is the largest of those
    by `group_sizes`. None when fewer than two groups have a reward.
    """
    missing = sorted(set(per_group_means) - set(group_sizes))
    if missing:
        raise ValueError(f"minority_majority_gap: groups {missing} have no size")
    _finite(list(per_group_means.values()), "minority_majority_gap")
    if len(per_group_means) < 2:
        return None
    major = majority_group({g: group_sizes[g] for g in per_group_means})
    minor = [float(v) for g, v in per_group_means.items() if g != major]
    return float(per_group_means[major]) - float(np.mean(minor))


# ------------------------------------------------------------------ evaluation summaries

def _num(x) -> float | None:
    """JSON-safe: None for None / NaN / inf."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def policy_summaries(scores: Mapping[str, Mapping[str, np.ndarray | None]], groups: np.ndarray,
                     clusters: np.ndarray, sizes: Mapping[str, int], n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Per-policy, per-group evaluation numbers (the metrics.json entries of pgrpo.stages.evaluation.evaluate).

    scores[policy] = {"judge": [N] or None, "learned": [N]}, sample i of every policy
    answering the same prompt with the same seed; "base" must be a policy. groups[i] is
    sample i's group, clusters[i] its prompt (the bootstrap resamples prompts). The
    reward is the judge's, or the learned reward when judge is None. reward_gap =
    (learned gain over base) / SD_learned - (judge gain over base) / SD_judge, each SD
    over all policies' samples of the group; None without a judge or with a zero SD.
    """
    has_judge = scores["base"]["judge"] is not None
    main = "judge" if has_judge else "learned"
    base = scores["base"]
    sd = {}
    for g in sizes:
        for k in ("judge", "learned") if has_judge else ("learned",):
            pooled = np.concatenate([s[k][groups == g] for s in scores.values()])
            sd[g, k] = float(pooled.std()) if pooled.size > 1 else 0.0
    out = {}
    for name, s in scores.items():
        per_group = {}
        for g in sizes:
            sel = groups == g
            if not sel.any():
                per_group[g] = dict.fromkeys(["reward", "ci_low", "ci_high", "win_rate",
                                              "learned_reward", "reward_gap"], None) | {"n": 0}
                continue
            mean, lo, hi = bootstrap_ci(s[main][sel], n_boot, level, seed, clusters[sel])
            gap = None
            if has_judge and sd[g, "judge"] > 0 and sd[g, "learned"] > 0:
                gain = {k: (s[k][sel].mean() - base[k][sel].mean()) / sd[g, k]
                        for k in ("judge", "learned")}
                gap = gain["learned"] - gain["judge"]
            per_group[g] = {
                "n": int(sel.sum()), "reward": mean, "ci_low": lo, "ci_high": hi,
                "win_rate": None if name == "base" else win_rate(s[main][sel], base[main][sel]),
                "learned_reward": float(s["learned"][sel].mean()), "reward_gap": _num(gap)}
        means = {g: r["reward"] for g, r in per_group.items() if r["reward"] is not None}
        worst = min(means, key=lambda g: (means[g], g)) if means else None
        present = np.isin(groups, list(means))
        _, lo, hi = stratified_mean_ci(s[main][present], groups[present], clusters[present],
                                       n_boot, level, seed)
        gain = (None, None, None) if name == "base" else stratified_mean_ci(
            s[main][present], groups[present], clusters[present], n_boot, level, seed,
            baseline=base[main][present])
        out[name] = {
            "groups": per_group,
            "mean_reward": float(np.mean(list(means.values()))) if means else None,
            "mean_ci_low": _num(lo), "mean_ci_high": _num(hi),
            "gain_vs_base": _num(gain[0]), "gain_ci_low": _num(gain[1]),
            "gain_ci_high": _num(gain[2]),
            "worst_group": worst, "worst_group_reward": means.get(worst),
            "minority_majority_gap": minority_majority_gap(means, sizes),
            "win_rate": None if name == "base" else win_rate(s[main], base[main]),
            "learned_reward": float(s["learned"].mean()),
        }
    return out


def helps_users(policy: Mapping, base: Mapping, kl_limit: float) -> dict:
    """Does a trained policy serve its users better than the base? The rule of issue 12, fixed
    before the runs it judges (pgrpo.stages.evaluation.evaluate applies it to every algorithm):

    - helps: the paired gain interval over the base lies above 0, KL to the base is below
      `kl_limit` nats/token, and no group is harmed;
    - harms: the gain interval lies below 0, or some group is harmed;
    - unresolved: anything else (a gain within noise, or a gain bought with more drift).
    A group is harmed when the policy's whole interval for it lies below the base's mean for
    it: worse than the base by more than its own interval.
    """
    harmed = sorted(g for g, r in policy["groups"].items()
                    if r["ci_high"] is not None and base["groups"][g]["reward"] is not None
                    and r["ci_high"] < base["groups"][g]["reward"])
    low, high, kl = policy["gain_ci_low"], policy["gain_ci_high"], policy.get("kl_to_base")
    kl_ok = kl is not None and kl < kl_limit
    if harmed or (high is not None and high < 0):
        verdict = "harms"
    elif low is not None and low > 0 and kl_ok:
        verdict = "helps"
    else:
        verdict = "unresolved"
    return {"verdict": verdict, "verdict_score": {"helps": 1, "unresolved": 0, "harms": -1}[verdict],
            "gain_above_zero": low is not None and low > 0,
            "kl_below_limit": kl_ok, "harmed_groups": harmed}


def _t_half_width(sd: float, n: int, level: float) -> float:
    """t_{(1+level)/2, n-1} * sd / sqrt(n): half the Student-t interval of a mean of n runs."""
    from scipy.stats import t as student_t

    return float(student_t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean over independent runs (e.g. seeds).

    With n runs the interval is mean -/+ t_{(1+level)/2, n-1} * sd / sqrt(n), sd with
    ddof=1: wide for 3 seeds (t = 4.30 at 95%), as it should be. One value gives
    lo = hi = NaN (no spread to estimate); empty input gives three NaNs.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _finite(values, "t_interval")
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = _t_half_width(float(x.std(ddof=1)), x.size, level)
    return mean, mean - half, mean + half


VERDICTS = ("supported", "contradicted", "equivalent", "not resolved")


def interval_verdict(lo: float | None, hi: float | None, margin: float | None = None) -> str:
    """The verdict on a claim "the difference is > 0" from the interval [lo, hi] of the
    difference (one rule for every experiment; fixed before the runs it judges):

        supported     lo > 0                        (higher, at the interval's level)
        contradicted  hi < 0                        (lower)
        equivalent    -margin < lo and hi < margin  (no difference as large as margin, either way)
        not resolved  otherwise: the interval covers 0 and reaches past the margin, or there
                      is no interval (one run, missing values), or no margin was set

    An interval inside (0, margin) is "supported": the claim is "higher", and it is, by less
    than the margin (a reader compares the estimate with the margin)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "not resolved"
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    if margin is not None and -margin < lo and hi < margin:
        return "equivalent"
    return "not resolved"


def seeds_to_resolve(values: Sequence[float], level: float = 0.95, max_n: int = 100,
                     margin: float | None = None) -> int | None:
    """Smallest number of runs n whose Student-t interval, mean -/+ t_{n-1} * sd / sqrt(n),
    would exclude 0, or (with a margin) lie inside (-margin, margin), if the observed mean
    and sd held: a planning number for "how many seeds would decide this", not a result.
    None: fewer than 2 values, or more than max_n (a mean near 0 with no margin, or near
    the margin)."""
    x = _finite(values, "seeds_to_resolve")
    if x.size < 2:
        return None
    return seeds_needed(float(x.mean()), float(x.std(ddof=1)), level, margin, max_n)


def seeds_needed(mean: float, sd: float, level: float = 0.95, margin: float | None = None,
                 max_n: int = 100) -> int | None:
    """seeds_to_resolve from a mean and a standard deviation (e.g. read back from a reported
    interval: sd = half width * sqrt(n) / t_{n-1})."""
    mean = abs(mean)
    for n in range(2, max_n + 1):
        half = _t_half_width(sd, n, level)
        if half < mean or (margin is not None and half < margin - mean):
            return n
    return None
