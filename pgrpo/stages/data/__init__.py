"""Data sources of the prepare stage; each returns the same four tables.

    synthetic.build(...)   personas with unequal group sizes (pgrpo.stages.data.synthetic)
    files.build(path)      a user's own pairwise preferences (pgrpo.stages.data.files)
    movielens.build(...)   next-movie recommendation from a rating history (pgrpo.stages.data.movielens)

Sources do not split: `pgrpo.stages.data.prepare` adds the `split` columns, validates the
tables against pgrpo.stages.data.schemas and writes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Tables:
    users: pd.DataFrame    # user_id, true_group, profile, extra metadata columns
    prompts: pd.DataFrame  # prompt_id, user_id, prompt
    pairs: pd.DataFrame    # pair_id, user_id, prompt_id, prompt, chosen, rejected, extras
    judge: pd.DataFrame    # user_id, kind, payload; zero rows when the source has no judge
    stats: dict = field(default_factory=dict)  # source-specific numbers for prepare_metrics.json


def stable_id(prefix: str, *parts: object) -> str:
    """A short id that depends only on `parts` (not on row order), e.g. 'p-1a2b3c4d5e6f'."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:12]}"


def empty_judge() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="str") for c in ("user_id", "kind", "payload")})
