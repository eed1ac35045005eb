"""What the evaluate stage measures on one policy: its samples, its KL to the base, and its
log-likelihood of neutral text.

    from pgrpo.stages.evaluation.policy_measures import run_policy, neutral_loglik, read_neutral
    completions, kl = run_policy(model, tok, base_model, prompts, eval_cfg, policy_cfg)
    forgetting = neutral_loglik(model, tok, read_neutral(None), 32) - base_value

Sampling is seeded per chunk from `cfg.seed`, so sample j of prompt i is the same draw
for every policy (paired comparisons). KL: the k3 estimator per token (exp(d) - d - 1,
d = log p_base - log p_policy), on the policy's own completions at the sampling
temperature, averaged over completion tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pgrpo.core.loss import kl_k3
from pgrpo.core.prompts import PromptSet
from pgrpo.core.logprobs import batched_logprobs, token_logprobs
from pgrpo.core.rollout import Rollout, derived_seed, generate

if TYPE_CHECKING:
    from pgrpo.core.config import PolicyConfig
    from pgrpo.stages.evaluation.eval_config import EvalConfig

NEUTRAL_TEXT = Path(__file__).parent / "neutral.txt"


def read_neutral(path: str | Path | None) -> list[str]:
    path = Path(path) if path else NEUTRAL_TEXT
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"neutral text {path} is empty")
    return lines


@torch.no_grad()
def neutral_loglik(model, tokenizer, lines: list[str], batch_size: int) -> float:
    """Mean log-likelihood (nats) per token of `lines`, each token given those before it
    (the first token of a line is context only), pooled over every scored token."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(lines), batch_size):
        enc = tokenizer(lines[i:i + batch_size], return_tensors="pt", padding=True,
                        padding_side="right", add_special_tokens=False).to(device)
        # prompt_len=1: with right padding, tokens 1.. are "completion"; padding is masked below.
        logp, _ = token_logprobs(model, enc["input_ids"], enc["attention_mask"], 1)
        mask = enc["attention_mask"][:, 1:].float()
        total += float((logp * mask).sum())
        count += int(mask.sum())
    return total / max(count, 1)


def k3_kl(logp_policy: torch.Tensor, logp_base: torch.Tensor,
          mask: torch.Tensor) -> tuple[float, int]:
    """(sum over masked tokens of exp(d) - d - 1 with d = logp_base - logp_policy, token count)."""
    k3 = kl_k3(logp_policy.double(), logp_base.double()) * mask
    return float(k3.sum()), int(mask.sum())


def sample_policy(model, tokenizer, prompts: PromptSet, cfg: EvalConfig, policy: PolicyConfig,
                  with_logprobs: bool = False) -> list[Rollout]:
    """Every prompt's `cfg.samples_per_prompt` completions, in chunks of `cfg.batch_size`
    sequences, each chunk seeded from (cfg.seed, its index): the same draws for every policy."""
    g, per_call = cfg.samples_per_prompt, max(1, cfg.batch_size // cfg.samples_per_prompt)
    rollouts = []
    for k, start in enumerate(range(0, len(prompts), per_call)):
        torch.manual_seed(derived_seed(cfg.seed, k))
        rollouts.append(generate(model, tokenizer, prompts.prompts[start:start + per_call], g,
                                 max_new_tokens=cfg.max_new_tokens or policy.max_new_tokens,
                                 temperature=cfg.temperature, top_p=cfg.top_p,
                                 system_prompt=policy.system_prompt, with_logprobs=with_logprobs))
    return rollouts


def kl_to_base(base, rollouts: list[Rollout], cfg: EvalConfig) -> float:
    """k3 KL(policy || base) per completion token, pooled over `rollouts` (sampled with
    with_logprobs=True: the policy's own log-probs come with its samples). The base reads
    each prompt once for its samples_per_prompt completions (pgrpo.core.logprobs)."""
    kl_sum, kl_tokens = 0.0, 0
    for ro in rollouts:
        lb = batched_logprobs(base, ro, cfg.temperature, cfg.batch_size, cfg.samples_per_prompt)
        s, n = k3_kl(ro.logprobs, lb, ro.completion_mask.float())
        kl_sum, kl_tokens = kl_sum + s, kl_tokens + n
    return kl_sum / max(kl_tokens, 1)


def run_policy(model, tokenizer, base, prompts: PromptSet, cfg: EvalConfig,
               policy: PolicyConfig) -> tuple[list[str], float | None]:
    """Sample every prompt's completions (seeded per chunk, identical for every policy); with
    `base`, also the k3 KL to it on those completions. Returns (completions, kl per token)."""
    rollouts = sample_policy(model, tokenizer, prompts, cfg, policy, with_logprobs=base is not None)
    completions = [c for ro in rollouts for c in ro.completions]
    return completions, (kl_to_base(base, rollouts, cfg) if base is not None else None)
