"""The reward-signal check against independent references (scipy, numpy re-derivations)."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from pgrpo.stages.evaluation.reward_check import (
    WARN_BELOW,
    between_prompt_share,
    reward_signal_check,
    spearman,
    warnings,
    within_prompt_corr,
)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 4, 12).astype(float)  # many ties
        b = a + rng.normal(0, 1.5, 12)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_constant_side_is_zero_not_nan():
    assert spearman([1, 1, 1], [0, 1, 2]) == 0.0
    assert spearman([0, 1, 2], [3, 3, 3]) == 0.0


def test_within_prompt_ignores_prompt_offsets():
    # The judge and the reward agree inside every prompt, but the reward adds a large
    # per-prompt offset: within-prompt correlation 1, pooled correlation far lower.
    rng = np.random.default_rng(1)
    q = np.repeat(np.arange(10), 4)
    judge = rng.normal(size=40)
    reward = judge + 10 * rng.normal(size=10)[q]
    assert within_prompt_corr(reward, judge, q) == pytest.approx(1.0)
    assert spearmanr(reward, judge).statistic < 0.6


def test_between_share_is_anova_ratio():
    rng = np.random.default_rng(2)
    q = np.repeat(np.arange(6), 5)
    v = rng.normal(size=30) + 3 * rng.normal(size=6)[q]
    means = np.array([v[q == i].mean() for i in range(6)])
    ss_between = sum(5 * (m - v.mean()) ** 2 for m in means)
    assert between_prompt_share(v, q) == pytest.approx(ss_between / ((v - v.mean()) ** 2).sum())
    assert between_prompt_share(np.ones(4), np.array([0, 0, 1, 1])) == 0.0
    assert between_prompt_share(np.array([0., 1, 0, 1]), np.array([0, 0, 1, 1])) == 0.0


def test_check_flags_offset_for_pgrpo_not_grpo():
    # Reward = judge contrast + a per-prompt offset unrelated to the judge: GRPO's advantage
    # removes the offset and tracks the judge's contrast; P-GRPO's keeps it.
    rng = np.random.default_rng(3)
    q = np.repeat(np.arange(40), 4)
    g = np.repeat(np.arange(2), 80)
    judge = rng.normal(size=160)
    reward = judge + 5 * rng.normal(size=40)[q]
    check = reward_signal_check(reward, judge, q, g, ["grpo", "pgrpo"], ["a", "b"])
    for grp in ("a", "b"):
        r = check["groups"][grp]
        assert r["within_corr"] == pytest.approx(1.0)
        assert r["between_share"] > 0.8
        assert r["adv_corr/grpo"] > 0.8
        assert r["adv_corr/pgrpo"] < 0.5
        assert r["n_prompts"] == 20 and not r["warn"]


def test_check_warns_for_a_reward_that_ranks_at_random():
    rng = np.random.default_rng(4)
    q = np.repeat(np.arange(30), 4)
    g = np.zeros(120, dtype=int)
    check = reward_signal_check(rng.normal(size=120), rng.normal(size=120), q, g, ["grpo"], ["x"])
    assert check["groups"]["x"]["within_corr"] < WARN_BELOW and check["groups"]["x"]["warn"]
    (line,) = warnings(check, "models/reward")
    assert "group x" in line and "models/reward" in line


def test_check_rejects_misaligned_or_nan_input():
    with pytest.raises(ValueError, match="aligned"):
        reward_signal_check([1.0, 2.0], [1.0], [0, 0], [0, 0], ["grpo"])
    with pytest.raises(ValueError, match="reward values are NaN"):
        reward_signal_check([1.0, np.nan], [1.0, 2.0], [0, 0], [0, 0], ["grpo"])
