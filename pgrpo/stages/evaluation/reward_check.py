"""The reward-signal check: can any estimator learn a group from this training reward?

Computed on the base policy's own samples of held-out prompts (several completions per
prompt), scored by the training reward and by the judge:

- `within_corr`: the mean, over a group's prompts, of the Spearman rank correlation
  between training reward and judge among the completions of one prompt. This is the
  contrast every GRPO-family estimator learns from; below WARN_BELOW (0.3) the reward
  ranks a prompt's completions close to randomly for that group, and no estimator can
  learn the group from it (a flat or mostly-tied prompt counts as 0: it teaches nothing).
- `between_share`: the share of the training reward's variance that lies between
  prompts (sum of squares of the prompt means over the total). GRPO subtracts each
  prompt's mean and never sees it; P-GRPO subtracts the group's running mean, so this
  part enters its advantage as a per-prompt offset (DESIGN.md, Corollary 3.1), adding
  variance and no expected gradient.
- `adv_corr/<estimator>`: the Spearman correlation, pooled over the group's samples,
  between the estimator's advantage (computed on the training reward, the P-GRPO
  history being these samples) and the judge's within-prompt contrast (judge minus its
  prompt's mean judge). What the estimator would push up, against what the user wants
  pushed up. Within one prompt every estimator ranks like the reward; pooled, the
  offset term of P-GRPO shows.

    from pgrpo.stages.evaluation.reward_check import reward_signal_check
    check = reward_signal_check(train_reward, judge, prompt_ids, group_ids, ["grpo", "pgrpo"])
    check["groups"]["emoji_fan"]["within_corr"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Below this within-prompt rank correlation a group cannot be learned from the reward.
WARN_BELOW = 0.3


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    uniq, inv = np.unique(x, return_inverse=True)
    if len(uniq) < len(x):  # average the ranks of tied values
        sums = np.bincount(inv, weights=ranks)
        ranks = (sums / np.bincount(inv))[inv]
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation; 0 when either side is constant (no ranking to agree with)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"spearman: {x.size} values against {y.size}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / math.sqrt((rx**2).sum() * (ry**2).sum()))


def within_prompt_corr(reward: np.ndarray, judge: np.ndarray, prompt_ids: np.ndarray) -> float:
    """Mean over prompts of the Spearman correlation of reward and judge within the prompt."""
    corrs = [spearman(reward[prompt_ids == q], judge[prompt_ids == q])
             for q in np.unique(prompt_ids)]
    return float(np.mean(corrs)) if corrs else math.nan


def between_prompt_share(values: np.ndarray, prompt_ids: np.ndarray) -> float:
    """SS between prompt means / SS total (0 when the values do not vary)."""
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    _, inv, counts = np.unique(prompt_ids, return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=values) / counts
    return float((counts * (means - values.mean()) ** 2).sum() / total)


def _prompt_centred(values: np.ndarray, prompt_ids: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(prompt_ids, return_inverse=True, return_counts=True)
    return values - (np.bincount(inv, weights=values) / counts)[inv]


def _advantages(estimator: str, reward: np.ndarray, prompt_ids: np.ndarray,
                group_ids: np.ndarray) -> np.ndarray:
    """The registered estimator's advantages, its history being exactly these samples."""
    import torch

    from pgrpo.core.advantages import AdvantageConfig, GroupRewardStats, get_advantage_fn

    _, q = np.unique(prompt_ids, return_inverse=True)
    adv = get_advantage_fn(estimator)(torch.as_tensor(reward, dtype=torch.float64),
                                      torch.as_tensor(q, dtype=torch.int64),
                                      torch.as_tensor(group_ids, dtype=torch.int64),
                                      GroupRewardStats(), AdvantageConfig())
    return adv.double().numpy()


def reward_signal_check(reward: Sequence[float], judge: Sequence[float],
                        prompt_ids: Sequence, group_ids: Sequence[int],
                        estimators: Sequence[str], group_names: Sequence[str] | None = None
                        ) -> dict:
    """Per group: within_corr, between_share, adv_corr/<estimator>, n_prompts, warn.

    reward / judge: [N] scores of the same samples; prompt_ids: [N] the prompt each sample
    answers; group_ids: [N] int group of each sample (index into group_names).
    """
    r, j = np.asarray(reward, dtype=np.float64), np.asarray(judge, dtype=np.float64)
    q, g = np.asarray(prompt_ids), np.asarray(group_ids, dtype=np.int64)
    if not (r.shape == j.shape == q.shape == g.shape) or r.ndim != 1:
        raise ValueError(f"reward_signal_check: reward {r.shape}, judge {j.shape}, prompt_ids "
                         f"{q.shape}, group_ids {g.shape} must be aligned 1-D arrays")
    for name, x in (("reward", r), ("judge", j)):
        if not np.isfinite(x).all():
            raise ValueError(f"reward_signal_check: {int((~np.isfinite(x)).sum())} {name} "
                             "values are NaN or infinite")
    names = list(group_names) if group_names is not None else [str(i) for i in range(g.max() + 1)]
    advs = {e: _advantages(e, r, q, g) for e in estimators}
    contrast = _prompt_centred(j, q)
    groups = {}
    for gid in np.unique(g):
        sel = g == gid
        within = within_prompt_corr(r[sel], j[sel], q[sel])
        groups[names[gid]] = {
            "within_corr": within,
            "between_share": between_prompt_share(r[sel], q[sel]),
            "judge_between_share": between_prompt_share(j[sel], q[sel]),
            **{f"adv_corr/{e}": spearman(a[sel], contrast[sel]) for e, a in advs.items()},
            "n_prompts": int(len(np.unique(q[sel]))),
            "warn": bool(within < WARN_BELOW),
        }
    return {"warn_below": WARN_BELOW, "estimators": list(estimators), "groups": groups}


def warnings(check: dict | None, reward_name: str) -> list[str]:
    """One sentence per group that the reward cannot teach (within_corr < warn_below)."""
    if not check:  # no judge to check against
        return []
    return [f"group {grp}: the training reward ({reward_name}) ranks a prompt's completions "
            f"like the judge only weakly (within-prompt rank correlation {v['within_corr']:.2f} "
            f"< {check['warn_below']}): no estimator can learn this group from this reward."
            for grp, v in check["groups"].items() if v["warn"]]
