"""LoRA as a first-class path (policy.lora_r > 0; configs/lora.yaml): only the adapter
trains, and the exported policy (the adapter merged into the base, plain safetensors) is
the trained one and loads for evaluation. That a LoRA run resumes exactly is
tests/core/test_trainer.py's resume test; that the adapter learns what the users want,
tests/core/test_learning.py's LoRA case.

    .venv/bin/python -m pytest -q tests/core/test_lora.py        # ~30 s on 2 cores
"""

import safetensors.torch
import torch

from pgrpo.core.models import load_policy
from pgrpo.core.trainer import Trainer


def _weights(model_dir):
    return safetensors.torch.load_file(str(model_dir / "model.safetensors"))


def test_only_the_adapter_trains_and_the_base_weights_stay_frozen(tmp_path, tiny_cfg):
    base, _ = load_policy("tiny-random-llama")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    trainer = Trainer(tiny_cfg(steps=2, lora_r=4, lr=1e-2), tmp_path)
    trainer.train()
    model = trainer.acc.unwrap_model(trainer.model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    adapters, frozen = 0, 0
    for name, value in model.state_dict().items():
        if "lora_B" in name:  # B starts at zero: a trained adapter has moved it
            adapters += int(value.abs().sum() > 0)
        elif "lora_" not in name:  # base_model.model.<name>[.base_layer].weight
            plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
            torch.testing.assert_close(value, before[plain], rtol=0, atol=0, msg=plain)
            frozen += 1
    assert adapters > 0 and frozen == len(before)


def test_the_exported_policy_is_the_trained_adapter_and_loads_for_evaluation(tmp_path, tiny_cfg):
    from pgrpo.stages.evaluation.eval_config import EvalConfig
    from pgrpo.stages.evaluation.policy_measures import run_policy

    cfg = tiny_cfg(steps=2, lora_r=4, lr=1e-2)
    trainer = Trainer(cfg, tmp_path)
    result = trainer.train()
    weights = _weights(result.model_dir)
    assert not any("lora" in k for k in weights)  # merged: a plain model, no peft to load it
    exported, tok = load_policy(str(result.model_dir))
    peft_model = trainer.acc.unwrap_model(trainer.model).eval()
    ids = tok(["a test of the merge", "and another"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(exported.eval()(**ids).logits, peft_model(**ids).logits,
                                   rtol=1e-4, atol=1e-4)
    # the evaluation stage's sampling and KL run on it; the policy has moved from the base
    base, _ = load_policy("tiny-random-llama")
    prompts = trainer.prompts.subset(list(range(4)))
    with torch.no_grad():
        completions, kl = run_policy(exported, tok, base.eval(), prompts,
                                     EvalConfig(samples_per_prompt=2, device="cpu"), cfg)
    assert len(completions) == 2 * len(prompts) and kl > 0
