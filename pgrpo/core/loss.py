"""The GRPO-family policy loss: clipped surrogate, k3 KL, loss aggregation.

Pure tensor functions over [B, T] completion tokens with a 0/1 mask. Per token:

    ratio  = exp(logp - old_logp)                      (1 when num_iterations == 1)
    l_it   = -min(ratio * A_i, clip(ratio, 1 - eps_low, 1 + eps_high) * A_i)
           + beta * k3(logp, ref_logp)                  (KL to a frozen reference)

Aggregation over tokens (`agg`), following the papers that introduced each:
    grpo     mean over each sequence's tokens, then over sequences (DeepSeekMath)
    bnpo     mean over the tokens of each forward batch
    dr_grpo  sum over tokens / (sequences * max completion length)  (Dr. GRPO)
    dapo     sum over tokens / tokens in the whole global batch      (DAPO)

Gradient accumulation is exact: pass the totals of the whole accumulated (and,
for dapo, all-process) batch as `num_sequences` / `num_tokens`, and the sum of
the micro-batch losses equals the loss of the full batch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossAggregation = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || ref) (Schulman 2020): unbiased, always >= 0."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    agg: LossAggregation,
    *,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_completion_length: int | None = None,
) -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar; see the module docstring.

    num_sequences: sequences in the whole accumulated batch (default B).
    num_tokens: dapo only, tokens in the global batch (default this mask's sum).
    max_completion_length: dr_grpo only (default T).
    """
    mask = mask.to(per_token.dtype)
    rows = per_token.shape[0]
    n_seq = rows if num_sequences is None else num_sequences
    masked = per_token * mask
    if agg == "grpo":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / n_seq
    if agg == "bnpo":
        # Token mean of this forward batch, weighted by its share of the sequences
        # so that micro-batches average like the full batch would.
        return masked.sum() / mask.sum().clamp(min=1.0) * (rows / n_seq)
    if agg == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return masked.sum() / (n_seq * length)
    if agg == "dapo":
        tokens = mask.sum().clamp(min=1.0) if num_tokens is None else num_tokens
        return masked.sum() / tokens
    raise ValueError(f"loss aggregation must be one of grpo, bnpo, dr_grpo, dapo; got {agg!r}")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    agg: LossAggregation = "grpo",
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_completion_length: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped-surrogate loss with optional k3 KL penalty.

    logp, old_logp, ref_logp, mask: [B, T]; advantages: [B] (one per sequence).
    Returns the scalar loss and detached diagnostics (masked token means):
    kl, clip_frac/low, clip_frac/high, clip_frac/region, ratio.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
            f"{tuple(mask.shape)} must have the same [B, T] shape"
        )
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp {tuple(ref_logp.shape)} must have logp's shape {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp.shape[0]}, got {tuple(advantages.shape)}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (log-probs under the frozen reference)")
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    # Masked positions (padding after EOS) get log-ratio 0 before the exp: their
    # values are arbitrary, and an overflow there would turn the gradient into
    # NaN even though the mask zeroes their loss (inf * 0).
    valid = mask.bool()
    ratio = torch.exp((logp - old_logp).masked_fill(~valid, 0.0))
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = kl_k3(logp, torch.where(valid, ref_logp, logp)) if ref_logp is not None else None
    if kl is not None and beta > 0:
        per_token = per_token + beta * kl
    loss = aggregate(
        per_token,
        mask,
        agg,
        num_sequences=num_sequences,
        num_tokens=num_tokens,
        max_completion_length=max_completion_length,
    )
    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)  # clipped from below: pushes would go on
        high = (ratio > 1 + eps_high) & (adv > 0)
        stats = {
            "kl": masked_mean(kl, mask) if kl is not None else torch.zeros((), device=logp.device),
            "clip_frac/low": masked_mean(low.to(logp.dtype), mask),
            "clip_frac/high": masked_mean(high.to(logp.dtype), mask),
            "clip_frac/region": masked_mean((low | high).to(logp.dtype), mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, {k: v.detach() for k, v in stats.items()}
