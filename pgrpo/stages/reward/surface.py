"""Surface features of a response: which tokens it uses, how often, and how long it is.

A mean-pooled sentence embedding keeps what a text is about and largely drops how it
is written: its length, how many emoji or list markers it has, which register words
it uses. Those are exactly what users with different tastes disagree on, so a reward
model that only reads the embedding ranks a prompt's completions like the users only
weakly (docs/results.md). This gives the reward model's head the
surface back, learned from the preference pairs like everything else:

    tokens   log(1 + count) of each token of a vocabulary fitted on the training
             responses (the encoder's own tokenizer; emoji are its [UNK] token,
             list markers its '-' and '1' '.' tokens)
    length   log-spaced bumps over the response's token count (1, 2, 4, ... 256
             tokens), so a preference for a length band is linear in the features

Nothing here knows any persona or the judge: which tokens and lengths matter, and
in which direction for which group, is what the reward model's heads learn.

    featurizer = SurfaceFeaturizer.fit(tokenizer, train_responses, min_count=2)
    x = featurizer(["Take Five, Dave Brubeck."])     # [1, featurizer.dim]
    featurizer.to_dict()  # -> config.json; SurfaceFeaturizer.from_dict(tokenizer, d) back
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

# Bump centres in log(tokens): one per doubling from 1 to 256 tokens; the width makes
# neighbouring bumps overlap so every length lights up one or two of them.
LENGTH_CENTRES = tuple(float(2 ** k) for k in range(9))
LENGTH_WIDTH = math.log(2.0)


class SurfaceFeaturizer:
    """Token counts over a fixed vocabulary plus a length encoding, as a dense tensor."""

    def __init__(self, tokenizer, vocab: Sequence[int],
                 length_centres: Sequence[float] = LENGTH_CENTRES) -> None:
        self.tokenizer = tokenizer
        self.vocab = [int(t) for t in vocab]
        self.column = {t: i for i, t in enumerate(self.vocab)}
        if len(self.column) != len(self.vocab):
            raise ValueError("surface vocabulary has repeated token ids")
        self.log_centres = torch.tensor([math.log(c) for c in length_centres])

    @property
    def dim(self) -> int:
        return len(self.vocab) + len(self.log_centres)

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # No special tokens and no truncation: the count is over the whole response.
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    @classmethod
    def fit(cls, tokenizer, texts: Sequence[str], min_count: int = 2) -> SurfaceFeaturizer:
        """Vocabulary = tokens used by at least `min_count` of the distinct `texts`."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        probe = cls(tokenizer, [])
        docs = Counter(t for ids in probe._token_ids(sorted(set(texts))) for t in set(ids))
        return cls(tokenizer, sorted(t for t, n in docs.items() if n >= min_count))

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Features [N, dim] (float32) of `texts`."""
        ids = self._token_ids(texts)
        counts = torch.zeros(len(ids), len(self.vocab))
        for row, seq in enumerate(ids):
            for t, n in Counter(seq).items():
                col = self.column.get(t)
                if col is not None:  # a token no training response used carries no weight
                    counts[row, col] = n
        length = torch.tensor([math.log(max(len(seq), 1)) for seq in ids])
        bumps = torch.exp(-0.5 * ((length[:, None] - self.log_centres) / LENGTH_WIDTH) ** 2)
        return torch.cat([torch.log1p(counts), bumps], dim=1)

    def to_dict(self) -> dict:
        return {"vocab": self.vocab, "length_centres": [math.exp(c) for c in self.log_centres.tolist()]}

    @classmethod
    def from_dict(cls, tokenizer, d: dict) -> SurfaceFeaturizer:
        return cls(tokenizer, d["vocab"], d["length_centres"])
