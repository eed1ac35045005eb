"""A reward model conditioned on the preference group, and its use as a reward function.

    r(prompt, response, group) = head_group( mean_pool( encoder("prompt [SEP] response") ) )

The encoder (all-MiniLM-L6-v2 by default) reads the prompt and the response as a
text pair, so it sees which is which. Two ways to condition on the group:
- "heads":     one linear head per group over the pooled vector (default);
- "embedding": a learned group vector concatenated to the pooled vector, then
               a small MLP shared by all groups.
Either way two groups can score the same (prompt, response) in opposite
directions, which one unconditioned reward model cannot.

A trained model is a folder of safetensors + json (no pickle anywhere):

    model.safetensors       encoder and head weights
    config.json             encoder name, its transformers config, conditioning, group map
    tokenizer*.json         the encoder's tokenizer

Run recipe:

    python -m pgrpo.stages.reward.train_reward                       # writes models/reward/
    from pgrpo.stages.reward.reward_model import GroupRewardFn
    reward_fn = GroupRewardFn("models/reward", group_names=["casual", "formal"])
    rewards = reward_fn(prompts, completions, group_ids, metadata)   # Tensor [N]

The MovieLens rule reward, which needs no learned model, is in pgrpo.core.rewards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgrpo.stages.reward.encoder import mean_pool
from pgrpo.stages.reward.surface import SurfaceFeaturizer

Conditioning = Literal["embedding", "heads"]
# What the encoder reads: the (prompt, response) text pair, or the response alone. With the
# group carrying the preference, the prompt only lets the score's level move from prompt to
# prompt, which Bradley-Terry never pins (DESIGN.md section 1: P-GRPO's offset term).
Inputs = Literal["prompt_response", "response"]
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT_VERSION = 1


class RewardModel(nn.Module):
    """Encoder + group-conditioned head; carries its tokenizer and group map for scoring."""

    def __init__(self, encoder: nn.Module, tokenizer, group_map: dict[str, int],
                 conditioning: Conditioning = "heads", max_length: int = 256,
                 encoder_name: str = "", inputs: Inputs = "prompt_response",
                 surface: SurfaceFeaturizer | None = None) -> None:
        super().__init__()
        if sorted(group_map.values()) != list(range(len(group_map))):
            raise ValueError(f"group map indices must be 0..{len(group_map) - 1}: {group_map}")
        self.encoder, self.tokenizer = encoder, tokenizer
        self.group_map, self.conditioning = dict(group_map), conditioning
        self.max_length, self.encoder_name = max_length, encoder_name
        if inputs not in ("prompt_response", "response"):
            raise ValueError(f"inputs must be 'prompt_response' or 'response', got {inputs!r}")
        self.inputs, self.surface = inputs, surface
        hidden, n_groups = encoder.config.hidden_size, len(group_map)
        # What the head reads: the pooled encoder states, plus the response's surface
        # features (pgrpo.stages.reward.surface) when the model has them.
        features = hidden + (surface.dim if surface is not None else 0)
        if conditioning == "heads":
            self.head = nn.Linear(features, n_groups)
        elif conditioning == "embedding":
            self.group_emb = nn.Embedding(n_groups, hidden)
            # Unit scale, so the group vector shifts the MLP's hidden pre-activations as much as
            # the sentence does and each group starts on its own hidden units; at std 1/sqrt(hidden)
            # the groups began nearly identical (MiniLM test data: 0.55 held-out after 2 epochs).
            nn.init.normal_(self.group_emb.weight, std=1.0)
            self.head = nn.Sequential(nn.Linear(features + hidden, hidden), nn.GELU(),
                                      nn.Linear(hidden, 1))
        else:
            raise ValueError(f"conditioning must be 'heads' or 'embedding', got {conditioning!r}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, prompts: list[str], responses: list[str], group_ids: Tensor) -> Tensor:
        """Rewards [B] of (prompt, response) pairs for groups `group_ids` (model indices), with grad."""
        # Text-pair encoding: [CLS] prompt [SEP] response [SEP], segment ids tell them apart.
        # longest_first truncation trims whichever side is longer, so a long prompt
        # (a movie history) cannot push the response out entirely.
        return self.reward_from_pooled(self.pool(prompts, responses), group_ids)

    def pool(self, prompts: list[str], responses: list[str]) -> Tensor:
        """What the head reads [B, features]: mean-pooled encoder states (+ surface features)."""
        # Text-pair encoding: [CLS] prompt [SEP] response [SEP], segment ids tell them apart.
        # longest_first truncation trims whichever side is longer, so a long prompt
        # (a movie history) cannot push the response out entirely.
        pair = (list(responses),) if self.inputs == "response" else (list(prompts), list(responses))
        batch = self.tokenizer(*pair, padding=True, truncation="longest_first",
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        pooled = mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])
        if self.surface is None:
            return pooled
        return torch.cat([pooled, self.surface(responses).to(pooled)], dim=1)

    def reward_from_pooled(self, pooled: Tensor, group_ids: Tensor) -> Tensor:
        """The group-conditioned head over pooled states: rewards [B]."""
        group_ids = group_ids.to(pooled.device, torch.long)
        if self.conditioning == "heads":
            # All heads in one matmul, then keep each row's own group column.
            return self.head(pooled).gather(1, group_ids[:, None]).squeeze(1)
        return self.head(torch.cat([pooled, self.group_emb(group_ids)], dim=-1)).squeeze(1)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], group_ids: Tensor,
              batch_size: int = 64) -> Tensor:
        """Rewards [N] (float32, CPU) in batches, eval mode, no grad."""
        if not (len(prompts) == len(responses) == len(group_ids)):
            raise ValueError(f"got {len(prompts)} prompts, {len(responses)} responses, "
                             f"{len(group_ids)} group ids")
        was_training = self.training
        self.eval()
        out = [self(prompts[i:i + batch_size], responses[i:i + batch_size],
                    group_ids[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
        self.train(was_training)
        return torch.cat(out).float().cpu() if out else torch.empty(0)

    def config_dict(self) -> dict:
        """Everything needed to rebuild the model offline from its folder."""
        return {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder_name,
            "encoder_config": self.encoder.config.to_dict(),
            "hidden_size": self.encoder.config.hidden_size,
            "conditioning": self.conditioning,
            "group_map": self.group_map,
            "max_length": self.max_length,
            "inputs": self.inputs,
            "surface": self.surface.to_dict() if self.surface is not None else None,
        }


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected): the pair's negative log-likelihood."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pairwise_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Per pair: 1 if chosen scores higher, 0.5 on a tie (so a constant model scores 0.5)."""
    return (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()


# --------------------------------------------------------------------------- save / load

def save_reward_model(model: RewardModel, folder: str | Path) -> None:
    """Write weights (safetensors), config.json and the tokenizer into an existing folder."""
    folder = Path(folder)
    # save_model (not save_file) copes with tensors that share storage.
    safetensors.torch.save_model(model, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(model.config_dict(), indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    model.tokenizer.save_pretrained(folder)


def load_reward_model(path: str | Path, device: str | torch.device | None = None) -> RewardModel:
    """Rebuild a saved RewardModel from its folder: json + safetensors only, no remote code."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a reward model folder (needs {CONFIG} and {WEIGHTS})")
    cfg = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    enc_cfg = dict(cfg["encoder_config"])
    # The architecture comes from the saved config, never from code in the folder.
    encoder = AutoModel.from_config(AutoConfig.for_model(enc_cfg.pop("model_type"), **enc_cfg))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    surface = cfg.get("surface")
    model = RewardModel(encoder, tokenizer, cfg["group_map"], cfg["conditioning"],
                        cfg["max_length"], cfg["encoder"], cfg.get("inputs", "prompt_response"),
                        SurfaceFeaturizer.from_dict(tokenizer, surface) if surface else None)
    missing, unexpected = safetensors.torch.load_model(model, str(path / WEIGHTS), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS} does not match {CONFIG}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.float().to(device).eval()


class GroupRewardFn:
    """A saved reward model as a reward function `(prompts, completions, group_ids, metadata)`.

    `group_ids` index into `group_names`, the policy trainer's own group list; they
    are translated to the reward model's indices by name, so the two lists may be
    in any order. A group the reward model was not trained on is an error here,
    at construction, not a silent wrong score mid-training.
    """

    def __init__(self, path: str | Path, group_names: list[str],
                 device: str | torch.device | None = None, batch_size: int = 64) -> None:
        self.model = load_reward_model(path, device)
        self.group_names, self.batch_size = list(group_names), batch_size
        unknown = [g for g in self.group_names if g not in self.model.group_map]
        if unknown:
            raise ValueError(f"groups {unknown} are not in the reward model at {path}; "
                             f"it knows {sorted(self.model.group_map)}")
        # Policy index -> reward-model index, looked up by name.
        self.to_model = torch.tensor([self.model.group_map[g] for g in self.group_names],
                                     dtype=torch.long)

    def __call__(self, prompts: list[str], completions: list[str], group_ids: Tensor,
                 metadata: list[dict] | None = None) -> Tensor:
        ids = torch.as_tensor(group_ids).detach().cpu().long().flatten()
        bad = (ids < 0) | (ids >= len(self.group_names))
        if bad.any():
            raise ValueError(f"group ids {sorted(set(ids[bad].tolist()))[:5]} are outside "
                             f"group_names (0..{len(self.group_names) - 1})")
        return self.model.score(list(prompts), list(completions), self.to_model[ids], self.batch_size)
