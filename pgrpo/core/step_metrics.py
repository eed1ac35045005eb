"""Per-step training metrics (namespaced `train/...`), computed from the global batch.

Per preference group g (by name): `train/reward/<g>` (batch mean reward),
`train/batch_count/<g>`, and the running statistics P-GRPO normalizes with:
`train/group_mu/<g>`, `train/group_sigma/<g>`, `train/group_count/<g>`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgrpo.core.advantages import GroupRewardStats, prompt_contrast


def group_metrics(rewards: Tensor, prompt_ids: Tensor, group_ids: Tensor, adv: Tensor, finite: Tensor,
                  stats: GroupRewardStats, group_names: list[str]) -> dict[str, float]:
    r, q, p, a = rewards[finite].double(), prompt_ids[finite], group_ids[finite], adv[finite].double()
    m: dict[str, float] = {
        "train/reward": r.mean().item() if len(r) else float("nan"),
        "train/reward_std": r.std().item() if len(r) > 1 else 0.0,
        "train/adv_mean": a.mean().item() if len(a) else 0.0,
        "train/adv_std": a.std().item() if len(a) > 1 else 0.0,
        "train/nan_rewards": float((~finite).sum()),
    }
    # Prompts whose completions all scored the same: GRPO gives them no signal.
    uniq, contrast = prompt_contrast(r, q)
    m["train/zero_std_frac"] = (~contrast).double().mean().item() if len(uniq) else 0.0
    for gid in torch.unique(p).tolist():
        sel = p == gid
        m[f"train/reward/{group_names[gid]}"] = r[sel].mean().item()
        m[f"train/batch_count/{group_names[gid]}"] = float(sel.sum())
    ids = stats.ids
    for gid, mu, sigma, n in zip(ids.tolist(), stats.mean(ids).tolist(), stats.std(ids).tolist(),
                                 stats.count(ids).tolist()):
        name = group_names[gid]
        m[f"train/group_mu/{name}"], m[f"train/group_sigma/{name}"] = mu, sigma
        m[f"train/group_count/{name}"] = n
    return m


def rollout_metrics(rollout, eos_ids: list[int], acc) -> dict[str, float]:
    """Completion lengths and truncation over all processes."""
    lengths = acc.gather(rollout.lengths.float()).cpu()
    truncated = acc.gather(rollout.truncated(eos_ids).float()).cpu()
    return {
        "train/completion_len/mean": lengths.mean().item(),
        "train/completion_len/min": lengths.min().item(),
        "train/completion_len/max": lengths.max().item(),
        "train/truncated_frac": truncated.mean().item(),
        "train/completion_tokens": lengths.sum().item(),
    }
