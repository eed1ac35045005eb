"""Before any policy trains: do the groups disagree, and can the reward model learn each one?

Read off the trained reward model on held-out pairs (users the reward model never saw), by
scoring every held-out pair under *every* group's conditioning, not only its own:

    own accuracy     share of a group's held-out pairs its own head orders as its users did.
                     An interval that reaches 0.5 says the reward model cannot tell this
                     group's choices from chance: no estimator can serve the group through it.
    disagreement     own accuracy minus the mean accuracy under the other groups' heads. Above
                     0: the group chooses differently from the others, so conditioning on it
                     carries information (what P-GRPO's per-group baselines and the per-group
                     heads exist for). An interval around 0: the others' heads predict this
                     group as well as its own does: on this data it does not differ, or
                     its head, trained on its few pairs, is too noisy to show it (the
                     majority's head sees the most pairs; this is what the reward model can
                     use, not a test of the users' tastes).

Intervals: percentile bootstrap over the group's users (a user's pairs move together), seeded.

    from pgrpo.stages.reward.group_checks import cross_head_scores, group_checks
    chosen, rejected = cross_head_scores(model, pooled_chosen, pooled_rejected)   # [K, N] each
    checks = group_checks(chosen, rejected, pair_groups, pair_users, group_names)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

N_BOOT = 1000   # bootstrap resamples of each group's users
LEVEL = 0.95    # interval level


@torch.no_grad()
def cross_head_scores(model, pooled_chosen: torch.Tensor, pooled_rejected: torch.Tensor
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Rewards [K, N] of the N pairs' chosen and rejected responses under each of the
    reward model's K group conditionings (row k = group index k of model.group_map)."""
    k = len(model.group_map)
    n = pooled_chosen.shape[0]
    out = []
    for pooled in (pooled_chosen, pooled_rejected):
        rows = [model.reward_from_pooled(pooled, torch.full((n,), h, dtype=torch.long,
                                                            device=pooled.device))
                for h in range(k)]
        out.append(torch.stack(rows).float().cpu().numpy())
    return out[0], out[1]


def group_checks(r_chosen: np.ndarray, r_rejected: np.ndarray, pair_groups: Sequence[int],
                 pair_users: Sequence[str], group_names: Sequence[str], n_boot: int = N_BOOT,
                 level: float = LEVEL, seed: int = 0) -> dict[str, dict]:
    """Per group (by name): own accuracy, the other heads' mean accuracy, their difference,
    each with a bootstrap interval over the group's users, and the pair and user counts.

    r_chosen / r_rejected: [K, N] rewards under each head (cross_head_scores); pair_groups:
    the head index of each pair's own group; ties count half, as pairwise accuracy does."""
    r_chosen, r_rejected = np.asarray(r_chosen, float), np.asarray(r_rejected, float)
    k, n = r_chosen.shape
    groups, users = np.asarray(pair_groups), np.asarray(pair_users).astype(str)
    if r_rejected.shape != (k, n) or groups.shape != (n,) or users.shape != (n,):
        raise ValueError(f"group_checks: rewards {r_chosen.shape} / {r_rejected.shape}, "
                         f"{groups.shape[0]} group ids and {users.shape[0]} users do not match")
    if k != len(group_names):
        raise ValueError(f"group_checks: {k} heads for {len(group_names)} group names")
    correct = (r_chosen > r_rejected) + 0.5 * (r_chosen == r_rejected)  # [K, N]
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    out: dict[str, dict] = {}
    for g, name in enumerate(group_names):
        rows = np.flatnonzero(groups == g)
        if not len(rows):
            continue
        own = correct[g, rows]
        others = (np.delete(correct[:, rows], g, axis=0).mean(0) if k > 1
                  else np.full(len(rows), np.nan))
        # per user: sums and counts, so a resample of users weighs each pair once
        ids, inverse = np.unique(users[rows], return_inverse=True)
        count = np.bincount(inverse).astype(float)
        own_sum = np.bincount(inverse, own)
        other_sum = np.bincount(inverse, others)
        draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        weights = np.stack([np.bincount(d, minlength=len(ids)) for d in draws])  # [B, U]
        total = weights @ count
        boot_own = weights @ own_sum / total
        boot_gap = boot_own - weights @ other_sum / total

        def interval(x: np.ndarray) -> list[float | None]:
            if np.isnan(x).any():
                return [None, None]
            return [float(np.quantile(x, alpha)), float(np.quantile(x, 1 - alpha))]

        own_mean, other_mean = float(own.mean()), float(others.mean())
        out[str(name)] = {
            "pairs": len(rows), "users": len(ids),
            "own_accuracy": own_mean, "own_accuracy_ci": interval(boot_own),
            "other_heads_accuracy": None if k == 1 else other_mean,
            "disagreement": None if k == 1 else own_mean - other_mean,
            "disagreement_ci": interval(boot_gap),
        }
    return out


def verdicts(checks: dict[str, dict]) -> dict[str, list[str]]:
    """Names of the groups the reward model cannot learn (own-accuracy interval reaches 0.5)
    and of the groups that do not differ from the others (disagreement interval reaches 0)."""
    def reaches(ci, value):
        return ci[0] is not None and ci[0] <= value

    return {"not_learnable": [g for g, c in checks.items() if reaches(c["own_accuracy_ci"], 0.5)],
            "not_distinct": [g for g, c in checks.items()
                             if c["disagreement"] is not None and reaches(c["disagreement_ci"], 0.0)]}
