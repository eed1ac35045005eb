"""GroupRewardStats, the per-group running reward history P-GRPO normalizes against, against
numpy references over a stream of batches: moments, decay, merge across processes, state."""

import io

import numpy as np
import pytest
import torch

from pgrpo.core.advantages import GroupRewardStats


def _f(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def _i(x):
    return torch.tensor(np.array(x), dtype=torch.int64)  # np.array copies (no negative strides)

def _stream(seed=0):
    """Six batches; groups 0/1/2 of unequal frequency, group 9 only from the 4th batch on,
    group 5 seen exactly once (in the first batch)."""
    rng = np.random.default_rng(seed)
    batches = []
    for b in range(6):
        n = int(rng.integers(6, 14))
        groups = rng.choice([0, 1, 2], size=n, p=[0.6, 0.3, 0.1])
        groups[0] = 5 if b == 0 else groups[0]
        groups[-3:] = 9 if b >= 3 else groups[-3:]
        rewards = rng.normal(loc=groups * 0.3, scale=1.0 + groups * 0.1)
        batches.append((rewards, groups))
    return batches


def test_running_stats_match_numpy_after_every_update():
    """count / mean / unbiased std per group over all rewards seen so far."""
    stats = GroupRewardStats()
    seen_r, seen_g = np.empty(0), np.empty(0, dtype=int)
    for rewards, groups in _stream():
        stats.update(_f(rewards), _i(groups))
        seen_r, seen_g = np.concatenate([seen_r, rewards]), np.concatenate([seen_g, groups])
        ids = np.unique(seen_g)[::-1]  # query order need not be sorted
        count = [np.sum(seen_g == k) for k in ids]
        mean = [seen_r[seen_g == k].mean() for k in ids]
        std = [seen_r[seen_g == k].std(ddof=1) if c > 1 else 0.0 for k, c in zip(ids, count)]
        np.testing.assert_allclose(stats.count(_i(ids)).numpy(), count, rtol=0)
        np.testing.assert_allclose(stats.mean(_i(ids)).numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(stats.std(_i(ids)).numpy(), std, rtol=1e-10, atol=1e-15)
    assert stats.std(_i([5])).item() == 0.0  # exactly one sample ever
    assert stats.count(_i([9])).item() == 9  # 3 per batch from the 4th batch on


def test_unseen_groups_have_count_zero_and_nan_moments():
    """Queries mixing seen and never-seen ids stay aligned; results are float64."""
    stats = GroupRewardStats()
    assert torch.isnan(stats.std(_i([1]))).all() and stats.count(_i([1])).item() == 0
    stats.update(_f([1.0, 3.0, 10.0]), _i([2, 2, 6]))
    ids = _i([42, 2, 0, 6, 100])
    count, mean, std = stats.count(ids), stats.mean(ids), stats.std(ids)
    assert {count.dtype, mean.dtype, std.dtype} == {torch.float64}
    assert count.tolist() == [0.0, 2.0, 0.0, 1.0, 0.0]
    assert mean[1].item() == 2.0 and mean[3].item() == 10.0
    assert std[1].item() == pytest.approx(np.sqrt(2.0)) and std[3].item() == 0.0
    assert torch.isnan(mean[[0, 2, 4]]).all() and torch.isnan(std[[0, 2, 4]]).all()


def test_stats_are_numerically_stable_with_a_large_offset():
    """A naive sum-of-squares variance loses every digit at 1e9 + unit noise."""
    values = 1e9 + np.random.default_rng(1).normal(size=(20, 50))
    stats = GroupRewardStats()
    for row in values:
        stats.update(_f(row), torch.zeros(50, dtype=torch.int64))
    assert stats.std(_i([0])).item() == pytest.approx(values.std(ddof=1), rel=1e-6)


@pytest.mark.parametrize("h", [1.0, 2.5])
def test_decay_matches_weighted_numpy_reference(h):
    """Weights 0.5**(k/h) for a reward k updates old; var = sum w(x-mu)^2 / (sum w - 1)."""
    stats = GroupRewardStats(half_life=h)
    batches = _stream(3)
    for t, (rewards, groups) in enumerate(batches):
        stats.update(_f(rewards), _i(groups))
        r = np.concatenate([b[0] for b in batches[: t + 1]])
        g = np.concatenate([b[1] for b in batches[: t + 1]])
        w = np.concatenate([np.full(len(b[0]), 0.5 ** ((t - k) / h)) for k, b in enumerate(batches[: t + 1])])
        for k in np.unique(g):
            ww, rr = w[g == k], r[g == k]
            mu = np.sum(ww * rr) / ww.sum()
            kid = _i([k])
            assert stats.count(kid).item() == pytest.approx(ww.sum(), rel=1e-12)
            assert stats.mean(kid).item() == pytest.approx(mu, rel=1e-10, abs=1e-12)
            if ww.sum() > 1:
                var = np.sum(ww * (rr - mu) ** 2) / (ww.sum() - 1)
                assert stats.std(kid).item() == pytest.approx(np.sqrt(var), rel=1e-10, abs=1e-12)


def _assert_same_stats(a, b, ids, rtol=1e-10):
    """count / mean / std agree (NaN == NaN for unseen ids)."""
    for fn in ("count", "mean", "std"):
        np.testing.assert_allclose(getattr(a, fn)(ids).numpy(), getattr(b, fn)(ids).numpy(), rtol=rtol, atol=0)


def test_merge_equals_one_tracker_over_the_concatenated_stream():
    """Chan merge is exact, including groups that only one of the two trackers has."""
    batches = _stream(5)  # group 5 only in batch 0 -> only in `a`
    extra = (np.array([3.0, 4.0, 4.5]), np.array([77, 77, 0]))  # group 77 only in `b`
    a, b, whole = GroupRewardStats(), GroupRewardStats(), GroupRewardStats()
    for i, (rewards, groups) in enumerate(batches + [extra]):
        (a if i < 2 else b).update(_f(rewards), _i(groups))
        whole.update(_f(rewards), _i(groups))
    assert a.count(_i([9, 77])).tolist() == [0.0, 0.0] and b.count(_i([5])).item() == 0
    a.merge(b)
    ids = _i([0, 1, 2, 5, 9, 77, 1234])
    _assert_same_stats(a, whole, ids)
    empty = GroupRewardStats().merge(whole)  # merging into / from an empty tracker
    _assert_same_stats(empty, whole, ids, rtol=0)
    _assert_same_stats(whole.merge(GroupRewardStats()), empty, ids, rtol=0)


@pytest.mark.parametrize("through_bytes", [False, True])
def test_state_dict_round_trips_exactly(through_bytes):
    """A fresh tracker loaded from the state equals the original now and after more updates."""
    stats = GroupRewardStats(half_life=3.0)
    for rewards, groups in _stream(2):
        stats.update(_f(rewards), _i(groups))
    state = stats.state_dict()
    if through_bytes:
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
    restored = GroupRewardStats()
    restored.load_state_dict(state)
    ids = _i([0, 1, 2, 5, 9, 11, 50])
    _assert_same_stats(restored, stats, ids, rtol=0)
    for _ in range(2):  # decay continues identically (half_life restored too)
        more = (_f([0.3, 2.0, -1.0, 0.7]), _i([0, 9, 11, 11]))
        stats.update(*more)
        restored.update(*more)
        _assert_same_stats(restored, stats, ids, rtol=0)
    assert not torch.equal(state["count"], stats.state_dict()["count"])  # state was a snapshot
