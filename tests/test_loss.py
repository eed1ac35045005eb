"""Policy loss on hand-computable cases: clipping, KL, masks, aggregation."""

import math

import numpy as np
import pytest
import torch

from pgrpo.loss import aggregate, kl_k3, policy_loss


def test_k3_by_hand_and_nonnegative():
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.0, -1.0, -3.0])
    want = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp.tolist(), ref.tolist())]
    np.testing.assert_allclose(kl_k3(logp, ref).numpy(), want, rtol=1e-6)
    assert kl_k3(logp, ref)[0].item() == 0.0
    x = torch.randn(1000, dtype=torch.float64)
    assert (kl_k3(x, torch.randn(1000, dtype=torch.float64)) >= 0).all()


# Two sequences of lengths 3 and 1 (T = 4).
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 50.0, 60.0, 70.0]])
M = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("agg, want", [
    ("grpo", ((1 + 2 + 3) / 3 + 4 / 1) / 2),   # mean per sequence, then over sequences
    ("bnpo", (1 + 2 + 3 + 4) / 4),             # mean over the batch's tokens
    ("dr_grpo", (1 + 2 + 3 + 4) / (2 * 4)),    # sum / (sequences * max length)
    ("dapo", (1 + 2 + 3 + 4) / 4),             # sum / global tokens (default: this batch)
])
def test_aggregation_by_hand(agg, want):
    assert aggregate(X, M, agg).item() == pytest.approx(want)


def test_aggregation_totals_override_the_local_batch():
    assert aggregate(X, M, "dapo", num_tokens=10).item() == pytest.approx(10 / 10)
    assert aggregate(X, M, "dr_grpo", num_sequences=4, max_completion_length=5).item() == pytest.approx(10 / 20)
    assert aggregate(X, M, "grpo", num_sequences=4).item() == pytest.approx(6 / 4)
    assert aggregate(X, M, "bnpo", num_sequences=4).item() == pytest.approx(10 / 4 * 2 / 4)
    with pytest.raises(ValueError, match="loss aggregation"):
        aggregate(X, M, "sum")


@pytest.mark.parametrize("agg", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_with_full_batch_totals_sum_to_the_full_loss(agg):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3, 2, 4, 5])
    m = (torch.arange(5)[None] < lengths[:, None]).long()
    full = aggregate(x, m, agg)
    kw = dict(num_sequences=6, num_tokens=float(m.sum()), max_completion_length=5)
    parts = sum(aggregate(x[i:i + 2], m[i:i + 2], agg, **kw) for i in range(0, 6, 2))
    assert parts.item() == pytest.approx(full.item(), rel=1e-12)


def test_bnpo_micro_batches_average_their_token_means():
    x = torch.tensor([[1.0, 3.0], [5.0, 0.0], [2.0, 2.0], [8.0, 0.0]])
    m = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0]])
    parts = aggregate(x[:2], m[:2], "bnpo", num_sequences=4) + aggregate(x[2:], m[2:], "bnpo", num_sequences=4)
    assert parts.item() == pytest.approx(((1 + 3 + 5) / 3 + (2 + 2 + 8) / 3) / 2)


def test_on_policy_loss_is_minus_mean_advantage_with_per_token_gradients():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-0.3, -7.0, -7.0, -7.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss, stats = policy_loss(logp, logp.detach(), adv, M)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)
    loss.backward()
    want = torch.tensor([[-2 / 3 / 2] * 3 + [0.0], [1 / 1 / 2, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, want)
    assert stats["ratio"].item() == pytest.approx(1.0)
    assert stats["clip_frac/region"].item() == 0.0 and stats["kl"].item() == 0.0


def test_asymmetric_clipping_by_hand():
    # tokens: ratio 1.5 with A=+1 (clipped high), ratio 0.5 with A=-1 (clipped low),
    # ratio 1.1 with A=+1 (inside the region).
    ratios = torch.tensor([[1.5], [0.5], [1.1]])
    old = torch.zeros(3, 1)
    logp = torch.log(ratios).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0])
    mask = torch.ones(3, 1)
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, agg="dapo")
    assert loss.item() == pytest.approx((-1.28 + 0.8 - 1.1) / 3)
    loss.backward()
    grad = logp.grad.flatten()
    assert grad[0].item() == 0.0 and grad[1].item() == 0.0  # clipped: no gradient
    assert grad[2].item() == pytest.approx(-1.1 / 3)  # d(-ratio*A)/dlogp = -ratio*A
    assert stats["clip_frac/high"].item() == pytest.approx(1 / 3)
    assert stats["clip_frac/low"].item() == pytest.approx(1 / 3)
    assert stats["clip_frac/region"].item() == pytest.approx(2 / 3)


def test_kl_term_is_added_with_weight_beta():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    adv = torch.tensor([0.5])
    mask = torch.ones(1, 2)
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    loss, stats = policy_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.1)
    assert loss.item() == pytest.approx(-0.5 + 0.1 * sum(k3) / 2)
    assert stats["kl"].item() == pytest.approx(sum(k3) / 2)
    no_beta, stats0 = policy_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.0)
    assert no_beta.item() == pytest.approx(-0.5) and stats0["kl"].item() == pytest.approx(sum(k3) / 2)
    with pytest.raises(ValueError, match="beta > 0 needs ref_logp"):
        policy_loss(logp, logp, adv, mask, beta=0.1)


def test_masked_tokens_change_neither_loss_nor_gradient():
    logp = torch.tensor([[-1.0, -2.0, 50.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.5, -80.0]])  # huge ratio on the masked token
    mask = torch.tensor([[1, 1, 0]])
    loss, _ = policy_loss(logp, old, torch.tensor([1.0]), mask)
    loss.backward()
    assert logp.grad[0, 2].item() == 0.0
    ref, _ = policy_loss(logp[:, :2].detach(), old[:, :2], torch.tensor([1.0]), mask[:, :2])
    assert loss.item() == pytest.approx(ref.item())
    logp.grad = None
    ref_logp = torch.tensor([[-1.0, -2.0, 200.0]])  # k3 would overflow on the masked token
    with_kl, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, ref_logp=ref_logp, beta=0.1)
    with_kl.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 2].item() == 0.0
    assert with_kl.item() == pytest.approx(loss.item()) and stats["kl"].item() == 0.0


def test_off_policy_ratio_is_used_when_old_logp_differs():
    logp = torch.tensor([[-1.0, -1.0]])
    old = torch.tensor([[-1.1, -0.95]])  # ratios e^0.1, e^-0.05, both inside the clip range
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    want = -(math.exp(0.1) + math.exp(-0.05)) / 2
    assert loss.item() == pytest.approx(want)
    assert stats["ratio"].item() == pytest.approx(-want)


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="same \\[B, T\\] shape"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="advantages must be \\[B\\]=2"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
