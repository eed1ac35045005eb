"""Advantage estimators against independent numpy re-derivations and known cases."""

import io

import numpy as np
import pytest
import torch

from pgrpo.advantages import (
    AdvantageConfig,
    GroupRewardStats,
    get_advantage_fn,
    grpo_advantages,
    pgrpo_advantages,
)


def _t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def np_grpo(r, q, scale, eps=1e-4):
    """Loop-by-loop GRPO reference."""
    r, q = np.asarray(r, float), np.asarray(q)
    out = np.zeros_like(r)
    for i in range(len(r)):
        same = r[q == q[i]]
        if len(same) < 2:
            continue
        centred = r[i] - same.mean()
        denom = {"group": same.std(ddof=1) + eps, "batch": r.std(ddof=1) + eps, "none": 1.0}[scale]
        out[i] = centred / denom
    return out


# Prompts of unequal sizes, interleaved rows (ids never contiguous).
R = [0.1, 0.9, 0.4, 0.3, 0.7, 1.0, 0.2, 0.6, 0.5]
Q = [2, 0, 2, 1, 0, 2, 1, 0, 2]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_numpy_with_interleaved_prompts(scale):
    got = grpo_advantages(_t(R), _t(Q, torch.int64), scale=scale)
    np.testing.assert_allclose(got.numpy(), np_grpo(R, Q, scale), rtol=1e-12, atol=1e-12)


def test_grpo_uses_the_unbiased_std():
    """A biased (ddof=0) std would give +-1.0 here; the unbiased one gives +-1/sqrt(2)."""
    got = grpo_advantages(_t([0.0, 1.0]), _t([5, 5], torch.int64), eps=0.0)
    np.testing.assert_allclose(got.numpy(), [-1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-12)


def test_grpo_zero_variance_single_sample_and_empty():
    r = _t([0.5, 0.5, 0.5, 0.8, 0.2])
    q = _t([0, 0, 0, 1, 2], torch.int64)
    for scale in ("group", "batch", "none"):
        got = grpo_advantages(r, q, scale=scale)
        assert got.tolist()[:3] == [0.0, 0.0, 0.0]  # equal rewards: no contrast
        assert got.tolist()[3:] == [0.0, 0.0]  # one completion: advantage 0
    assert grpo_advantages(_t([]), _t([], torch.int64)).numel() == 0
    assert grpo_advantages(_t([3.0]), _t([0], torch.int64), scale="batch").tolist() == [0.0]


def _stream(seed=0):
    """Six batches, four groups of unequal frequency; group 9 appears from batch 4 on."""
    rng = np.random.default_rng(seed)
    batches = []
    for b in range(6):
        n = int(rng.integers(5, 15))
        groups = rng.choice([0, 1, 2], size=n, p=[0.7, 0.2, 0.1])
        if b >= 3:
            groups[: 3] = 9
        rewards = rng.normal(loc=groups * 0.3, scale=1.0 + groups * 0.1)
        batches.append((rewards, groups))
    return batches


def test_running_stats_match_numpy_over_a_stream():
    stats = GroupRewardStats()
    seen_r, seen_g = [], []
    for rewards, groups in _stream():
        stats.update(_t(rewards), _t(groups, torch.int64))
        seen_r.extend(rewards)
        seen_g.extend(groups)
        r, g = np.array(seen_r), np.array(seen_g)
        ids = np.unique(g)
        got_ids = _t(ids, torch.int64)
        np.testing.assert_allclose(stats.count(got_ids).numpy(), [np.sum(g == k) for k in ids])
        np.testing.assert_allclose(stats.mean(got_ids).numpy(), [r[g == k].mean() for k in ids], rtol=1e-12)
        want_std = [r[g == k].std(ddof=1) if np.sum(g == k) > 1 else 0.0 for k in ids]
        np.testing.assert_allclose(stats.std(got_ids).numpy(), want_std, rtol=1e-10)
    unseen = stats.mean(_t([42], torch.int64)), stats.std(_t([42], torch.int64))
    assert all(torch.isnan(x).all() for x in unseen) and stats.count(_t([42], torch.int64)).item() == 0


def test_stats_are_numerically_stable_with_a_large_offset():
    """A naive sum-of-squares variance loses every digit at 1e9 + small noise."""
    rng = np.random.default_rng(1)
    values = 1e9 + rng.normal(size=(20, 50))
    stats = GroupRewardStats()
    for row in values:
        stats.update(_t(row), torch.zeros(50, dtype=torch.int64))
    np.testing.assert_allclose(stats.std(_t([0], torch.int64)).item(), values.std(ddof=1), rtol=1e-6)


def test_decay_matches_weighted_numpy_reference():
    h = 2.0
    stats = GroupRewardStats(half_life=h)
    batches = _stream(3)
    for rewards, groups in batches:
        stats.update(_t(rewards), _t(groups, torch.int64))
    last = len(batches) - 1
    r = np.concatenate([b[0] for b in batches])
    g = np.concatenate([b[1] for b in batches])
    w = np.concatenate([np.full(len(b[0]), 0.5 ** ((last - k) / h)) for k, b in enumerate(batches)])
    for k in np.unique(g):
        sel = g == k
        ww, rr = w[sel], r[sel]
        mu = np.sum(ww * rr) / ww.sum()
        var = np.sum(ww * (rr - mu) ** 2) / (ww.sum() - 1)
        kid = _t([k], torch.int64)
        np.testing.assert_allclose(stats.count(kid).item(), ww.sum(), rtol=1e-12)
        np.testing.assert_allclose(stats.mean(kid).item(), mu, rtol=1e-10)
        np.testing.assert_allclose(stats.std(kid).item(), np.sqrt(var), rtol=1e-10)


def test_merge_equals_one_tracker_over_the_concatenated_stream():
    batches = _stream(5)
    a, b, whole = GroupRewardStats(), GroupRewardStats(), GroupRewardStats()
    for i, (rewards, groups) in enumerate(batches):
        (a if i < 4 else b).update(_t(rewards), _t(groups, torch.int64))  # b lacks some groups
        whole.update(_t(rewards), _t(groups, torch.int64))
    b.update(_t([3.0, 4.0]), _t([77, 77], torch.int64))  # a group only b has
    whole.update(_t([3.0, 4.0]), _t([77, 77], torch.int64))
    merged = a.merge(b)
    assert torch.equal(merged.ids, whole.ids)
    ids = whole.ids
    for fn in ("count", "mean", "std"):
        torch.testing.assert_close(getattr(merged, fn)(ids), getattr(whole, fn)(ids), rtol=1e-10, atol=0)


def test_state_dict_round_trips_through_a_weights_only_load():
    stats = GroupRewardStats(half_life=3.0)
    for rewards, groups in _stream(2):
        stats.update(_t(rewards), _t(groups, torch.int64))
    buf = io.BytesIO()
    torch.save(stats.state_dict(), buf)
    buf.seek(0)
    restored = GroupRewardStats()
    restored.load_state_dict(torch.load(buf, weights_only=True))
    more = (_t([0.3, 2.0, -1.0]), _t([0, 9, 11], torch.int64))
    stats.update(*more)
    restored.update(*more)
    assert restored.half_life == 3.0
    for key, value in stats.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, restored.state_dict()[key]), key
        else:
            assert value == restored.state_dict()[key], key


def test_pgrpo_normalizes_after_merging_the_batch():
    """Reference: history *including* the current batch (normalizing first would differ)."""
    stats = GroupRewardStats()
    hist_r, hist_g = [], []
    for b, (rewards, groups) in enumerate(_stream(7)):
        prompts = np.arange(len(rewards)) // 2  # pairs of completions per prompt
        got = pgrpo_advantages(_t(rewards), _t(prompts, torch.int64), _t(groups, torch.int64), stats)
        hist_r.extend(rewards)
        hist_g.extend(groups)
        r, g = np.array(hist_r), np.array(hist_g)
        grpo = np_grpo(rewards, prompts, "group")
        want = np.empty(len(rewards))
        for i, k in enumerate(groups):
            past = r[g == k]
            want[i] = grpo[i] if len(past) < 2 else (rewards[i] - past.mean()) / (past.std(ddof=1) + 1e-4)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"batch {b}")


def test_cold_start_falls_back_to_grpo_only_below_min_count():
    stats = GroupRewardStats()
    r = _t([1.0, 0.0, 0.2, 0.6, 0.9])
    q = _t([0, 0, 1, 1, 1], torch.int64)
    g = _t([5, 6, 6, 6, 6], torch.int64)  # group 5: one sample; group 6: four
    got = pgrpo_advantages(r, q, g, stats, min_count=2)
    grpo = np_grpo([1.0, 0.0, 0.2, 0.6, 0.9], [0, 0, 1, 1, 1], "group")
    assert got[0].item() == pytest.approx(grpo[0])  # fallback: prompt contrast
    six = np.array([0.0, 0.2, 0.6, 0.9])
    np.testing.assert_allclose(got[1:].numpy(), (six - six.mean()) / (six.std(ddof=1) + 1e-4), rtol=1e-12)
    # With min_count=5 group 6 (count 4) is still cold: pure GRPO for everyone.
    cold = pgrpo_advantages(r, q, g, GroupRewardStats(), min_count=5)
    np.testing.assert_allclose(cold.numpy(), grpo, rtol=1e-12)
    with pytest.raises(ValueError, match="min_count"):
        pgrpo_advantages(r, q, g, GroupRewardStats(), min_count=1)


def test_corollary_3_1_identity():
    """A_i = (sigma_G / sigma_p) * Ahat_i + (mu_G - mu_p) / sigma_p, with eps = 0."""
    rng = np.random.default_rng(11)
    stats = GroupRewardStats()
    stats.update(_t(rng.normal(size=40)), _t(rng.integers(0, 3, size=40), torch.int64))
    r = rng.normal(size=24)
    q = np.repeat(np.arange(6), 4)
    g = np.repeat(rng.integers(0, 3, size=6), 4)
    got = pgrpo_advantages(_t(r), _t(q, torch.int64), _t(g, torch.int64), stats, eps=0.0).numpy()
    ahat = np_grpo(r, q, "group", eps=0.0)
    ids = _t(g, torch.int64)
    mu_p, sigma_p = stats.mean(ids).numpy(), stats.std(ids).numpy()
    mu_q = np.array([r[q == k].mean() for k in q])
    sigma_q = np.array([r[q == k].std(ddof=1) for k in q])
    np.testing.assert_allclose(got, sigma_q / sigma_p * ahat + (mu_q - mu_p) / sigma_p, rtol=1e-10)


def test_equal_rewards_prompt_still_gets_a_pgrpo_signal():
    stats = GroupRewardStats()
    stats.update(_t([0.0, 1.0, 0.5, 0.2]), torch.zeros(4, dtype=torch.int64))
    r, q, g = _t([0.9, 0.9, 0.9]), torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)
    assert grpo_advantages(r, q).abs().max().item() == 0.0
    adv = pgrpo_advantages(r, q, g, stats)
    assert (adv > 0.5).all()  # 0.9 is above the group's running mean


def test_nan_rewards_raise_naming_count_and_positions_without_touching_stats():
    stats = GroupRewardStats()
    stats.update(_t([1.0, 2.0]), _t([0, 0], torch.int64))
    before = stats.state_dict()
    r = _t([0.1, float("nan"), 0.3, 0.4, float("inf"), 0.6])
    q = _t([0, 0, 1, 1, 2, 2], torch.int64)
    with pytest.raises(ValueError, match=r"2 of 6 rewards are NaN or infinite, at positions \[1, 4\]"):
        pgrpo_advantages(r, q, torch.zeros(6, dtype=torch.int64), stats)
    for key in ("ids", "count", "mean", "m2"):
        assert torch.equal(before[key], stats.state_dict()[key])
    assert stats.num_updates == before["num_updates"]
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(r, q)


def test_misaligned_or_mistyped_ids_are_rejected():
    with pytest.raises(TypeError, match="prompt_ids must be int64"):
        grpo_advantages(_t([1.0, 2.0]), _t([0.0, 0.0]))
    with pytest.raises(ValueError, match="group_ids must be aligned"):
        GroupRewardStats().update(_t([1.0, 2.0]), _t([0], torch.int64))


def test_registry_dispatches_and_names_unknown_estimators():
    cfg = AdvantageConfig()
    r, q = _t(R), _t(Q, torch.int64)
    grpo = get_advantage_fn("grpo")(r, q, torch.zeros_like(q), GroupRewardStats(), cfg)
    np.testing.assert_allclose(grpo.numpy(), np_grpo(R, Q, "group"), rtol=1e-12)
    pg_stats = GroupRewardStats()
    get_advantage_fn("pgrpo")(r, q, torch.zeros_like(q), pg_stats, cfg)
    assert pg_stats.count(_t([0], torch.int64)).item() == len(R)
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*'grpo', 'pgrpo'"):
        get_advantage_fn("ppo")
