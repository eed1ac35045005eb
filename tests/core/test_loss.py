"""Policy loss on hand-computable cases: k3 KL, aggregation, clipping, masks, gradients.

Expected values are written out by hand or with explicit numpy/python loops, never by
calling another function of pgrpo.core.loss.
"""

import math

import numpy as np
import pytest
import torch

from pgrpo.core.loss import aggregate, kl_k3, policy_loss


def test_k3_by_hand_zero_when_equal_and_nonnegative():
    """k3 = exp(ref - logp) - (ref - logp) - 1 (argument order matters)."""
    logp, ref = [-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -3.0, -0.5]
    want = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp, ref)]
    got = kl_k3(torch.tensor(logp, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert got[0].item() == 0.0
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1000, generator=gen, dtype=torch.float64) * 3
    assert (kl_k3(x, y) >= 0).all()


# Two sequences of lengths 3 and 1 (T = 4); masked entries hold junk.
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 50.0, 60.0, 70.0]])
M = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("agg, kw, want", [
    ("grpo", {}, ((1 + 2 + 3) / 3 + 4 / 1) / 2),        # mean per sequence, then / B
    ("bnpo", {}, (1 + 2 + 3 + 4) / 4),                  # token mean of the batch
    ("dr_grpo", {}, (1 + 2 + 3 + 4) / (2 * 4)),         # sum / (B * T)
    ("dapo", {}, (1 + 2 + 3 + 4) / 4),                  # sum / tokens (this batch)
    ("grpo", {"num_sequences": 4}, (2 + 4) / 4),
    ("bnpo", {"num_sequences": 4}, 10 / 4 * (2 / 4)),
    ("dr_grpo", {"num_sequences": 4, "max_completion_length": 5}, 10 / (4 * 5)),
    ("dapo", {"num_tokens": 10}, 10 / 10),
])
def test_aggregation_by_hand(agg, kw, want):
    assert aggregate(X, M, agg, **kw).item() == pytest.approx(want, rel=1e-6)


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="sum"):
        aggregate(X, M, "sum")


def _batch(seed=0, rows=7, T=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, T, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 2, 4, 6, 5])[:rows]
    return x, (torch.arange(T)[None] < lengths[:, None]).long()


SPLITS = [[7], [2, 2, 3], [1, 4, 2], [3, 1, 1, 2]]


@pytest.mark.parametrize("sizes", SPLITS, ids=str)
@pytest.mark.parametrize("agg", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_with_full_batch_totals_sum_to_the_full_loss(agg, sizes):
    """Gradient accumulation is exact when the full batch's totals are passed."""
    x, m = _batch()
    full = aggregate(x, m, agg)
    kw = dict(num_sequences=7, num_tokens=float(m.sum()), max_completion_length=6)
    starts = np.cumsum([0] + sizes)
    parts = sum(aggregate(x[a:b], m[a:b], agg, **kw).item() for a, b in zip(starts, starts[1:]))
    assert parts == pytest.approx(full.item(), rel=1e-12)


@pytest.mark.parametrize("sizes", SPLITS, ids=str)
def test_bnpo_micro_batches_are_row_weighted_token_means(sizes):
    """bnpo over micro-batches = sum_k (rows_k / B) * (token mean of micro-batch k)."""
    x, m = _batch(1)
    xn, mn = x.numpy(), m.numpy()
    starts = np.cumsum([0] + sizes)
    want = got = 0.0
    for a, b in zip(starts, starts[1:]):
        tokens = [xn[i, t] for i in range(a, b) for t in range(6) if mn[i, t]]
        want += (b - a) / 7 * (sum(tokens) / len(tokens))
        got += aggregate(x[a:b], m[a:b], "bnpo", num_sequences=7).item()
    assert got == pytest.approx(want, rel=1e-12)


# [B=2, T=4]: lengths 3 and 1, masked log-probs are junk.
LOGP = [[-1.0, -2.0, -0.5, -9.0], [-0.3, -7.0, -7.0, -7.0]]
ADV = [2.0, -1.0]


@pytest.mark.parametrize("agg, token_weight", [
    ("grpo", lambda i: 1 / [3, 1][i] / 2),   # 1 / |o_i| / B
    ("bnpo", lambda i: 1 / 4),                # 1 / tokens in the batch
    ("dr_grpo", lambda i: 1 / (2 * 4)),       # 1 / (B * T)
    ("dapo", lambda i: 1 / 4),                # 1 / tokens in the global batch
])
def test_on_policy_loss_and_gradient(agg, token_weight):
    """ratio == 1: loss = -sum A_i w_i |o_i|, d loss / d logp_it = -A_i w_i, 0 where masked."""
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=True)
    loss, stats = policy_loss(logp, logp.detach(), torch.tensor(ADV, dtype=torch.float64), M, agg=agg)
    want_loss = -sum(ADV[i] * token_weight(i) * [3, 1][i] for i in range(2))
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    loss.backward()
    want_grad = [[-ADV[i] * token_weight(i) * M[i, t].item() for t in range(4)] for i in range(2)]
    np.testing.assert_allclose(logp.grad.numpy(), want_grad, rtol=1e-12, atol=0)
    assert stats["ratio"].item() == pytest.approx(1.0)
    assert stats["clip_frac/region"].item() == 0.0 and stats["kl"].item() == 0.0


def test_on_policy_grpo_loss_is_minus_the_mean_advantage():
    adv = torch.tensor([0.5, -2.0, 1.25])
    logp = torch.randn(3, 5, generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    loss, _ = policy_loss(logp, logp, adv, mask)
    assert loss.item() == pytest.approx(-(0.5 - 2.0 + 1.25) / 3, rel=1e-6)


# ratio, A, contribution to the loss (-min(r A, clip(r) A)), gradient d/dlogp, low, high
# with eps_low = 0.2, eps_high = 0.28: the trust region is [0.8, 1.28].
CLIP_CASES = [
    (1.5, 1.0, -1.28, 0.0, 0, 1),   # above the region, A > 0: clipped high, no gradient
    (0.5, -1.0, 0.8, 0.0, 1, 0),    # below the region, A < 0: clipped low, no gradient
    (1.1, 1.0, -1.1, -1.1, 0, 0),   # inside: d(-r A)/dlogp = -r A
    (1.1, -1.0, 1.1, 1.1, 0, 0),
    (1.25, 1.0, -1.25, -1.25, 0, 0),  # inside only because eps_high (0.28) > eps_low
    (0.75, -1.0, 0.8, 0.0, 1, 0),   # 0.75 < 1 - eps_low: clipped low
    (0.5, 2.0, -1.0, -1.0, 0, 0),   # below but A > 0: min keeps r A, gradient flows
    (1.5, -2.0, 3.0, 3.0, 0, 0),    # above but A < 0: pessimistic r A, gradient flows
]


@pytest.mark.parametrize("ratio, adv, contrib, grad, low, high", CLIP_CASES)
def test_asymmetric_clipping_single_token(ratio, adv, contrib, grad, low, high):
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    loss, stats = policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64),
                              torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1),
                              eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx(contrib, rel=1e-12)
    loss.backward()
    assert logp.grad.item() == pytest.approx(grad, rel=1e-12, abs=0)
    assert (stats["clip_frac/low"].item(), stats["clip_frac/high"].item()) == (low, high)
    assert stats["clip_frac/region"].item() == max(low, high)
    assert stats["ratio"].item() == pytest.approx(ratio, rel=1e-12)


def test_clip_fractions_are_masked_token_means():
    """One sequence holding every case above plus one masked, clipped-looking token."""
    ratios = [c[0] for c in CLIP_CASES] + [3.0]
    mask = torch.tensor([[1] * len(CLIP_CASES) + [0]])
    logp = torch.log(torch.tensor([ratios], dtype=torch.float64))
    # one advantage per sequence: use A = +1 everywhere, so only ratio > 1.28 clips (high)
    _, stats = policy_loss(logp, torch.zeros_like(logp), torch.tensor([1.0], dtype=torch.float64),
                           mask, eps_low=0.2, eps_high=0.28)
    n = len(CLIP_CASES)
    high = sum(r > 1.28 for r in ratios[:n])
    assert stats["clip_frac/high"].item() == pytest.approx(high / n)
    assert stats["clip_frac/low"].item() == 0.0
    assert stats["clip_frac/region"].item() == pytest.approx(high / n)
    assert stats["ratio"].item() == pytest.approx(sum(ratios[:n]) / n, rel=1e-12)
    _, neg = policy_loss(logp, torch.zeros_like(logp), torch.tensor([-1.0], dtype=torch.float64),
                         mask, eps_low=0.2, eps_high=0.28)
    low = sum(r < 0.8 for r in ratios[:n])
    assert neg["clip_frac/low"].item() == pytest.approx(low / n) and neg["clip_frac/high"].item() == 0.0


def test_kl_term_is_added_with_weight_beta():
    """loss = -A + beta * mean_t k3 on-policy; gradient gets beta * (1 - exp(ref - logp)) / T."""
    lp, rf = [-1.0, -2.0], [-1.5, -1.0]
    logp = torch.tensor([lp], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([rf], dtype=torch.float64)
    adv, mask = torch.tensor([0.5], dtype=torch.float64), torch.ones(1, 2)
    k3 = [math.exp(r - p) - (r - p) - 1 for p, r in zip(lp, rf)]
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.1)
    assert loss.item() == pytest.approx(-0.5 + 0.1 * sum(k3) / 2, rel=1e-12)
    assert stats["kl"].item() == pytest.approx(sum(k3) / 2, rel=1e-12)
    loss.backward()
    want = [(-0.5 + 0.1 * (1 - math.exp(r - p))) / 2 for p, r in zip(lp, rf)]
    np.testing.assert_allclose(logp.grad.numpy()[0], want, rtol=1e-12)
    # beta = 0: no KL in the loss, but still reported; no reference: kl reported as 0.
    no_beta, stats0 = policy_loss(logp, logp.detach(), adv, mask, ref_logp=ref, beta=0.0)
    assert no_beta.item() == pytest.approx(-0.5) and stats0["kl"].item() == pytest.approx(sum(k3) / 2)
    assert policy_loss(logp, logp.detach(), adv, mask)[1]["kl"].item() == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp.detach(), adv, mask, beta=0.1)


@pytest.mark.parametrize("agg", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_masked_tokens_change_neither_loss_nor_gradient(agg):
    """Junk in masked positions (huge ratio, huge KL) must not leak, not even as NaN."""
    logp = torch.tensor([[-1.0, -2.0, 50.0], [-0.5, 80.0, -90.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.5, -80.0], [-0.7, -90.0, 60.0]])
    ref = torch.tensor([[-1.2, -2.0, 200.0], [-0.5, -300.0, 300.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -0.5])
    loss, stats = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, agg=agg,
                              max_completion_length=3)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[mask == 0] == 0).all()
    clean = lambda t, fill: torch.where(mask.bool(), t.detach(), torch.full_like(t, fill))  # noqa: E731
    logp2 = clean(logp, -1.0).requires_grad_(True)
    loss2, stats2 = policy_loss(logp2, clean(old, -1.0), adv, mask, ref_logp=clean(ref, -1.0),
                                beta=0.1, agg=agg, max_completion_length=3)
    loss2.backward()
    assert loss.item() == pytest.approx(loss2.item(), rel=1e-6)
    np.testing.assert_allclose(logp.grad.numpy(), logp2.grad.numpy(), rtol=1e-6, atol=1e-9)
    for key in stats:
        assert stats[key].item() == pytest.approx(stats2[key].item(), rel=1e-6), key


def test_off_policy_ratio_is_used_when_old_logp_differs():
    """num_iterations > 1: loss = -mean_t(ratio) * A, gradient -ratio * A / T."""
    logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.1, -0.95]], dtype=torch.float64)  # ratios e^0.1, e^-0.05
    adv = torch.tensor([1.5], dtype=torch.float64)
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 2))
    ratios = [math.exp(0.1), math.exp(-0.05)]
    assert loss.item() == pytest.approx(-1.5 * sum(ratios) / 2, rel=1e-12)
    assert loss.item() != pytest.approx(-1.5)  # the on-policy value
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy()[0], [-1.5 * r / 2 for r in ratios], rtol=1e-12)
    assert stats["ratio"].item() == pytest.approx(sum(ratios) / 2, rel=1e-12)


@pytest.mark.parametrize("shapes", [
    dict(old=(2, 2)), dict(mask=(2, 4)), dict(adv=(3,)), dict(adv=(2, 1)),
    dict(ref=(2, 2)), dict(ref=(2, 1)),
], ids=lambda d: "-".join(f"{k}{list(v)}" for k, v in d.items()))
def test_shape_mismatches_raise_value_error(shapes):
    s = dict(old=(2, 3), mask=(2, 3), adv=(2,), ref=(2, 3)) | shapes
    with pytest.raises(ValueError):
        policy_loss(torch.zeros(2, 3), torch.zeros(s["old"]), torch.zeros(s["adv"]), torch.ones(s["mask"]),
                    ref_logp=torch.zeros(s["ref"]), beta=0.1)


@pytest.mark.parametrize("agg,kw", [("grpo", {}), ("dr_grpo", {}), ("dapo", {"num_tokens": 10.0})])
def test_a_constant_advantage_has_zero_expected_gradient_only_without_per_sequence_means(agg, kw):
    """Corollary 3.1's offset (mu_G - mu_p) / sigma_p is one constant c for all of a prompt's
    samples; DESIGN.md reads it as zero in expectation. Exactly: over every sequence a policy
    can write, weighted by its probability, the loss gradient of advantage c is zero when every
    token weighs the same fixed amount (dr_grpo: 1 / the cap; dapo: 1 / the batch's token
    count, fixed here; in a real batch that count moves a little with each sequence, O(1/B)),
    but not under grpo's per-sequence mean, where a sequence weighs 1/|y|: the gradient is
    -c * d E[1/|y|] / d theta, a pull on length of sign c. (bnpo's token mean over a batch of
    one sequence is grpo's; over many it is dapo's up to the same O(1/B).)

    The policy writes 'a' or EOS at each of 3 positions with its own logit theta_t (EOS ends
    it): sequences EOS, a EOS, a a EOS and a a a (cut at the cap), lengths 1, 2, 3, 3."""
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    c, cap = 0.7, 3
    total = torch.zeros(3, dtype=torch.float64)
    expected_inv_len = 0.0
    for n_a in range(cap + 1):  # n_a tokens 'a', then EOS unless at the cap
        length = min(n_a + 1, cap)
        p_a = torch.sigmoid(theta)  # P('a') at each position
        logp = torch.stack([torch.log(p_a[t]) if t < n_a else torch.log1p(-p_a[t])
                            for t in range(length)])
        prob = float(logp.detach().sum().exp())
        row = torch.zeros(1, cap, dtype=torch.float64)
        row[0, :length] = logp
        mask = torch.zeros(1, cap)
        mask[0, :length] = 1
        loss, _ = policy_loss(row, row.detach(), torch.tensor([c], dtype=torch.float64), mask,
                              agg=agg, max_completion_length=cap, **kw)
        (grad,) = torch.autograd.grad(loss, theta)
        total += prob * grad  # the sampling distribution weighs each sequence's gradient
        expected_inv_len += prob / length
    if agg == "grpo":
        # -c * d/dtheta E[1/|y|], E[1/|y|] written out from the same probabilities
        q = torch.sigmoid(theta)
        e_inv = ((1 - q[0]) / 1 + q[0] * (1 - q[1]) / 2 + q[0] * q[1] * (1 - q[2]) / 3
                 + q[0] * q[1] * q[2] / 3)
        assert float(e_inv.detach()) == pytest.approx(expected_inv_len)
        (want,) = torch.autograd.grad(-c * e_inv, theta)
        np.testing.assert_allclose(total.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
        assert total.abs().max() > 1e-2  # not zero: a length pull
    else:
        np.testing.assert_allclose(total.numpy(), 0.0, atol=1e-12)
