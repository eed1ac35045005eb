"""Reward functions: `(prompts, completions, group_ids, metadata) -> Tensor [N]`.

The trainer calls a reward function once per step on every completion of the
local batch. Built-in rule rewards are registered by name; the learned,
group-conditioned reward model plugs in through the same signature.
"""

from __future__ import annotations

import re
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
