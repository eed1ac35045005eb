"""The judge: scores completions with what training never saw (judge.parquet, pgrpo.stages.data.prepare).

Kinds of judge row (one per user, schema pgrpo.stages.data.schemas.Judge):
    persona_utility   synthetic data: the persona's true utility of the text
                      (pgrpo.stages.data.personas.utility); payload = persona_to_json(persona)
    heldout_items     MovieLens: the user's last liked movies, held out of the prompt and
                      the pairs; payload = [{"title", "genres", "rating"}, ...]. Scored by
                      pgrpo.core.rewards.movielens_rule_reward (1 for naming a held-out title,
                      else 0.5 x the share of those movies' genres named)
The file source has no judge (zero rows): evaluation falls back to the learned reward.

    from pgrpo.stages.evaluation.judge import judge_scores
    scores = judge_scores(read_table("data/processed/judge.parquet"), user_ids, completions)
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from pgrpo.stages.data.personas import persona_from_json, utility
from pgrpo.core.rewards import movielens_rule_reward

KINDS = ("persona_utility", "heldout_items")


def heldout_metadata(payload: str) -> dict:
    """movielens_rule_reward metadata from a heldout_items payload."""
    items = json.loads(payload)
    if not isinstance(items, list) or not all(isinstance(i, dict) and "title" in i for i in items):
        raise ValueError(f"heldout_items payload must be a list of {{'title', 'genres', ...}}: "
                         f"{payload[:200]!r}")
    genres = sorted({g for item in items for g in item.get("genres") or []})
    return {"heldout_titles": [str(i["title"]) for i in items], "liked_genres": genres}


def judge_kind(judge: pd.DataFrame) -> str | None:
    """The table's single kind; None for a table without rows."""
    if judge.empty:
        return None
    kinds = sorted(set(judge["kind"]))
    if len(kinds) != 1 or kinds[0] not in KINDS:
        raise ValueError(f"judge table: expected one kind of {list(KINDS)}, found {kinds}")
    return kinds[0]


def judge_scores(judge: pd.DataFrame, user_ids: Sequence[str],
                 completions: Sequence[str]) -> np.ndarray:
    """Judge score (float64 [N]) of completions[i], written for user user_ids[i]."""
    if len(user_ids) != len(completions):
        raise ValueError(f"judge_scores: {len(user_ids)} user ids for {len(completions)} "
                         "completions")
    kind = judge_kind(judge)
    if kind is None:
        raise ValueError("the judge table has no rows (file source?): nothing to score with")
    rows = dict(zip(judge["user_id"].astype(str), judge["payload"]))
    missing = sorted({str(u) for u in user_ids} - set(rows))
    if missing:
        raise ValueError(f"{len(missing)} users have no judge row: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    users = [str(u) for u in user_ids]
    if kind == "persona_utility":
        personas = {u: persona_from_json(rows[u]) for u in set(users)}
        return np.array([utility(personas[u], t) for u, t in zip(users, completions)],
                        dtype=np.float64)
    meta = {u: heldout_metadata(rows[u]) for u in set(users)}
    out = movielens_rule_reward([""] * len(users), list(completions), torch.zeros(len(users)),
                                [meta[u] for u in users])
    return out.double().numpy()


class JudgeReward:
    """The judge as the training reward (`policy.reward: judge`), for controlled experiments.

    Nothing is learned, so nothing can be hacked; the evaluation then measures the same
    thing training optimized, and the report says so. Samples name their user in
    metadata['user_id'] (prepared prompt tables carry it).
    """

    def __init__(self, judge: pd.DataFrame):
        if judge_kind(judge) is None:
            raise ValueError("reward 'judge': the judge table has no rows (the file source has "
                             "no judge); train on a reward model instead")
        self.judge = judge

    def __call__(self, prompts: list[str], completions: list[str], group_ids: torch.Tensor,
                 metadata: list[dict]) -> torch.Tensor:
        missing = [i for i, m in enumerate(metadata) if "user_id" not in (m or {})]
        if missing:
            raise ValueError(f"reward 'judge': samples {missing[:5]} have no user_id in their "
                             "metadata (a prepared prompt table carries one)")
        users = [m["user_id"] for m in metadata]
        return torch.from_numpy(judge_scores(self.judge, users, completions)).float()
