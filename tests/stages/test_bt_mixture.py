"""The mixture of Bradley-Terry models (pgrpo.stages.groups.bt_mixture) and its assign_groups path.

Planted data: K classes with known utility directions, users whose choices are
Bradley-Terry draws from their class's utility, so the right partition is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_expit, logsumexp

from pgrpo.stages.groups.bt_mixture import fit_bt_mixture
from pgrpo.stages.groups.assign_groups import AssignConfig, ari, assign_groups, cluster_vectors


def planted(sizes=(20, 12, 8), pairs_per_user: int = 12, dim: int = 6, seed: int = 0):
    """Pair features chosen - rejected, their user index, and each user's true class."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1.5, size=(len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    users = np.repeat(np.arange(len(truth)), pairs_per_user)
    diff = rng.normal(size=(len(users), dim))  # phi(a) - phi(b)
    a_wins = rng.random(len(users)) < 1 / (1 + np.exp(-(diff * W[truth[users]]).sum(1)))
    return np.where(a_wins[:, None], diff, -diff), users, truth


def test_recovers_planted_classes_where_user_mean_directions_do_not():
    X, users, truth = planted()
    fit = fit_bt_mixture(X, users, 3, seed=0)
    assert ari(truth, fit.labels) >= 0.9
    # The baseline the method replaces: k-means on each user's own mean direction.
    means = np.stack([X[users == u].mean(0) for u in range(len(truth))])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    km, _, _ = cluster_vectors(means, 3, "kmeans", seed=0)
    assert ari(truth, fit.labels) > ari(truth, km) + 0.1


def test_loglik_shares_and_posterior_agree_with_a_direct_computation():
    X, users, truth = planted(sizes=(10, 6), pairs_per_user=8, dim=4, seed=1)
    fit = fit_bt_mixture(X, users, 2, n_init=3, seed=0)
    per_user = np.zeros((len(truth), 2))
    for i, u in enumerate(users):
        per_user[u] += log_expit(X[i] @ fit.weights.T)
    joint = per_user + np.log(fit.shares)
    assert fit.loglik == pytest.approx(logsumexp(joint, axis=1).sum(), rel=1e-10)
    np.testing.assert_allclose(fit.posterior, np.exp(joint - logsumexp(joint, axis=1, keepdims=True)),
                               atol=1e-9)
    assert fit.bic == pytest.approx(-2 * fit.loglik + (2 * 4 + 1) * np.log(len(X)))


def test_each_class_direction_maximizes_its_weighted_penalized_likelihood():
    """At convergence the M-step's optimum: the gradient of
    sum_i r_ik log sigmoid(w_k . x_i) - l2/2 |w_k|^2 is zero (checked by finite differences)."""
    X, users, _ = planted(sizes=(10, 6), pairs_per_user=8, dim=4, seed=2)
    l2 = 0.5
    fit = fit_bt_mixture(X, users, 2, l2=l2, n_init=2, tol=0, max_iter=300, seed=0)
    for k in range(2):
        # the M-step weighted by the posterior of the E-step before it: recompute it from W, shares
        r = fit.posterior[users, k]

        def objective(w, r=r):
            return float(r @ log_expit(X @ w) - l2 / 2 * w @ w)

        eps = 1e-5
        grad = [(objective(fit.weights[k] + eps * e) - objective(fit.weights[k] - eps * e)) / (2 * eps)
                for e in np.eye(4)]
        np.testing.assert_allclose(grad, 0, atol=1e-3)


def test_bic_picks_the_planted_number_of_classes_and_is_seeded(tmp_path):
    from pgrpo.stages.groups.assign_groups import bt_mixture_groups

    X, users, truth = planted(sizes=(20, 16, 12), pairs_per_user=16, dim=5, seed=3)
    ids = np.array([f"u{u:03d}" for u in users])
    by_user, k, scores = bt_mixture_groups(X, ids, None, (2, 5), pca_dims=5, l2=1.0, n_init=5, seed=0)
    assert k == 3 and sorted(scores) == [2, 3, 4, 5] and min(scores, key=scores.get) == 3
    assert ari(truth, by_user.loc[[f"u{u:03d}" for u in range(len(truth))]].to_numpy()) >= 0.8  # 2 of 48 users are BT-noise ambiguous
    again, _, _ = bt_mixture_groups(X, ids, 3, (2, 5), pca_dims=5, l2=1.0, n_init=5, seed=0)
    assert again.equals(bt_mixture_groups(X, ids, 3, (2, 5), pca_dims=5, l2=1.0, n_init=5, seed=0)[0])


def test_bad_input_is_named():
    X, users, _ = planted(sizes=(4, 4), pairs_per_user=3, dim=3)
    with pytest.raises(ValueError, match="one user index per pair"):
        fit_bt_mixture(X, users[:-1], 2)
    with pytest.raises(ValueError, match="every user with at least one pair"):
        fit_bt_mixture(X, users + 1, 2)
    with pytest.raises(ValueError, match=r"n_classes=9: need 1 <= K <= 8"):
        fit_bt_mixture(X, users, 9)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_bt_mixture(bad, users, 2)


def test_assign_groups_runs_the_bt_mixture_end_to_end(tmp_path):
    from tests.stages.test_groups import persona_tables, write

    users, pairs = persona_tables(sizes=(5, 4, 3), pairs_per_user=3)
    u, p = write(tmp_path, users, pairs)
    cfg = AssignConfig(method="cluster", algorithm="bt_mixture", encoder="tiny-random-bert",
                       k_range=(2, 3), pca_dims=4, n_init=2, use_profile=False)  # no profiles
    m = assign_groups(cfg, u, p, tmp_path)
    assert m["k_criterion"] == "bic" and set(m["k_scores"]) == {"2", "3"}
    assert m["k"] == int(min(m["k_scores"], key=m["k_scores"].get))
    groups = pd.read_parquet(tmp_path / "groups.parquet")
    assert len(groups) == 12 and sum(m["sizes"].values()) == 12


# ---------------------------------------------------------------- the context (profile) view

def planted_with_context(seed: int = 4):
    """Classes 0 and 1 share one utility (their pairs look alike), only their context
    tells them apart; the last user of each class has no pairs at all."""
    rng = np.random.default_rng(seed)
    sizes, dim, per_user = (12, 10, 8), 4, 10
    W = rng.normal(0, 1.5, size=(3, dim))
    W[1] = W[0]
    truth = np.repeat(np.arange(3), sizes)
    with_pairs = np.concatenate([np.arange(s0, s0 + n - 1) for s0, n in zip(np.cumsum((0,) + sizes[:-1]), sizes)])
    users = np.repeat(with_pairs, per_user)
    diff = rng.normal(size=(len(users), dim))
    a_wins = rng.random(len(users)) < 1 / (1 + np.exp(-(diff * W[truth[users]]).sum(1)))
    X = np.where(a_wins[:, None], diff, -diff)
    context = rng.normal(0, 3, size=(3, 5))[truth] + rng.normal(size=(len(truth), 5))
    return X, users, truth, context


def test_context_separates_what_pairs_cannot_and_places_users_without_pairs():
    X, users, truth, context = planted_with_context()
    fit = fit_bt_mixture(X, users, 3, context=context, n_init=5, seed=0)
    assert fit.posterior.shape == (len(truth), 3)
    assert ari(truth, fit.labels) == pytest.approx(1.0)  # the 3 users without pairs included
    # The pairs alone (users with pairs re-indexed 0..U-1) cannot split classes 0 and 1.
    seen, index = np.unique(users, return_inverse=True)
    alone = fit_bt_mixture(X, index, 3, n_init=5, seed=0)
    assert ari(truth[seen], alone.labels) < 0.7


def test_loglik_with_context_agrees_with_a_direct_computation():
    from scipy.stats import norm

    X, users, truth, context = planted_with_context(seed=5)
    fit = fit_bt_mixture(X, users, 3, context=context, n_init=2, tol=0, max_iter=100, seed=0)
    per_user = np.zeros((len(truth), 3))
    for i, u in enumerate(users):
        per_user[u] += log_expit(X[i] @ fit.weights.T)
    for k in range(3):
        per_user[:, k] += norm.logpdf(context, fit.context_means[k], np.sqrt(fit.context_var)).sum(1)
    joint = per_user + np.log(fit.shares)
    assert fit.loglik == pytest.approx(logsumexp(joint, axis=1).sum(), rel=1e-10)
    # converged M-step: each class mean is the posterior-weighted mean of the contexts
    r = fit.posterior
    np.testing.assert_allclose(fit.context_means, (r.T @ context) / r.sum(0)[:, None], atol=1e-6)
    spread = sum(r[u, k] * np.sum((context[u] - fit.context_means[k]) ** 2)
                 for u in range(len(truth)) for k in range(3))
    assert fit.context_var == pytest.approx(spread / context.size, rel=1e-6)
    n_params = 3 * 4 + 2 + 3 * 5 + 1
    assert fit.bic == pytest.approx(-2 * fit.loglik + n_params * np.log(len(X)))


def test_bad_context_is_named():
    X, users, _, context = planted_with_context()
    with pytest.raises(ValueError, match=r"index the 3 context rows"):
        fit_bt_mixture(X, users, 2, context=context[:3])
    bad = context.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="context must be a finite"):
        fit_bt_mixture(X, users, 2, context=bad)
