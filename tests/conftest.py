"""Shared fixtures: offline settings, a private model cache, a tiny training config."""

import os
from pathlib import Path

import pytest

# Before anything imports transformers / huggingface_hub.
REPO = Path(__file__).resolve().parents[1]
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
# Models the tests materialize (tiny model, converted SmolLM2) stay inside the repo's
# ignored pytest cache, not in the user's ~/.cache/pgrpo.
os.environ.setdefault("PGRPO_CACHE", str(REPO / ".pytest_cache" / "pgrpo-cache"))
SHARED = REPO.parent / "shared"


@pytest.fixture
def tiny_cfg():
    """PolicyConfig for a seconds-long run of the tiny random Llama on the builtin task."""
    from pgrpo.core.config import PolicyConfig

    def make(**overrides):
        base = dict(model="tiny-random-llama", steps=3, prompts_per_step=2, num_generations=4,
                    max_new_tokens=12, micro_batch_size=4, lr=1e-3, checkpoint_every=2)
        return PolicyConfig(**{**base, **overrides})

    return make
