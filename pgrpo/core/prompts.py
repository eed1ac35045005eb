"""Training prompts, each carrying its preference group and metadata.

A prompt table has columns `prompt` and `group` (a label, any string or int),
plus any metadata columns the reward function reads. Sources:
    builtin             the embedded length-preference task below (no files)
    <file>.jsonl/.csv/.parquet   a table written by the prepare stage or by hand

A prepared prompt table (pgrpo.stages.data.prepare) has `user_id` instead of `group`: pass the
assign_groups table (`user_id`, `group`) as `groups` and each prompt takes its
user's group; `split` picks the rows whose `split` column matches.

The builtin task: users ask for music recommendations and say how long they like
answers; the rule reward (`pgrpo.core.rewards.length_preference_reward`) scores how
close a completion's word count is to the user's preferred length. The majority
group wants what a chat model produces unprompted (a few sentences), minorities
want something it rarely produces (one line, or a handful of words).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgrpo.core.rollout import derived_seed

# group -> (share of users, preferred number of words, how users phrase it)
BUILTIN_GROUPS: dict[str, tuple[float, int, list[str]]] = {
    "detailed": (0.6, 40, ["I like a few sentences explaining why.", "Tell me a bit about it."]),
    "brief": (0.25, 12, ["Keep it to one short sentence.", "One line is enough for me."]),
    "terse": (0.15, 3, ["Just the title, nothing else.", "Only name it, no explanation."]),
}
SITUATIONS = [
    "a rainy Sunday morning", "a long road trip", "studying late at night", "a summer barbecue",
    "a quiet dinner", "running in the park", "cooking with friends", "a sad evening",
    "cleaning the house", "a winter walk", "getting ready for a party", "falling asleep",
]
GENRES = ["jazz", "rock", "classical", "hip hop", "folk", "electronic", "soul", "country"]


@dataclass
class PromptSet:
    prompts: list[str]
    group_ids: torch.Tensor  # int64 [N], index into group_names
    group_names: list[str]
    metadata: list[dict] = field(default_factory=list)
    # The groups the advantage normalizes over; None = group_ids. Differs only in
    # the random-label ablation, where rewards still come from the true group.
    norm_group_ids: torch.Tensor | None = None

    @property
    def advantage_groups(self) -> torch.Tensor:
        return self.group_ids if self.norm_group_ids is None else self.norm_group_ids

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: list[int]) -> PromptSet:
        return PromptSet(
            [self.prompts[i] for i in idx],
            self.group_ids[idx],
            self.group_names,
            [self.metadata[i] for i in idx],
            None if self.norm_group_ids is None else self.norm_group_ids[idx],
        )

    def with_random_groups(self, seed: int) -> PromptSet:
        """The paper's ablation: users get shuffled group labels (sizes kept) for the advantage.

        Users are keyed by metadata `user_id` when present, else each prompt is its own user.
        """
        users = [m.get("user_id", f"#{i}") for i, m in enumerate(self.metadata)]
        first = {u: int(g) for u, g in reversed(list(zip(users, self.group_ids.tolist())))}
        order = list(first)
        perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
        shuffled = {u: first[order[j]] for u, j in zip(order, perm)}
        norm = torch.tensor([shuffled[u] for u in users], dtype=torch.int64)
        return PromptSet(self.prompts, self.group_ids, self.group_names, self.metadata, norm)


def builtin_prompts(n: int = 240, seed: int = 0) -> PromptSet:
    """The embedded length-preference task (see module docstring), seeded."""
    rng = random.Random(seed)
    names = list(BUILTIN_GROUPS)
    shares = [BUILTIN_GROUPS[g][0] for g in names]
    rows = []
    for _ in range(n):
        group = rng.choices(names, weights=shares)[0]
        _, words, phrasings = BUILTIN_GROUPS[group]
        text = (
            f"I mostly listen to {rng.choice(GENRES)}. Recommend a song for "
            f"{rng.choice(SITUATIONS)}. {rng.choice(phrasings)}"
        )
        rows.append({"prompt": text, "group": group, "target_words": words})
    return from_records(rows, group_order=names)


def from_records(rows: list[dict], group_order: list[str] | None = None) -> PromptSet:
    """Build a PromptSet from dict rows with `prompt`, `group` and metadata keys."""
    for i, row in enumerate(rows):
        for key in ("prompt", "group"):
            if key not in row or row[key] is None or str(row[key]).strip() == "":
                raise ValueError(f"prompt row {i}: missing or empty {key!r} ({row!r:.200})")
    labels = [str(r["group"]) for r in rows]
    names = list(group_order) if group_order else sorted(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"groups {unknown} are not in the given group order {names}")
    index = {g: i for i, g in enumerate(names)}
    return PromptSet(
        prompts=[str(r["prompt"]) for r in rows],
        group_ids=torch.tensor([index[g] for g in labels], dtype=torch.int64),
        group_names=names,
        metadata=[{k: v for k, v in r.items() if k not in ("prompt", "group")} for r in rows],
    )


# Metadata columns each reward reads per sample (learned reward models read none).
REWARD_COLUMNS = {"judge": ["user_id"], "length": ["target_words"],
                  "movielens_rule": ["heldout_titles", "liked_genres"]}


def prompt_table_problems(source: str, reward: str, groups: str | Path | None) -> list[str]:
    """What a prompt table lacks for this reward and group source (columns only, no rows read
    beyond what the format needs); [] for 'builtin' or a file that does not exist yet."""
    path = Path(source)
    if source == "builtin" or not path.is_file():
        return []
    from pgrpo.core.io import table_columns

    columns = set(table_columns(path))
    needed = ["prompt", *REWARD_COLUMNS.get(reward, [])]
    needed.append("user_id" if groups is not None else "group")
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if not missing:
        return []
    why = (f"reward {reward!r} reads {REWARD_COLUMNS[reward]}; " if reward in REWARD_COLUMNS else "")
    return [f"prompt table {path} lacks columns {missing} ({why}groups come from "
            f"{'user_id joined with ' + str(groups) if groups is not None else 'its group column'};"
            f" it has {sorted(columns)})"]


def load_prompts(source: str, seed: int = 0, groups: str | Path | None = None,
                 split: str | None = None) -> PromptSet:
    """Load prompts from 'builtin' or a .jsonl / .csv / .parquet table (see module docstring)."""
    if source == "builtin":
        return builtin_prompts(seed=seed)
    from pgrpo.core.io import read_table  # pandas only when a table is read

    path = Path(source)
    df = read_table(path)
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    if groups is not None:
        if "user_id" not in df.columns:
            raise ValueError(f"prompt file {path} has no user_id column to join groups on")
        table = read_table(groups)
        by_user = dict(zip(table["user_id"].astype(str), table["group"].astype(str)))
        missing = sorted(set(df["user_id"].astype(str)) - set(by_user))
        if missing:
            raise ValueError(f"{len(missing)} users of {path} have no group in {groups}: {missing[:5]}")
        df = df.assign(group=df["user_id"].astype(str).map(by_user))
        order = sorted(set(table["group"].astype(str)))  # every group, even one absent here
    else:
        order = None
    if df.empty:
        raise ValueError(f"prompt file {path} has no rows" + (f" with split == {split!r}" if split else ""))
    return from_records(df.to_dict("records"), group_order=order)


# ---------------------------------------------------------------- which prompts each step trains on
# Pure functions of (step, seed): a resumed run sees the same prompts.

def _seeded_pick(n: int, k: int, *seed_parts: int) -> int:
    """Item k of the permutation of range(n) that `seed_parts` fix."""
    gen = torch.Generator().manual_seed(derived_seed(*seed_parts))
    return int(torch.randperm(n, generator=gen)[k])


def prompt_indices(step: int, n_prompts: int, per_step: int, seed: int) -> list[int]:
    """`uniform`: the global batch of prompt rows for `step`, epochs of seeded permutations.
    Each group is seen in proportion to its prompts, so a small one may be missed for steps."""
    out = []
    for j in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(j, n_prompts)
        out.append(_seeded_pick(n_prompts, pos, seed, epoch))
    return out


def balanced_prompt_indices(step: int, group_ids: torch.Tensor, per_step: int, seed: int) -> list[int]:
    """`balanced`: the groups take turns. Position j of the run's prompt stream belongs to round
    j // K (K groups); each round visits every group once, in a seeded order, and a group's
    visits walk through seeded permutations of its own prompts (no repeat within its epoch).

    Why: the report's target is the mean over groups and "no group harmed". Drawn uniformly,
    8 steps x 8 prompts showed the smallest groups 1-7 times depending on the seed, and the
    seeds that showed minimalist 3-4 times harmed it (benchmarks/default_tuning/README.md)."""
    groups = torch.unique(group_ids).tolist()
    members = {g: torch.nonzero(group_ids == g).flatten() for g in groups}
    out = []
    for j in range(step * per_step, (step + 1) * per_step):
        rnd, pos = divmod(j, len(groups))
        g = groups[_seeded_pick(len(groups), pos, seed, -1, rnd)]
        epoch, k = divmod(rnd, len(members[g]))
        out.append(int(members[g][_seeded_pick(len(members[g]), k, seed, g, epoch)]))
    return out


def step_prompts(step: int, group_ids: torch.Tensor, per_step: int, seed: int,
                 sampling: str = "uniform") -> list[int]:
    """The prompt rows of `step` under the config's `prompt_sampling`."""
    if sampling == "balanced":
        return balanced_prompt_indices(step, group_ids, per_step, seed)
    return prompt_indices(step, len(group_ids), per_step, seed)
