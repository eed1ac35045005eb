"""The prepare stage: build or load preference data, split it, validate it, write it.

    python -m pgrpo.stages.data.prepare                                  # params.yaml, section `prepare`
    python -m pgrpo.stages.data.prepare --n_users 1000 --separation 2    # any field of PrepareConfig
    python -m pgrpo.stages.data.prepare --source file --path examples/preferences.jsonl --out_dir /tmp/p
    python -m pgrpo.stages.data.prepare --source movielens --path ../shared/data/movielens/ml-100k

Writes users / prompts / pairs / judge .parquet and prepare_metrics.json into out_dir,
all or nothing (pgrpo.core.io.atomic_outputs): a table that fails its schema stops the stage
with one report and leaves no output behind. Without a params file or a `prepare`
section, the defaults below apply.

Splits: users are held out by a seeded draw within each known group (so every sizeable
group is evaluated), and within the training users a fraction of prompts is held out too
(never a user's last training prompt). Every table carries `split`.
The file source has no judge: judge.parquet is written with zero rows, the one table
not checked for being non-empty; evaluation then uses the learned reward only.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from pgrpo.core import paths
from pgrpo.core.config import Section, add_config_args, run_stage_command, section_from_cli
from pgrpo.stages.data import Tables
from pgrpo.core.io import atomic_outputs, write_json
from pgrpo.stages.data.schemas import DataValidationError, Judge, Pairs, Prompts, Users, validate

OUTPUTS = ["users.parquet", "prompts.parquet", "pairs.parquet", "judge.parquet",
           "prepare_metrics.json"]


class PrepareConfig(Section):
    """Preference data (params.yaml section `prepare`)."""

    source: Literal["synthetic", "file", "movielens"] = Field(
        "synthetic", description="synthetic personas, a preference file, or MovieLens 100K/1M")
    path: str | None = Field(None, description="file: .jsonl/.parquet/.csv; movielens: data folder")
    seed: int = Field(0, description="seeds generation, sampling and the splits")
    eval_fraction: float = Field(0.3, ge=0, lt=1, description="share of users held out (per group)")
    eval_prompt_fraction: float = Field(0.1, ge=0, lt=1,
                                        description="share of training users' prompts held out")
    # synthetic
    n_personas: int = Field(7, ge=2, le=7,
                            description="synthetic: personas; the first is the majority")
    n_users: int = Field(300, ge=2, description="synthetic: users")
    majority_share: float = Field(0.5, gt=0, lt=1,
                                  description="synthetic: share of users in the majority persona")
    minority_decay: float = Field(0.8, gt=0, le=1,
                                  description="synthetic: each minority's size / the previous's")
    prompts_per_user: int = Field(8, ge=1, description="synthetic: prompts per user")
    candidates_per_prompt: int = Field(6, ge=2,
                                       description="synthetic: template responses per prompt")
    pairs_per_prompt: int = Field(2, ge=1, description="synthetic: labelled pairs per prompt")
    bt_temperature: float = Field(0.5, ge=0, description="synthetic: Bradley-Terry label noise, "
                                  "P(a > b) = sigmoid(dU / T); 0 = noiseless")
    separation: float = Field(1.0, ge=0, description="synthetic: distance of the minorities from "
                              "the majority (0 = same taste, 1 = default, >1 exaggerated)")
    # movielens
    like_threshold: int = Field(4, ge=1, le=5, description="movielens: rating >= this is liked")
    dislike_threshold: int = Field(2, ge=1, le=5,
                                   description="movielens: rating <= this is disliked")
    history_length: int = Field(10, ge=1,
                                description="movielens: liked movies listed in the prompt")
    heldout_items: int = Field(5, ge=1,
                               description="movielens: last liked movies held out as the judge")
    min_ratings: int = Field(20, ge=2,
                             description="movielens: users with fewer ratings are dropped")
    pairs_per_user: int = Field(8, ge=1, description="movielens: preference pairs per user")
    max_users: int | None = Field(None, ge=1,
                                  description="movielens: seeded sample of users; None = all")

    @model_validator(mode="after")
    def _check(self) -> PrepareConfig:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"source={self.source!r} needs `path`")
        return self


def load_source(cfg: PrepareConfig) -> Tables:
    """The source's four tables (no split yet); each source validates its own input."""
    if cfg.source == "synthetic":
        from pgrpo.stages.data import synthetic

        return synthetic.build(
            n_users=cfg.n_users, n_personas=cfg.n_personas, majority_share=cfg.majority_share,
            minority_decay=cfg.minority_decay, prompts_per_user=cfg.prompts_per_user,
            candidates_per_prompt=cfg.candidates_per_prompt, pairs_per_prompt=cfg.pairs_per_prompt,
            bt_temperature=cfg.bt_temperature, separation=cfg.separation, seed=cfg.seed)
    if cfg.source == "file":
        from pgrpo.stages.data import files

        return files.build(cfg.path)
    from pgrpo.stages.data import movielens

    return movielens.build(
        cfg.path, like_threshold=cfg.like_threshold, dislike_threshold=cfg.dislike_threshold,
        history_length=cfg.history_length, heldout_items=cfg.heldout_items,
        min_ratings=cfg.min_ratings, pairs_per_user=cfg.pairs_per_user,
        max_users=cfg.max_users, seed=cfg.seed)


def split(t: Tables, eval_fraction: float, eval_prompt_fraction: float, seed: int) -> Tables:
    """Add `split` to every table: users held out per group, then prompts of train users."""
    # Own generator: the splits do not shift when a source draws more or fewer numbers.
    rng = random.Random(f"split-{seed}")
    groups = t.users.assign(g=t.users["true_group"].fillna("")).groupby("g", sort=True)["user_id"]
    eval_users: set[str] = set()
    for _, ids in groups:
        ids = sorted(ids)
        eval_users |= set(rng.sample(ids, round(len(ids) * eval_fraction)))
    if not eval_users and eval_fraction > 0 and len(t.users) > 1:  # tiny data: hold out one
        eval_users.add(rng.choice(sorted(t.users["user_id"])))
    if len(eval_users) == len(t.users):  # keep someone to train on
        eval_users.discard(min(eval_users))
    prompt_users = dict(zip(t.prompts["prompt_id"], t.prompts["user_id"]))
    train = sorted(p for p, u in prompt_users.items() if u not in eval_users)
    left = pd.Series([prompt_users[p] for p in train]).value_counts().to_dict()
    target, eval_prompts = round(len(train) * eval_prompt_fraction), set()
    for p in rng.sample(train, len(train)):
        if len(eval_prompts) >= target:
            break
        if left[prompt_users[p]] > 1:  # never a user's last training prompt
            left[prompt_users[p]] -= 1
            eval_prompts.add(p)

    def user_split(ids: pd.Series) -> list[str]:
        return ["eval" if u in eval_users else "train" for u in ids]

    def prompt_split(ids: pd.Series, users: pd.Series) -> list[str]:
        return ["eval" if u in eval_users or p in eval_prompts else "train"
                for p, u in zip(ids, users)]

    prompts, pairs = t.prompts, t.pairs
    return Tables(t.users.assign(split=user_split(t.users["user_id"])),
                  prompts.assign(split=prompt_split(prompts["prompt_id"], prompts["user_id"])),
                  pairs.assign(split=prompt_split(pairs["prompt_id"], pairs["user_id"])),
                  t.judge, t.stats)


def check(t: Tables, source: str) -> Tables:
    """Output validation: every schema, plus the links between the tables."""
    users = validate(t.users, Users, f"prepare ({source}): users")
    prompts = validate(t.prompts, Prompts, f"prepare ({source}): prompts")
    pairs = validate(t.pairs, Pairs, f"prepare ({source}): pairs")
    judge = t.judge
    if not (source == "file" and judge.empty):  # the file source has no judge (see top)
        judge = validate(judge, Judge, f"prepare ({source}): judge")
    problems = []
    for name, df, col, known in [("prompts", prompts, "user_id", users["user_id"]),
                                 ("pairs", pairs, "prompt_id", prompts["prompt_id"]),
                                 ("judge", judge, "user_id", users["user_id"])]:
        bad = df.loc[~df[col].isin(known), col]
        if len(bad):
            problems.append(f"  - {name}: column {col!r}, check 'refers to an existing row' at "
                            f"rows {list(bad.index[:10])}; values: {list(bad.head(5))}")
    if problems:
        raise DataValidationError(f"prepare ({source}): the tables do not fit together\n"
                                  + "\n".join(problems))
    return Tables(users, prompts, pairs, judge, t.stats)


def metrics(t: Tables, source: str) -> dict:
    def by_split(df: pd.DataFrame) -> dict[str, int]:
        counts = df["split"].value_counts()
        return {"total": len(df), **{s: int(counts.get(s, 0)) for s in ("train", "eval")}}

    groups = t.users.assign(g=t.users["true_group"].fillna("(none)"))
    return {
        "source": source,
        "rows": {"users": by_split(t.users), "prompts": by_split(t.prompts),
                 "pairs": by_split(t.pairs), "judge": len(t.judge)},
        "users_per_group": {g: by_split(df) for g, df in groups.groupby("g", sort=True)},
        "source_stats": t.stats,
    }


def prepare(cfg: PrepareConfig, out_dir: Path = paths.PROCESSED) -> dict:
    """Build the tables, validate them, write OUTPUTS into out_dir; return the metrics."""
    tables = check(split(load_source(cfg), cfg.eval_fraction, cfg.eval_prompt_fraction, cfg.seed),
                   cfg.source)
    result = metrics(tables, cfg.source)
    with atomic_outputs(*(Path(out_dir) / name for name in OUTPUTS)) as tmp:
        for df, path in zip([tables.users, tables.prompts, tables.pairs, tables.judge], tmp):
            df.to_parquet(path, index=False)
        write_json(tmp[-1], result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="prepare the preference data",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (optional)")
    parser.add_argument("--out_dir", default=str(paths.PROCESSED), help="output folder")
    add_config_args(parser, PrepareConfig)
    args = parser.parse_args(argv)
    return run_stage_command(lambda: section_from_cli(args, "prepare", PrepareConfig),
                             lambda cfg: {"out_dir": args.out_dir,
                                          **prepare(cfg, Path(args.out_dir))["rows"]})


if __name__ == "__main__":
    sys.exit(main())
