"""Advantage estimators against numpy loop references (np.mean, np.std(ddof=1)) and hand
cases; no expected value comes from another function of pgrpo.core.advantages."""

import re

import numpy as np
import pytest
import torch
from test_group_stats import _f, _i, _stream  # tensor helpers and the shared reward stream

from pgrpo.core.advantages import (
    AdvantageConfig,
    GroupRewardStats,
    get_advantage_fn,
    grpo_advantages,
    pgrpo_advantages,
    pgrpo_scale_advantages,
)


def np_grpo(r, q, scale="group", eps=1e-4):
    """Loop-by-loop GRPO reference: centre per prompt, scale by prompt/batch/no std."""
    r, q = np.asarray(r, float), np.asarray(q)
    out = np.zeros_like(r)
    for i in range(len(r)):
        same = r[q == q[i]]
        if len(same) < 2:
            continue  # a single completion has no contrast
        denom = {"group": same.std(ddof=1) + eps, "batch": r.std(ddof=1) + eps, "none": 1.0}[scale]
        out[i] = (r[i] - same.mean()) / denom
    return out


# Prompts of unequal sizes (4, 3, 2), rows interleaved: ids never contiguous.
R = [0.1, 0.9, 0.4, 0.3, 0.7, 1.0, 0.2, 0.6, 0.5]
Q = [2, 0, 2, 1, 0, 2, 1, 0, 2]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_numpy_with_interleaved_prompts(scale):
    """Centring by prompt id (not position) and each scale's denominator."""
    got = grpo_advantages(_f(R), _i(Q), scale=scale)
    np.testing.assert_allclose(got.numpy(), np_grpo(R, Q, scale), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_grpo_uses_the_unbiased_std(scale):
    """The ddof=1 reference passes and a ddof=0 implementation would not."""
    r, q = [0.0, 1.0, 2.0, 4.0], [0, 0, 1, 1]
    got = grpo_advantages(_f(r), _i(q), scale=scale, eps=0.0).numpy()
    centred = np.array([-0.5, 0.5, -1.0, 1.0])
    std1 = {"group": np.array([1, 1, 2, 2]) / np.sqrt(2), "batch": np.std(r, ddof=1)}[scale]
    std0 = {"group": np.array([0.5, 0.5, 1.0, 1.0]), "batch": np.std(r, ddof=0)}[scale]
    np.testing.assert_allclose(got, centred / std1, rtol=1e-12)
    assert not np.allclose(got, centred / std0, rtol=1e-3)


@pytest.mark.parametrize("value, eps, dtype", [
    (0.5, 1e-4, torch.float32),  # exact in binary, default eps
    (0.1, 1e-4, torch.float64),  # 0.1 is not exact in binary: the mean rounds
    (0.5, 0.0, torch.float64),   # eps=0: must not be 0/0
], ids=["dyadic", "inexact-float64", "eps0"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_variance_prompt_gets_exactly_zero(scale, value, eps, dtype):
    """A prompt whose completions all score the same has no contrast: advantage exactly 0."""
    r = _f([value, 0.0, value, 1.0, value], dtype)  # prompt 3 is constant, prompt 8 is not
    got = grpo_advantages(r, _i([3, 8, 3, 8, 3]), scale=scale, eps=eps)
    assert got[[0, 2, 4]].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_single_completion_prompt_and_empty_batch(scale):
    """One completion of a prompt -> 0 (even next to contrasting prompts); empty -> empty."""
    got = grpo_advantages(_f([0.8, 0.0, 1.0, 0.3]), _i([4, 1, 1, 7]), scale=scale)
    assert got[0].item() == 0.0 and got[3].item() == 0.0
    assert got[1].item() != 0.0
    assert grpo_advantages(_f([3.0]), _i([0]), scale=scale).tolist() == [0.0]
    assert grpo_advantages(_f([]), _i([]), scale=scale).numel() == 0


def test_pgrpo_normalizes_after_merging_the_batch():
    """Reference: group history *including* the current batch; GRPO below min_count."""
    stats = GroupRewardStats()
    hist_r, hist_g = np.empty(0), np.empty(0, dtype=int)
    differs_from_merge_after = False
    for b, (rewards, groups) in enumerate(_stream(7)):
        prompts = np.random.default_rng(b).permutation(np.arange(len(rewards)) // 2)  # pairs
        got = pgrpo_advantages(_f(rewards), _i(prompts), _i(groups), stats).numpy()
        before_r, before_g = hist_r, hist_g
        hist_r, hist_g = np.concatenate([hist_r, rewards]), np.concatenate([hist_g, groups])
        grpo = np_grpo(rewards, prompts, "group")
        want = np.empty(len(rewards))
        for i, k in enumerate(groups):
            past = hist_r[hist_g == k]
            want[i] = grpo[i] if len(past) < 2 else (rewards[i] - past.mean()) / (past.std(ddof=1) + 1e-4)
            old = before_r[before_g == k]
            if len(old) >= 2 and len(past) >= 2:
                wrong = (rewards[i] - old.mean()) / (old.std(ddof=1) + 1e-4)
                differs_from_merge_after |= abs(wrong - want[i]) > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"batch {b}")
    assert differs_from_merge_after  # the reference can tell the two orders apart


def test_cold_start_falls_back_to_grpo_only_below_min_count():
    """New group with 1 sample -> GRPO prompt advantage; >= min_count -> its own stats."""
    r, q = [1.0, 0.0, 0.2, 0.6, 0.9], [0, 0, 1, 1, 1]
    g = _i([5, 6, 6, 6, 6])  # group 5: one sample; group 6: four
    stats = GroupRewardStats()
    got = pgrpo_advantages(_f(r), _i(q), g, stats, min_count=2).numpy()
    grpo = np_grpo(r, q, "group")
    assert got[0] == pytest.approx(grpo[0], rel=1e-12)
    six = np.array(r[1:])
    np.testing.assert_allclose(got[1:], (six - six.mean()) / (six.std(ddof=1) + 1e-4), rtol=1e-12)
    # Next batch: group 5 reaches 2 samples (after the merge) and uses its own stats.
    got2 = pgrpo_advantages(_f([0.4, 0.4]), _i([0, 0]), _i([5, 6]), stats, min_count=2).numpy()
    five = np.array([1.0, 0.4])
    assert got2[0] == pytest.approx((0.4 - five.mean()) / (five.std(ddof=1) + 1e-4), rel=1e-12)
    # min_count=5: group 6 (count 4) is still cold, so everyone gets GRPO.
    cold = pgrpo_advantages(_f(r), _i(q), g, GroupRewardStats(), min_count=5).numpy()
    np.testing.assert_allclose(cold, grpo, rtol=1e-12)
    fresh = GroupRewardStats()
    with pytest.raises(ValueError, match="min_count"):
        pgrpo_advantages(_f(r), _i(q), g, fresh, min_count=1)
    assert fresh.count(g).tolist() == [0.0] * 5  # rejected before touching the stats


def test_corollary_3_1_identity():
    """A_i = (sigma_G / sigma_p) * Ahat_i + (mu_G - mu_p) / sigma_p, with eps = 0."""
    rng = np.random.default_rng(11)
    hist_r, hist_g = rng.normal(size=40), rng.integers(0, 3, size=40)
    stats = GroupRewardStats()
    stats.update(_f(hist_r), _i(hist_g))
    q = rng.permutation(np.repeat(np.arange(6), 4))
    g = np.array([[0, 1, 2, 0, 2, 1][k] for k in q])  # one preference group per prompt
    r = rng.normal(size=24)
    got = pgrpo_advantages(_f(r), _i(q), _i(g), stats, eps=0.0).numpy()
    all_r, all_g = np.concatenate([hist_r, r]), np.concatenate([hist_g, g])
    mu_p = np.array([all_r[all_g == k].mean() for k in g])
    sigma_p = np.array([all_r[all_g == k].std(ddof=1) for k in g])
    mu_q = np.array([r[q == k].mean() for k in q])
    sigma_q = np.array([r[q == k].std(ddof=1) for k in q])
    ahat = (r - mu_q) / sigma_q
    np.testing.assert_allclose(got, sigma_q / sigma_p * ahat + (mu_q - mu_p) / sigma_p, rtol=1e-10)


def test_equal_rewards_prompt_still_gets_a_pgrpo_signal():
    """GRPO gives 0 to a constant prompt; P-GRPO gives (R - mu_p) / (sigma_p + eps)."""
    stats = GroupRewardStats()
    stats.update(_f([0.0, 1.0, 0.5, 0.25]), _i([3, 3, 3, 3]))
    r, q, g = _f([0.75, 0.75, 0.75]), _i([0, 0, 0]), _i([3, 3, 3])
    assert grpo_advantages(r, q).tolist() == [0.0, 0.0, 0.0]
    hist = np.array([0.0, 1.0, 0.5, 0.25, 0.75, 0.75, 0.75])
    want = (0.75 - hist.mean()) / (hist.std(ddof=1) + 1e-4)
    np.testing.assert_allclose(pgrpo_advantages(r, q, g, stats).numpy(), [want] * 3, rtol=1e-12)


_BAD = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, float("nan"), 0.9, 1.0, 1.1, float("-inf")]  # positions 7, 11
_CALLS = {
    "grpo_advantages": lambda r, q, g, s: grpo_advantages(r, q),
    "stats.update": lambda r, q, g, s: s.update(r, g),
    "pgrpo_advantages": lambda r, q, g, s: pgrpo_advantages(r, q, g, s),
    "registry grpo": lambda r, q, g, s: get_advantage_fn("grpo")(r, q, g, s, AdvantageConfig()),
    "registry pgrpo": lambda r, q, g, s: get_advantage_fn("pgrpo")(r, q, g, s, AdvantageConfig()),
    "pgrpo_scale_advantages": lambda r, q, g, s: pgrpo_scale_advantages(r, q, g, s),
    "registry pgrpo_scale": lambda r, q, g, s: get_advantage_fn("pgrpo_scale")(r, q, g, s,
                                                                               AdvantageConfig()),
}


@pytest.mark.parametrize("call", list(_CALLS))
def test_nan_rewards_raise_with_count_and_positions_and_leave_stats_untouched(call):
    """The message says how many and where; no partial update of the running stats."""
    stats = GroupRewardStats(half_life=4.0)
    stats.update(_f([1.0, 2.0, 4.0]), _i([0, 0, 1]))
    before = stats.state_dict()
    q, g = _i(np.arange(12) // 4), _i(np.arange(12) % 2)
    with pytest.raises(ValueError, match="2 of 12 rewards are NaN or infinite") as err:
        _CALLS[call](_f(_BAD), q, g, stats)
    assert re.search(r"\b7\b", str(err.value)) and re.search(r"\b11\b", str(err.value))
    after = stats.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]) if isinstance(value, torch.Tensor) else value == after[key], key


_R2, _FLOAT_IDS = _f([1.0, 2.0]), _f([0.0, 0.0])


@pytest.mark.parametrize("exc, name, call", [
    (TypeError, "prompt_ids", lambda: grpo_advantages(_R2, _FLOAT_IDS)),
    (TypeError, "group_ids", lambda: GroupRewardStats().update(_R2, _FLOAT_IDS)),
    (TypeError, "group_ids", lambda: pgrpo_advantages(_R2, _i([0, 0]), _FLOAT_IDS, GroupRewardStats())),
    (ValueError, "prompt_ids", lambda: grpo_advantages(_R2, _i([0, 0, 0]))),
    (ValueError, "group_ids", lambda: GroupRewardStats().update(_R2, _i([0]))),
    (ValueError, "group_ids", lambda: pgrpo_advantages(_R2, _i([0, 0]), _i([0]), GroupRewardStats())),
    (ValueError, "group_ids", lambda: pgrpo_scale_advantages(_R2, _i([0, 0]), _i([0]), GroupRewardStats())),
])
def test_misaligned_or_mistyped_ids_are_rejected(exc, name, call):
    """Float ids -> TypeError, misaligned lengths -> ValueError, naming the argument."""
    with pytest.raises(exc, match=name):
        call()


def test_registry_dispatches_and_names_unknown_estimators():
    """'grpo' honours cfg.scale/eps; 'pgrpo' honours min_count and feeds the stats."""
    r, q, g = _f(R), _i(Q), _i([1] * len(R))
    cfg = AdvantageConfig(scale="none", eps=1e-4, min_count=2)
    got = get_advantage_fn("grpo")(r, q, g, GroupRewardStats(), cfg)
    np.testing.assert_allclose(got.numpy(), np_grpo(R, Q, "none"), rtol=1e-12, atol=1e-15)
    stats = GroupRewardStats()
    got = get_advantage_fn("pgrpo")(r, q, g, stats, cfg).numpy()
    want = (np.array(R) - np.mean(R)) / (np.std(R, ddof=1) + 1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert stats.count(_i([1])).item() == len(R)
    cold = get_advantage_fn("pgrpo")(r, q, g, GroupRewardStats(), AdvantageConfig(min_count=100))
    np.testing.assert_allclose(cold.numpy(), np_grpo(R, Q, "group"), rtol=1e-12)
    with pytest.raises(ValueError, match=r"(?s)unknown.*'ppo'.*grpo.*pgrpo"):
        get_advantage_fn("ppo")


def np_pgrpo_scale(rewards, prompts, groups, hist_r, hist_g, min_count=2, eps=1e-4):
    """Loop reference of pgrpo_scale: R_i minus its prompt's mean over the group's std of the
    history *including* this batch; GRPO while the group has fewer than min_count rewards."""
    rewards, prompts = np.asarray(rewards, float), np.asarray(prompts)
    grpo = np_grpo(rewards, prompts, "group", eps)
    out = np.empty(len(rewards))
    for i, k in enumerate(groups):
        past = hist_r[hist_g == k]
        same = rewards[prompts == prompts[i]]
        if len(past) < min_count:
            out[i] = grpo[i]
        elif len(same) < 2 or same.max() == same.min():
            out[i] = 0.0
        else:
            out[i] = (rewards[i] - same.mean()) / (past.std(ddof=1) + eps)
    return out


@pytest.mark.parametrize("min_count", [2, 12])
def test_pgrpo_scale_matches_numpy_over_a_stream(min_count):
    """Prompt-mean centring, group-history std (merged first), GRPO for cold groups."""
    stats = GroupRewardStats()
    hist_r, hist_g = np.empty(0), np.empty(0, dtype=int)
    saw_cold = saw_warm = False
    for b, (rewards, groups) in enumerate(_stream(5)):
        prompts = np.random.default_rng(b).permutation(np.arange(len(rewards)) // 3)
        got = pgrpo_scale_advantages(_f(rewards), _i(prompts), _i(groups), stats, min_count).numpy()
        hist_r, hist_g = np.concatenate([hist_r, rewards]), np.concatenate([hist_g, groups])
        want = np_pgrpo_scale(rewards, prompts, groups, hist_r, hist_g, min_count)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"batch {b}")
        counts = np.array([np.sum(hist_g == k) for k in groups])
        saw_cold |= bool((counts < min_count).any())
        saw_warm |= bool((counts >= min_count).any())
    assert saw_cold and saw_warm  # both branches were exercised


def test_pgrpo_scale_is_pgrpo_without_the_offset():
    """Corollary 3.1 with eps = 0: pgrpo - pgrpo_scale = (mu_G - mu_p) / sigma_p."""
    rng = np.random.default_rng(4)
    hist_r, hist_g = rng.normal(size=30), rng.integers(0, 2, size=30)
    q = rng.permutation(np.repeat(np.arange(5), 4))
    g = np.array([[0, 1, 1, 0, 1][k] for k in q])
    r = rng.normal(loc=g, size=20)
    a, b = GroupRewardStats(), GroupRewardStats()
    a.update(_f(hist_r), _i(hist_g))
    b.update(_f(hist_r), _i(hist_g))
    full = pgrpo_advantages(_f(r), _i(q), _i(g), a, eps=0.0).numpy()
    scale = pgrpo_scale_advantages(_f(r), _i(q), _i(g), b, eps=0.0).numpy()
    all_r, all_g = np.concatenate([hist_r, r]), np.concatenate([hist_g, g])
    mu_p = np.array([all_r[all_g == k].mean() for k in g])
    sigma_p = np.array([all_r[all_g == k].std(ddof=1) for k in g])
    mu_q = np.array([r[q == k].mean() for k in q])
    np.testing.assert_allclose(full - scale, (mu_q - mu_p) / sigma_p, rtol=1e-9, atol=1e-12)
    for k in np.unique(q):  # the scale estimator sums to zero within every prompt
        assert abs(scale[q == k].sum()) < 1e-10


def test_pgrpo_scale_registry_entry_honours_min_count_and_feeds_stats():
    r, q, g = _f(R), _i(Q), _i([1] * len(R))
    stats = GroupRewardStats()
    got = get_advantage_fn("pgrpo_scale")(r, q, g, stats, AdvantageConfig(min_count=2)).numpy()
    prompt_mean = np.array([np.mean([x for x, k in zip(R, Q) if k == qi]) for qi in Q])
    np.testing.assert_allclose(got, (np.array(R) - prompt_mean) / (np.std(R, ddof=1) + 1e-4),
                               rtol=1e-12)
    assert stats.count(_i([1])).item() == len(R)
    cold = get_advantage_fn("pgrpo_scale")(r, q, g, GroupRewardStats(), AdvantageConfig(min_count=100))
    np.testing.assert_allclose(cold.numpy(), np_grpo(R, Q, "group"), rtol=1e-12)
    # A constant prompt keeps advantage exactly 0 (no contrast), as in GRPO.
    const = pgrpo_scale_advantages(_f([0.3, 0.3, 0.0, 1.0]), _i([0, 0, 1, 1]), _i([2, 2, 2, 2]), stats)
    assert const[:2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("fn", [pgrpo_advantages, pgrpo_scale_advantages])
@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_a_group_without_spread_gets_exactly_zero_not_nan(fn, eps):
    """Group 0's history is four equal rewards (no contrast); group 1 has spread. At eps=0
    the former was 0/0 = NaN before; it must be exactly 0, and group 1 untouched."""
    r, q, g = _f([2.0, 2.0, 2.0, 2.0, 1.0, 3.0, 0.0, 4.0]), _i([0, 0, 1, 1, 2, 2, 3, 3]), _i([0] * 4 + [1] * 4)
    adv = fn(r, q, g, GroupRewardStats(), min_count=2, eps=eps)
    assert adv[:4].tolist() == [0.0] * 4
    assert torch.isfinite(adv).all() and (adv[4:] != 0).all()

