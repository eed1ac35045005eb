"""The pre-training checks (pgrpo.stages.reward.group_checks) against a re-derivation by hand:
accuracies under every head, the disagreement, the user-level bootstrap and the verdicts.
The checks on a trained reward model are in tests/stages/test_reward_model.py (MiniLM, opposite
preferences per group)."""

import numpy as np
import pytest

from pgrpo.stages.reward.group_checks import group_checks, verdicts


def test_accuracies_and_disagreement_by_hand():
    # 3 heads, 6 pairs: pairs 0-3 are group 0's (users a, a, b, c), 4-5 group 1's (user d).
    chosen = np.array([[1, 1, 1, 0, 0, 1],    # head 0
                       [0, 1, 0, 0, 1, 1],    # head 1
                       [0, 0, 1, 1, 1, 0]],   # head 2
                      float)
    rejected = np.array([[0, 0, 0, 0, 1, 0],
                         [1, 0, 1, 1, 0, 0],
                         [1, 1, 0, 1, 0, 1]], float)
    out = group_checks(chosen, rejected, [0, 0, 0, 0, 1, 1], ["a", "a", "b", "c", "d", "d"],
                       ["g0", "g1", "g2"])
    # group 0 under head 0: right, right, right, tie (half) -> 3.5 / 4
    assert out["g0"]["own_accuracy"] == pytest.approx(3.5 / 4)
    # under head 1: wrong, right, wrong, wrong (1/4); head 2: wrong, wrong, right, tie (1.5/4)
    assert out["g0"]["other_heads_accuracy"] == pytest.approx((1 / 4 + 1.5 / 4) / 2)
    assert out["g0"]["disagreement"] == pytest.approx(3.5 / 4 - 1.25 / 4)
    # group 1 under head 1: right, right; heads 0 and 2: (0 + 1) / 2 and (1 + 0) / 2
    assert out["g1"]["own_accuracy"] == 1.0 and out["g1"]["other_heads_accuracy"] == 0.5
    assert (out["g0"]["pairs"], out["g0"]["users"], out["g1"]["users"]) == (4, 3, 1)
    assert "g2" not in out  # no held-out pairs: nothing to say
    # one user: every bootstrap resample is that user, the interval is the point
    assert out["g1"]["own_accuracy_ci"] == [1.0, 1.0]
    lo, hi = out["g0"]["own_accuracy_ci"]
    assert lo <= out["g0"]["own_accuracy"] <= hi


def test_bootstrap_resamples_users_not_pairs():
    """One user with 50 pairs all right, 9 users with one pair each all wrong: resampling
    users makes the interval span nearly [0, 1]; resampling pairs would keep it near 0.85."""
    n_pairs = 59
    chosen = np.zeros((2, n_pairs))
    rejected = np.zeros((2, n_pairs))
    chosen[0, :50] = 1.0    # head 0 right on the heavy user's pairs
    rejected[0, 50:] = 1.0  # and wrong on the others'
    users = ["heavy"] * 50 + [f"u{i}" for i in range(9)]
    out = group_checks(chosen, rejected, [0] * n_pairs, users, ["g", "other"], seed=1)["g"]
    assert out["own_accuracy"] == pytest.approx(50 / 59)
    lo, hi = out["own_accuracy_ci"]
    assert lo == 0.0 and hi > 0.9


def test_verdicts_name_groups_at_chance_and_groups_that_do_not_differ():
    rng = np.random.default_rng(0)
    n = 400
    users = [f"u{i % 100}" for i in range(n)]
    distinct = (rng.random((2, n)) < np.array([[0.9], [0.2]])).astype(float)  # head 0 knows g0
    chance = (rng.random((2, n)) < 0.5).astype(float)                         # nobody knows g1
    chosen = np.concatenate([distinct, chance], 1)
    rejected = 1 - chosen
    checks = group_checks(chosen, rejected, [0] * n + [1] * n, users + users, ["g0", "g1"])
    v = verdicts(checks)
    assert v == {"not_learnable": ["g1"], "not_distinct": ["g1"]}


def test_shapes_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match="do not match"):
        group_checks(np.zeros((2, 3)), np.zeros((2, 4)), [0, 0, 0], ["a"] * 3, ["x", "y"])
    with pytest.raises(ValueError, match="2 heads for 3 group names"):
        group_checks(np.zeros((2, 3)), np.zeros((2, 3)), [0, 0, 0], ["a"] * 3, ["x", "y", "z"])
