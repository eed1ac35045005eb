"""Reward functions: `(prompts, completions, group_ids, metadata) -> Tensor [N]`.

The trainer calls a reward function once per step on every completion of the
local batch. Built-in rule rewards are registered by name; the judge and the learned,
group-conditioned reward model plug in through the same signature, registered as
sources by pgrpo.stages.reward.training_rewards (`resolve_reward` finds either).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import Tensor


class RewardFn(Protocol):
    def __call__(
        self, prompts: list[str], completions: list[str], group_ids: Tensor, metadata: list[dict]
    ) -> Tensor: ...


REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


def get_reward_fn(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; built-in rewards: {sorted(REWARDS)}") from None


# Rewards built from data this layer does not read (the judge's table, a trained reward
# model) are registered by the stage layer (pgrpo.stages.reward.training_rewards): a test of the
# name, and a builder given the name, the prompt table's path, the run's groups and device.
RewardBuilder = Callable[[str, str, list, "torch.device"], RewardFn]
SOURCES: list[tuple[Callable[[str], bool], RewardBuilder]] = []


def register_reward_source(matches: Callable[[str], bool], build: RewardBuilder) -> None:
    SOURCES.append((matches, build))


def resolve_reward(name: str, prompts_path: str, group_names: list[str], device) -> RewardFn:
    """The training reward `name` (policy.reward) for a run with these groups and device."""
    for matches, build in SOURCES:
        if matches(name):
            return build(name, prompts_path, group_names, device)
    if name == "judge" or Path(name).is_dir():
        raise ValueError(f"reward {name!r} is built by the stage layer: import "
                         "pgrpo.stages.reward.training_rewards before training (pgrpo.orchestration.pipeline and "
                         "python -m pgrpo.train do)")
    return get_reward_fn(name)


_WORD = re.compile(r"\w+(?:['’-]\w+)*")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


@register_reward("length")
def length_preference_reward(
    prompts: list[str], completions: list[str], group_ids: Tensor, metadata: list[dict]
) -> Tensor:
    """min(w, t) / max(w, t) for w words against the user's preferred t words.

    1.0 at the preferred length, falling smoothly on both sides; 0 for an empty
    answer. `t` comes from each sample's metadata['target_words'].
    """
    scores = []
    for i, (completion, meta) in enumerate(zip(completions, metadata, strict=True)):
        if "target_words" not in meta:
            raise KeyError(f"length reward: sample {i} has no 'target_words' in its metadata")
        target, words = float(meta["target_words"]), count_words(completion)
        scores.append(min(words, target) / max(words, target) if words else 0.0)
    return torch.tensor(scores, dtype=torch.float32)


# ------------------------------------------------------------------ MovieLens rule

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_AKA = re.compile(r"\s*\([^()]*\)\s*$")
_ARTICLE = re.compile(r"^(.*), (The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)$", re.IGNORECASE)


def _title_forms(title: str) -> set[str]:
    """Lower-cased ways a MovieLens title may be written: no year, no aka, article in front."""
    base = _YEAR.sub("", title).strip()
    forms = {base, _AKA.sub("", base).strip()}  # "City of Lost Children, The (Cité des ...)"
    for form in list(forms):
        m = _ARTICLE.match(form)
        if m:  # "Matrix, The" is written "The Matrix" in prose ("Appartement, L'": "L'Appartement")
            rest, article = m.group(1), m.group(2)
            forms.add(article + ("" if article.endswith("'") else " ") + rest)
    return {f.lower() for f in forms if f}


def _mentions(text: str, phrase: str) -> bool:
    # Whole words only: "War" must not match "award", "Action" not "transaction".
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


@register_reward("movielens_rule")
def movielens_rule_reward(prompts: list[str], completions: list[str], group_ids: Tensor,
                          metadata: list[dict]) -> Tensor:
    """1.0 if the completion names a held-out movie, else 0.5 x fraction of liked genres named.

    Titles match case-insensitively without their "(year)"; metadata per sample:
    `heldout_titles` (MovieLens titles) and `liked_genres` (genre names).
    """
    scores = []
    for i, (completion, meta) in enumerate(zip(completions, metadata, strict=True)):
        if "heldout_titles" not in meta and "liked_genres" not in meta:
            raise KeyError(f"movielens_rule: sample {i} has neither 'heldout_titles' nor "
                           "'liked_genres' in its metadata")
        text = " ".join(completion.lower().split())
        titles = meta.get("heldout_titles") or []
        if any(_mentions(text, form) for t in titles for form in _title_forms(t)):
            scores.append(1.0)
            continue
        genres = meta.get("liked_genres") or []
        hits = sum(_mentions(text, g.lower()) for g in genres)
        scores.append(0.5 * hits / len(genres) if genres else 0.0)
    return torch.tensor(scores, dtype=torch.float32)
