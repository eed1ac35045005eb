"""Evaluation metric and curve functions (pgrpo.stages.evaluation.metrics, .curves) against hand-computed cases.

    .venv/bin/python -m pytest -q tests/stages/test_metrics.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pgrpo.stages.evaluation.curves import (
    curve_auc,
    learning_efficiency,
    reward_curve,
    running_mean,
    steps_to_fraction,
)
from pgrpo.stages.evaluation.metrics import (
    bootstrap_ci,
    majority_group,
    minority_majority_gap,
    policy_summaries,
    win_rate,
)

# ------------------------------------------------------------------ bootstrap_ci


def test_bootstrap_interval_covers_the_known_mean_with_the_textbook_width():
    x = np.random.default_rng(0).normal(5.0, 2.0, 400)
    mean, lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)
    assert mean == pytest.approx(x.mean())
    assert lo < 5.0 < hi
    # Normal theory: 2 * 1.96 * sd / sqrt(n).
    assert hi - lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / 20, rel=0.1)


def test_bootstrap_quantiles_of_two_values_by_hand():
    # Resampled means of [0, 1]: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0], n_boot=4000, level=0.95, seed=0) == (0.5, 0.0, 1.0)
    # A 40% interval: the 0.3 and 0.7 quantiles both fall in the middle mass.
    assert bootstrap_ci([0.0, 1.0], n_boot=4000, level=0.4, seed=0) == (0.5, 0.5, 0.5)


def test_bootstrap_resamples_whole_clusters():
    values, clusters = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0], ["a", "a", "a", "b", "b", "b"]
    mean, lo, hi = bootstrap_ci(values, n_boot=4000, seed=0, clusters=clusters)
    # Two clusters: the resampled mean is 0, 0.5 or 1, never 1/3 or 2/3.
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    # Clusters of unequal size: the mean is over values, not over cluster means.
    assert bootstrap_ci([0.0, 0.0, 0.0, 1.0], clusters=[1, 1, 1, 2], seed=0)[0] == 0.25
    # One cluster: nothing to resample.
    assert bootstrap_ci([1.0, 3.0], clusters=["a", "a"]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="3 cluster labels for 2 values"):
        bootstrap_ci([1.0, 2.0], clusters=[1, 2, 3])


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    mean, lo, hi = bootstrap_ci([0.1] * 10)
    assert lo <= mean <= hi and hi - lo < 1e-12
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    # Seeded: the same seed repeats, another seed moves the interval.
    x = np.arange(20.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    with pytest.raises(ValueError, match="1 of 3 values are NaN"):
        bootstrap_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.0)


# ------------------------------------------------------------------ win_rate


def test_win_rate_counts_ties_as_half():
    # win, tie, loss -> (1 + 0.5 + 0) / 3
    assert win_rate([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]) == pytest.approx(0.5)
    assert win_rate([3.0, 3.0], [1.0, 1.0]) == 1.0
    # loss, loss, tie, win
    assert win_rate([0, 0, 5, 5], [1, 1, 5, 4]) == pytest.approx((0 + 0 + 0.5 + 1) / 4)
    x = [0.3, -1.0, 2.0]
    assert win_rate(x, x) == 0.5


def test_win_rate_edge_cases():
    assert math.isnan(win_rate([], []))
    with pytest.raises(ValueError, match="paired samples: got 2 and 3"):
        win_rate([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2 of 2 values are NaN"):
        win_rate([float("nan")] * 2, [1.0, 2.0])


# ------------------------------------------------------------------ curves


def test_running_mean_by_hand():
    np.testing.assert_allclose(running_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(running_mean([1, 2, 3, 4], 3), [1, 1.5, 2, 3])
    np.testing.assert_allclose(running_mean([1, 5, 2], 1), [1, 5, 2])
    assert running_mean([], 3).size == 0
    with pytest.raises(ValueError, match="window"):
        running_mean([1.0], 0)


def test_steps_to_fraction_on_a_synthetic_step_curve():
    steps = list(range(10))
    values = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    # Unsmoothed: final = 1, target = 0.9, first reached at step 3.
    assert steps_to_fraction(steps, values, 0.9, window=1, tail=3) == 3
    # Window 3: smoothed = 0, 0, 0, 1/3, 2/3, 1, ... -> step 5;
    # fraction 0.5: 2/3 >= 0.5 first at step 4.
    assert steps_to_fraction(steps, values, 0.9, window=3) == 5
    assert steps_to_fraction(steps, values, 0.5, window=3) == 4
    # Uneven steps are reported as logged.
    assert steps_to_fraction([10, 20, 40], [0, 1, 1], 0.9, window=1) == 20


def test_steps_to_fraction_relative_to_a_nonzero_baseline():
    # baseline 2, final 4: 90% of the gain is 3.8; smoothed (window 1) reaches it at step 2.
    assert steps_to_fraction([0, 1, 2, 3], [2.0, 3.0, 3.9, 4.0], 0.9, window=1, tail=1) == 2
    # Negative rewards improving towards 0 work the same way.
    assert steps_to_fraction([0, 1, 2], [-2.0, -1.0, -0.1], 0.9, window=1, tail=1) == 2


def test_steps_to_fraction_returns_none_when_there_is_nothing_to_reach():
    assert steps_to_fraction([0, 1, 2, 3], [0.5] * 4) is None  # constant
    assert steps_to_fraction([0, 1, 2, 3], [1.0, 0.8, 0.6, 0.4]) is None  # getting worse
    assert steps_to_fraction([0], [1.0]) is None
    assert steps_to_fraction([], []) is None
    # A spike on the last step: final (tail 1) = 10, target 9, the smoothed curve ends at 10/3.
    assert steps_to_fraction(range(5), [0, 0, 0, 0, 10], 0.9, window=3, tail=1) is None
    with pytest.raises(ValueError, match="1 of 3 values are NaN"):
        steps_to_fraction([0, 1, 2], [0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        steps_to_fraction([0, 2, 1], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="fraction"):
        steps_to_fraction([0, 1], [0.0, 1.0], fraction=1.5)


def test_curve_auc_by_hand():
    # Trapezoids (0+2)/2*1 + (2+2)/2*2 = 5 over a span of 3.
    assert curve_auc([0, 1, 3], [0.0, 2.0, 2.0]) == pytest.approx(5 / 3)
    assert curve_auc([1, 2, 3, 4], [0.7] * 4) == pytest.approx(0.7)
    assert curve_auc([5], [0.3]) == 0.3
    assert math.isnan(curve_auc([], []))
    with pytest.raises(ValueError, match="3 steps for 2 values"):
        curve_auc([0, 1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        curve_auc([0, 1], [float("nan"), 1.0])


def test_reward_curve_skips_steps_without_the_group():
    rows = [{"step": 1, "train/reward/a": 0.1, "train/reward/b": 0.5},
            {"step": 2, "train/reward/b": 0.6},       # no prompt of group a in this batch
            {"step": 3, "train/reward/a": None},      # NaN logged as null
            {"step": 4, "train/reward/a": 0.4}]
    assert reward_curve(rows, "a") == ([1.0, 4.0], [0.1, 0.4])
    assert reward_curve(rows, "b") == ([1.0, 2.0], [0.5, 0.6])
    assert reward_curve(rows, "c") == ([], [])


# ------------------------------------------------------------------ groups


def test_minority_majority_gap_by_hand():
    means, sizes = {"a": 0.9, "b": 0.2, "c": 0.4}, {"a": 50, "b": 10, "c": 8}
    assert minority_majority_gap(means, sizes) == pytest.approx(0.9 - (0.2 + 0.4) / 2)
    # Minorities ahead of the majority: negative.
    assert minority_majority_gap({"a": 0.1, "b": 0.5}, {"a": 3, "b": 1}) == pytest.approx(-0.4)
    # The majority is the largest group that has a reward.
    assert minority_majority_gap({"b": 0.2, "c": 0.4}, sizes) == pytest.approx(0.2 - 0.4)
    assert minority_majority_gap({"a": 0.9}, sizes) is None
    with pytest.raises(ValueError, match=r"groups \['z'\] have no size"):
        minority_majority_gap({"z": 0.1, "a": 0.2}, sizes)
    with pytest.raises(ValueError, match="1 of 2 values are NaN"):
        minority_majority_gap({"a": float("nan"), "b": 0.2}, sizes)


def test_majority_group_ties_go_to_the_first_name():
    assert majority_group({"b": 5, "a": 5, "c": 1}) == "a"
    assert majority_group({"x": 1, "y": 7}) == "y"
    with pytest.raises(ValueError):
        majority_group({})


# ------------------------------------------------------------------ evaluation summaries


def test_policy_summaries_by_hand():
    groups = np.array(["a", "a", "b", "b"])
    clusters = np.array([0, 0, 1, 1])  # one prompt per group, two samples each
    sizes = {"a": 3, "b": 1, "c": 1}  # c has no held-out prompt
    scores = {"base": {"judge": np.array([0.0, 1.0, 0.0, 0.0]), "learned": np.zeros(4)},
              "alg": {"judge": np.array([1.0, 1.0, 0.0, 1.0]), "learned": np.array([2.0, 2, 0, 0])}}
    out = policy_summaries(scores, groups, clusters, sizes, n_boot=100, seed=0)
    a, b = out["alg"]["groups"]["a"], out["alg"]["groups"]["b"]
    assert (a["reward"], a["ci_low"], a["ci_high"], a["n"]) == (1.0, 1.0, 1.0, 2)  # one prompt
    assert a["win_rate"] == 0.75 and b["win_rate"] == 0.75  # win + tie
    # Group a, pooled over both policies: judge [0, 1, 1, 1] has SD sqrt(0.1875), learned
    # [0, 0, 2, 2] SD 1. Gains: judge 0.5 / sqrt(0.1875), learned 2 / 1.
    assert a["reward_gap"] == pytest.approx(2.0 - 0.5 / math.sqrt(0.1875))
    assert a["learned_reward"] == 2.0
    assert b["reward_gap"] is None  # the learned reward never varies in b: no scale
    assert out["alg"]["groups"]["c"] == {"n": 0, "reward": None, "ci_low": None, "ci_high": None,
                                         "win_rate": None, "learned_reward": None,
                                         "reward_gap": None}
    assert out["alg"]["mean_reward"] == 0.75  # (1 + 0.5) / 2, over groups with samples
    assert (out["alg"]["worst_group"], out["alg"]["worst_group_reward"]) == ("b", 0.5)
    assert out["alg"]["minority_majority_gap"] == 0.5  # a (majority) - b
    assert out["alg"]["win_rate"] == 0.75  # win, tie, tie, win
    assert out["base"]["win_rate"] is None and out["base"]["groups"]["a"]["reward_gap"] == 0.0

    # No judge: the learned reward is the score, and there is no gap to report.
    no_judge = {k: {"judge": None, "learned": v["learned"]} for k, v in scores.items()}
    out = policy_summaries(no_judge, groups, clusters, sizes, n_boot=100, seed=0)
    assert out["alg"]["groups"]["a"]["reward"] == 2.0
    assert out["alg"]["groups"]["a"]["reward_gap"] is None


def test_learning_efficiency_from_metric_rows():
    rows = [{"step": s, "train/reward/a": v} for s, v in zip(range(1, 6), [0, 0, 1, 1, 1])]
    rows[1]["train/reward/b"] = 0.3
    out = learning_efficiency(rows, ["a", "b", "c"], fraction=0.5, window=1)
    # a: baseline 0, final 1 (tail 1), target 0.5, first reached at step 3; AUC = 2.5 / 4.
    assert out["a"] == {"steps_to_50": 3, "auc": pytest.approx(2.5 / 4)}
    assert out["b"] == {"steps_to_50": None, "auc": 0.3}  # one point: no improvement to time
    assert out["c"] == {"steps_to_50": None, "auc": None}


# --------------------------------------------------------------------------- helps_users

def _pol(gain_lo, gain_hi, kl, groups):
    return {"gain_ci_low": gain_lo, "gain_ci_high": gain_hi, "kl_to_base": kl,
            "groups": {g: {"reward": m, "ci_low": lo, "ci_high": hi} for g, (m, lo, hi) in groups.items()}}


BASE = _pol(None, None, 0.0, {"a": (0.5, 0.3, 0.7), "b": (0.2, 0.0, 0.4)})


@pytest.mark.parametrize("policy, verdict, harmed", [
    # gain interval above 0, small drift, every group's interval reaches the base's mean
    (_pol(0.05, 0.2, 0.05, {"a": (0.6, 0.45, 0.75), "b": (0.3, 0.15, 0.45)}), "helps", []),
    # the same gain bought with KL at the limit: not "helps"
    (_pol(0.05, 0.2, 0.1, {"a": (0.6, 0.45, 0.75), "b": (0.3, 0.15, 0.45)}), "unresolved", []),
    # a gain overall, but group b's whole interval lies below the base's mean for b (0.2)
    (_pol(0.05, 0.2, 0.05, {"a": (0.9, 0.8, 1.0), "b": (0.1, 0.05, 0.19)}), "harms", ["b"]),
    # a group's interval touching the base's mean is within its own interval: not harmed
    (_pol(-0.1, 0.1, 0.05, {"a": (0.45, 0.3, 0.5), "b": (0.15, 0.0, 0.2)}), "unresolved", []),
    # the gain interval below 0
    (_pol(-0.3, -0.01, 0.05, {"a": (0.4, 0.2, 0.6), "b": (0.1, -0.1, 0.3)}), "harms", []),
    # no interval (one prompt): never "helps"
    (_pol(None, None, 0.01, {"a": (0.6, None, None), "b": (0.3, None, None)}), "unresolved", []),
])
def test_helps_users_applies_the_rule(policy, verdict, harmed):
    from pgrpo.stages.evaluation.metrics import helps_users

    out = helps_users(policy, BASE, kl_limit=0.1)
    assert out["verdict"] == verdict and out["harmed_groups"] == harmed
    assert out["verdict_score"] == {"helps": 1, "unresolved": 0, "harms": -1}[verdict]


def test_seeds_to_resolve_against_the_t_quantiles_by_hand():
    from scipy.stats import t as student_t

    from pgrpo.stages.evaluation.metrics import seeds_to_resolve

    # mean 0.2, sd 0.1: n = 3 gives 4.303 * 0.1 / sqrt(3) = 0.248 > 0.2, n = 4 gives 0.159
    assert seeds_to_resolve([0.1, 0.2, 0.3]) == 4
    assert seeds_to_resolve([-0.1, -0.2, -0.3]) == 4  # the sign does not matter
    # a small mean against a large spread: the smallest n with t_{n-1} sd / sqrt(n) < |mean|
    values = [0.05, -0.15, 0.25]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    n = seeds_to_resolve(values)
    assert student_t.ppf(0.975, n - 1) * sd / np.sqrt(n) < mean
    assert student_t.ppf(0.975, n - 2) * sd / np.sqrt(n - 1) >= mean
    assert seeds_to_resolve([0.001, -0.2, 0.2]) is None  # > 100 seeds
    assert seeds_to_resolve([0.2]) is None and seeds_to_resolve([0.1, -0.1]) is None


def test_seeds_to_resolve_with_a_margin_counts_the_seeds_that_show_equivalence():
    from scipy.stats import t as student_t

    from pgrpo.stages.evaluation.metrics import seeds_to_resolve

    # mean 0, sd 0.01: never excludes 0, but n = 3 gives 4.303 * 0.01 / sqrt(3) = 0.0248,
    # inside a margin of 0.05 (n = 2: 12.71 * 0.01 / sqrt(2) = 0.090, not inside)
    assert seeds_to_resolve([0.01, -0.01, 0.0]) is None
    assert seeds_to_resolve([0.01, -0.01, 0.0], margin=0.05) == 3
    # mean 0.02, sd 0.1: equivalence needs t_{n-1} * 0.1 / sqrt(n) < 0.05 - 0.02, which comes
    # long before the interval could exclude 0 (half width < 0.02)
    values = [-0.08, 0.02, 0.12]
    n = seeds_to_resolve(values, margin=0.05)
    assert student_t.ppf(0.975, n - 1) * 0.1 / np.sqrt(n) < 0.03
    assert student_t.ppf(0.975, n - 2) * 0.1 / np.sqrt(n - 1) >= 0.03
    assert n < seeds_to_resolve(values, max_n=1000)


@pytest.mark.parametrize("lo, hi, margin, want", [
    (0.01, 0.40, 0.05, "supported"),      # above 0
    (0.001, 0.02, 0.05, "supported"),     # above 0 even inside the margin: the claim is "higher"
    (-0.40, -0.01, 0.05, "contradicted"),  # below 0
    (-0.03, 0.04, 0.05, "equivalent"),    # covers 0, inside (-margin, margin)
    (-0.03, 0.04, None, "not resolved"),  # ... but no margin was set
    (-0.05, 0.04, 0.05, "not resolved"),  # touches -margin: not shown equivalent
    (-0.01, 0.20, 0.05, "not resolved"),  # covers 0, reaches past the margin
    (-1e-9, 1e-9, 0.0, "not resolved"),   # a zero margin never gives equivalence
    (math.nan, math.nan, 0.05, "not resolved"),  # one run: no interval
    (None, None, 0.05, "not resolved"),
])
def test_interval_verdict_on_hand_made_intervals(lo, hi, margin, want):
    from pgrpo.stages.evaluation.metrics import interval_verdict

    assert interval_verdict(lo, hi, margin) == want
