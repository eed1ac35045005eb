"""Advantage estimators for the GRPO family: pure tensor-in, tensor-out functions.

GRPO normalizes each reward against the completions sampled for the same prompt.
P-GRPO (Wang et al., Apple 2026, arXiv 2603.10009) normalizes it against the
running reward history of the sample's *preference group* instead:

    A_i = (R_i - mu_p(i)) / (sigma_p(i) + eps)

`GroupRewardStats` holds (n_p, mu_p, M2_p) per group, merged batch by batch with
Chan's parallel formula (O(1) memory, numerically stable). Order: the batch is
merged into the history first, then normalized (DESIGN.md section 1).

A new estimator is one function registered with `@register_advantage("name")`
taking `(rewards, prompt_ids, group_ids, stats, cfg)`; see those at the bottom
(grpo, pgrpo, and pgrpo_scale: beyond the paper, P-GRPO's scale without its offset).

    >>> r = torch.tensor([1.0, 0.0, 1.0, 1.0]); q = torch.tensor([0, 0, 1, 1])
    >>> grpo_advantages(r, q)          # prompt 1 has zero variance: advantage 0
    tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

Scale = Literal["group", "batch", "none"]


def check_finite(rewards: Tensor, *context: tuple[str, Tensor]) -> None:
    """Raise a ValueError naming how many rewards are NaN/inf and where.

    `context` pairs (name, tensor aligned with rewards), e.g. ("prompt_ids", q),
    are quoted for the offending positions so the caller can find the samples.
    """
    bad = ~torch.isfinite(rewards)
    if not bad.any():
        return
    where = bad.nonzero().flatten()
    shown = where[:10].tolist()
    more = f" (first 10 of {len(where)})" if len(where) > 10 else ""
    details = "".join(f"; {name} {t[where[:10]].tolist()}" for name, t in context)
    raise ValueError(
        f"{len(where)} of {rewards.numel()} rewards are NaN or infinite, at positions "
        f"{shown}{more}{details}. Fix the reward function, or set nan_rewards='drop' "
        f"in the trainer to discard those samples."
    )


def _check_aligned(rewards: Tensor, **ids: Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor [N], got shape {tuple(rewards.shape)}")
    for name, t in ids.items():
        if t.shape != rewards.shape:
            raise ValueError(
                f"{name} must be aligned with rewards: shape {tuple(t.shape)} != "
                f"{tuple(rewards.shape)}"
            )
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be int64 ids, got {t.dtype}")


def _segment_moments(values: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-id (unique ids, inverse index, count, mean, M2) in float64, two-pass."""
    uniq, inverse, counts = torch.unique(ids, sorted=True, return_inverse=True, return_counts=True)
    v = values.to(torch.float64)
    n = counts.to(torch.float64)
    mean = torch.zeros_like(n).index_add_(0, inverse, v) / n
    m2 = torch.zeros_like(n).index_add_(0, inverse, (v - mean[inverse]) ** 2)
    return uniq, inverse, n, mean, m2


def grpo_advantages(
    rewards: Tensor, prompt_ids: Tensor, scale: Scale = "group", eps: float = 1e-4
) -> Tensor:
    """GRPO advantages: reward minus the mean of its prompt's completions, scaled.

    scale="group": divide by the unbiased std of the prompt's completions (GRPO);
    "batch": by the unbiased std of the whole batch (centring stays per prompt);
    "none": no scaling (Dr. GRPO, arXiv 2503.20783). A prompt with a single
    completion has no contrast and gets advantage 0.
    """
    _check_aligned(rewards, prompt_ids=prompt_ids)
    check_finite(rewards, ("prompt_ids", prompt_ids))
    if rewards.numel() == 0:
        return rewards.clone()
    _, inverse, n, mean, m2 = _segment_moments(rewards, prompt_ids)
    centred = rewards.to(torch.float64) - mean[inverse]
    if scale == "group":
        std = (m2 / (n - 1).clamp(min=1)).sqrt()
        adv = centred / (std[inverse] + eps)
    elif scale == "batch":
        batch_std = rewards.to(torch.float64).std() if rewards.numel() > 1 else torch.tensor(0.0)
        adv = centred / (batch_std + eps)
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    # No contrast, no advantage: a lone completion, or a prompt whose rewards are
    # all equal (exactly 0, not rounding residue of the mean, and not 0/0 at eps=0).
    has_contrast = prompt_contrast(rewards, prompt_ids)[1]
    adv = torch.where(has_contrast[inverse], adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype)


def prompt_contrast(rewards: Tensor, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(sorted unique prompt ids, bool per prompt): has the prompt two completions whose
    rewards differ? Exact comparison of min and max, so equal rewards are never 'contrast'
    by rounding. Without it GRPO has nothing to learn from the prompt."""
    uniq, inverse = torch.unique(prompt_ids, return_inverse=True)
    v = rewards.to(torch.float64)
    lo = torch.full((len(uniq),), math.inf, dtype=torch.float64).scatter_reduce(0, inverse, v, "amin")
    hi = torch.full((len(uniq),), -math.inf, dtype=torch.float64).scatter_reduce(0, inverse, v, "amax")
    return uniq, hi > lo


class GroupRewardStats:
    """Running reward mean and variance per preference group (int64 ids).

    Groups may appear at any time. With `half_life` (in updates) older rewards
    are down-weighted by 0.5 ** (1 / half_life) per update, so mu_p follows a
    policy whose rewards rise; None keeps all history with equal weight. Under
    decay the counts are effective (fractional) sample sizes and the variance
    uses the frequency-weight correction M2 / (n - 1).

    `state_dict()` / `load_state_dict()` round-trip exactly, `merge()` combines
    trackers fed disjoint streams into the tracker of the concatenated stream.
    """

    def __init__(self, half_life: float | None = None):
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be positive or None, got {half_life}")
        self.half_life = half_life
        self.num_updates = 0
        self.ids = torch.empty(0, dtype=torch.int64)
        self._n = torch.empty(0, dtype=torch.float64)
        self._mean = torch.empty(0, dtype=torch.float64)
        self._m2 = torch.empty(0, dtype=torch.float64)

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{g}: n={n:.4g} mu={m:.4g} sigma={s:.4g}"
            for g, n, m, s in zip(
                self.ids.tolist(), self._n.tolist(), self._mean.tolist(), self.std(self.ids).tolist()
            )
        )
        return f"GroupRewardStats(half_life={self.half_life}, {{{groups}}})"

    def _merge_moments(self, ids: Tensor, n_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        """Chan et al. parallel merge of per-group moments (ids sorted, unique)."""
        all_ids = torch.unique(torch.cat([self.ids, ids]), sorted=True)
        n = torch.zeros(len(all_ids), dtype=torch.float64)
        mean, m2 = torch.zeros_like(n), torch.zeros_like(n)
        old = torch.searchsorted(all_ids, self.ids)
        n[old], mean[old], m2[old] = self._n, self._mean, self._m2
        new = torch.searchsorted(all_ids, ids)
        n_a, mean_a, m2_a = n[new], mean[new], m2[new]
        total = n_a + n_b
        delta = mean_b - mean_a
        mean[new] = mean_a + delta * (n_b / total)
        m2[new] = m2_a + m2_b + delta**2 * (n_a * n_b / total)
        n[new] = total
        self.ids, self._n, self._mean, self._m2 = all_ids, n, mean, m2

    def update(self, rewards: Tensor, group_ids: Tensor) -> None:
        """Merge one batch of rewards into the history of their groups."""
        _check_aligned(rewards, group_ids=group_ids)
        check_finite(rewards, ("group_ids", group_ids))
        if self.half_life is not None:
            keep = 0.5 ** (1.0 / self.half_life)
            self._n, self._m2 = self._n * keep, self._m2 * keep
        self.num_updates += 1
        if rewards.numel() == 0:
            return
        uniq, _, n_b, mean_b, m2_b = _segment_moments(rewards.detach().cpu(), group_ids.cpu())
        self._merge_moments(uniq, n_b, mean_b, m2_b)

    def merge(self, other: GroupRewardStats) -> GroupRewardStats:
        """Combine `other` (a tracker of a disjoint stream) into this one, in place.

        Exact without decay. With `half_life`, both trackers must have decayed over
        the same updates (processes fed in parallel, step by step): merge adds the
        moments as they stand and applies no further decay.
        """
        if other.half_life != self.half_life:
            raise ValueError(f"cannot merge trackers with half_life {self.half_life} and {other.half_life}")
        if len(other.ids):
            self._merge_moments(other.ids, other._n, other._mean, other._m2)
        self.num_updates = max(self.num_updates, other.num_updates)
        return self

    def _lookup(self, group_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Positions of group_ids in self.ids and whether each one is known."""
        group_ids = group_ids.cpu()
        if len(self.ids) == 0:
            return torch.zeros_like(group_ids), torch.zeros_like(group_ids, dtype=torch.bool)
        pos = torch.searchsorted(self.ids, group_ids).clamp(max=len(self.ids) - 1)
        return pos, self.ids[pos] == group_ids

    def count(self, group_ids: Tensor) -> Tensor:
        """Number of rewards seen per group (effective number under decay); 0 if unseen."""
        pos, known = self._lookup(group_ids)
        return torch.where(known, self._n[pos] if len(self.ids) else 0.0, 0.0).to(torch.float64)

    def mean(self, group_ids: Tensor) -> Tensor:
        """Running mean per group; NaN for a group with no history."""
        pos, known = self._lookup(group_ids)
        values = self._mean[pos] if len(self.ids) else torch.zeros(len(pos), dtype=torch.float64)
        return torch.where(known, values, math.nan)

    def std(self, group_ids: Tensor) -> Tensor:
        """Running unbiased std per group; 0 with one sample, NaN with no history."""
        pos, known = self._lookup(group_ids)
        if not len(self.ids):
            return torch.full((len(pos),), math.nan, dtype=torch.float64)
        n, m2 = self._n[pos], self._m2[pos]
        var = torch.where(n > 1, m2 / (n - 1).clamp(min=1e-12), 0.0).clamp(min=0.0)
        return torch.where(known, var.sqrt(), math.nan)

    def state_dict(self) -> dict:
        return {
            "ids": self.ids.clone(),
            "count": self._n.clone(),
            "mean": self._mean.clone(),
            "m2": self._m2.clone(),
            "half_life": self.half_life,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        ids = state["ids"].to(torch.int64)
        if not (len(ids) == len(state["count"]) == len(state["mean"]) == len(state["m2"])):
            raise ValueError("GroupRewardStats state has arrays of different lengths")
        self.half_life = state["half_life"]
        self.num_updates = int(state["num_updates"])
        self.ids = ids.clone()
        self._n = state["count"].to(torch.float64).clone()
        self._mean = state["mean"].to(torch.float64).clone()
        self._m2 = state["m2"].to(torch.float64).clone()


def _history_scaled(rewards: Tensor, prompt_ids: Tensor, group_ids: Tensor, stats: GroupRewardStats,
                    min_count: int, eps: float, centre: Literal["group", "prompt"]) -> Tensor:
    """Merge the batch into `stats`, then centre (group history or prompt mean) and divide by
    sigma_p + eps; groups below `min_count` get the GRPO prompt-group advantage."""
    _check_aligned(rewards, prompt_ids=prompt_ids, group_ids=group_ids)
    check_finite(rewards, ("prompt_ids", prompt_ids), ("group_ids", group_ids))
    if min_count < 2:
        raise ValueError(f"min_count must be >= 2 (a std needs two samples), got {min_count}")
    stats.update(rewards, group_ids)
    r, q = rewards.detach().cpu(), prompt_ids.cpu()
    if centre == "group":
        centred = r.to(torch.float64) - stats.mean(group_ids)
    else:  # R_i - its prompt's mean; exactly 0 for a prompt without contrast
        centred = grpo_advantages(r, q, "none", eps).to(torch.float64)
    sigma = stats.std(group_ids)
    # A group whose history has no spread has no contrast: exactly 0 (as GRPO's flat prompt),
    # not 0/0 at eps=0 nor rounding residue / eps.
    adv = torch.where(sigma > 0, centred / (sigma + eps), torch.zeros_like(centred))
    cold = stats.count(group_ids) < min_count
    if cold.any():
        adv = torch.where(cold, grpo_advantages(r, q, "group", eps).to(torch.float64), adv)
    return adv.to(device=rewards.device, dtype=rewards.dtype)


def pgrpo_advantages(
    rewards: Tensor,
    prompt_ids: Tensor,
    group_ids: Tensor,
    stats: GroupRewardStats,
    min_count: int = 2,
    eps: float = 1e-4,
) -> Tensor:
    """P-GRPO advantages: merge the batch into `stats`, then (R_i - mu_p) / (sigma_p + eps).

    Cold start: samples of a group whose history count is still below
    `min_count` get the GRPO prompt-group advantage instead.
    """
    return _history_scaled(rewards, prompt_ids, group_ids, stats, min_count, eps, "group")


def pgrpo_scale_advantages(
    rewards: Tensor,
    prompt_ids: Tensor,
    group_ids: Tensor,
    stats: GroupRewardStats,
    min_count: int = 2,
    eps: float = 1e-4,
) -> Tensor:
    """Beyond the paper: GRPO's per-prompt centring, P-GRPO's group-history scale.

        A_i = (R_i - mean_{j: q(j)=q(i)} R_j) / (sigma_p(i) + eps)

    Corollary 3.1 splits P-GRPO into a scale term (sigma_G / sigma_p) * Â_i and an
    offset (mu_G - mu_p) / sigma_p that is constant within a prompt: zero expected
    gradient, only variance (DESIGN.md section 1). This estimator keeps the scale term
    and drops the offset, to tell which of the two a gain (or a loss) comes from.
    Same rules as `pgrpo_advantages`: the batch is merged into `stats` first; a group
    whose count is below `min_count` falls back to the GRPO prompt-group advantage.
    A prompt with one completion, or with all rewards equal, gets 0 (no contrast).
    """
    return _history_scaled(rewards, prompt_ids, group_ids, stats, min_count, eps, "prompt")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class AdvantageConfig:
    scale: Scale = "group"  # GRPO scaling: group | batch | none (Dr. GRPO)
    eps: float = 1e-4  # added to the std, as TRL
    min_count: int = 2  # P-GRPO cold start: GRPO fallback below this many rewards


AdvantageFn = Callable[[Tensor, Tensor, Tensor, GroupRewardStats, AdvantageConfig], Tensor]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    def add(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return add


def get_advantage_fn(name: str) -> AdvantageFn:
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None


@register_advantage("grpo")
def _grpo(rewards, prompt_ids, group_ids, stats, cfg: AdvantageConfig) -> Tensor:
    # The group statistics are still tracked, so GRPO runs log the same per-group
    # mu/sigma as P-GRPO runs and the two can be compared side by side. Advantages
    # first: bad input raises before the statistics change.
    adv = grpo_advantages(rewards, prompt_ids, cfg.scale, cfg.eps)
    stats.update(rewards, group_ids)
    return adv


@register_advantage("pgrpo")
def _pgrpo(rewards, prompt_ids, group_ids, stats, cfg: AdvantageConfig) -> Tensor:
    return pgrpo_advantages(rewards, prompt_ids, group_ids, stats, cfg.min_count, cfg.eps)


@register_advantage("pgrpo_scale")
def _pgrpo_scale(rewards, prompt_ids, group_ids, stats, cfg: AdvantageConfig) -> Tensor:
    # Beyond the paper (see pgrpo_scale_advantages): P-GRPO's scale, GRPO's centring.
    return pgrpo_scale_advantages(rewards, prompt_ids, group_ids, stats, cfg.min_count, cfg.eps)
