"""Rollouts: chat-formatted prompts, G sampled completions each, token log-probs.

Prompts are left-padded so every completion starts at the same column P; a
completion runs up to and including its first EOS, later tokens are masked.
Log-probs are taken under logits / temperature, the distribution that sampled
them, so the importance ratio of on-policy samples is exactly 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor


def derived_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() is salted per process)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Rollout:
    input_ids: Tensor  # [N, P + C] left-padded prompt, then completion
    attention_mask: Tensor  # [N, P + C] 0 on prompt padding and after the EOS
    completion_mask: Tensor  # [N, C] 1 on completion tokens up to and including EOS
    prompt_len: int  # P
    completions: list[str]  # decoded, special tokens removed
    logprobs: Tensor | None = None  # [N, C] sampling log-probs (generate(with_logprobs=True)), 0 where masked

    @property
    def completion_ids(self) -> Tensor:
        return self.input_ids[:, self.prompt_len :]

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)

    def truncated(self, eos_ids: list[int]) -> Tensor:
        """Completions that hit max_new_tokens without an EOS."""
        return ~torch.isin(self.completion_ids, torch.tensor(eos_ids, device=self.input_ids.device)).any(-1)

    def select(self, rows: slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.input_ids[rows], self.attention_mask[rows]


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model and tokenizer define no EOS token; completions could not end")
    return ids


def chat_prompts(tokenizer, prompts: list[str], system_prompt: str | None = None) -> list[str]:
    """Wrap each user prompt in the tokenizer's chat template, ready for the reply."""
    out = []
    for p in prompts:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": p})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def completion_mask_from_eos(completion_ids: Tensor, eos_ids: list[int]) -> Tensor:
    """1 up to and including the first EOS of each row (all 1 if there is none)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    length = completion_ids.shape[1]
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), length)
    return (torch.arange(length, device=completion_ids.device)[None] <= first[:, None]).long()


def _shared_prompt_cache(model, ids: Tensor, mask: Tensor, num_generations: int) -> dict:
    """The KV cache of every prompt but its last token, computed once per prompt and repeated
    for its G completions: generate() then runs only the last token and the new ones.

    Prefilling each prompt G times was ~40 % of sampling time on CPU (G=6, 70-token prompts);
    the samples are the same (tested). Returns generate()'s cache keyword, or {} when there
    is nothing to share.
    """
    if num_generations == 1 or ids.shape[1] < 2:
        return {}
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() derives them from the mask
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                use_cache=True, logits_to_keep=1)
    key = "cache" if "cache" in out else "past_key_values"  # transformers 5 renamed it
    cache = out[key]
    cache.batch_repeat_interleave(num_generations)
    return {key: cache}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    num_generations: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    system_prompt: str | None = None,
    with_logprobs: bool = False,
) -> Rollout:
    """Sample `num_generations` completions per prompt (rows grouped by prompt).

    Sampling uses the global torch RNG: seed it before the call for determinism.
    `with_logprobs`: also keep each sampled token's log-prob under logits / temperature,
    taken from the logits generation computed anyway (saves the forward pass that
    token_logprobs would spend; equal to it up to float rounding, tested).
    """
    texts = chat_prompts(tokenizer, prompts, system_prompt)
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    device = next(model.parameters()).device
    ids = enc["input_ids"].repeat_interleave(num_generations, 0).to(device)
    mask = enc["attention_mask"].repeat_interleave(num_generations, 0).to(device)
    eos = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    shared = _shared_prompt_cache(model, enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                  num_generations)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        **shared,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,  # no top-k: the log-probs below must be those of the sampling distribution
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        output_logits=with_logprobs,
        return_dict_in_generate=True,
    )
    model.train(was_training)
    prompt_len = ids.shape[1]
    completion = out.sequences[:, prompt_len:]
    if completion.shape[1] == 0:  # every row stopped at once (max_new_tokens reached 0?)
        raise RuntimeError("generation produced no tokens")
    comp_mask = completion_mask_from_eos(completion, eos)
    logprobs = None
    if with_logprobs:  # raw logits, one [N, V] per new token: the sampling distribution at top_p=1
        logprobs = torch.stack([(step.float() / temperature).log_softmax(-1).gather(-1, tok[:, None])[:, 0]
                                for step, tok in zip(out.logits, completion.T)], 1) * comp_mask
    completion = torch.where(comp_mask.bool(), completion, tokenizer.pad_token_id)
    return Rollout(
        input_ids=torch.cat([ids, completion], 1),
        attention_mask=torch.cat([mask, comp_mask], 1),
        completion_mask=comp_mask,
        prompt_len=prompt_len,
        completions=tokenizer.batch_decode(completion, skip_special_tokens=True),
        logprobs=logprobs,
    )


def token_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompt_len: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs [B, C] of the completion tokens, and optionally the entropy [B, C].

    Only the last C + 1 positions go through the LM head, and the log-softmax is
    never materialized over the vocabulary (logsumexp + gather).
    """
    completion_len = input_ids.shape[1] - prompt_len
    # Explicit positions: with left padding the first real token is position 0,
    # as it was during generation.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=completion_len + 1,
        use_cache=False,
    ).logits[:, :-1]
    logits = logits.float() / temperature
    targets = input_ids[:, prompt_len:]
    lse = logits.logsumexp(-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = lse - (logits.softmax(-1) * logits).sum(-1)
    return logp, entropy


@torch.no_grad()
def batched_logprobs(model, rollout: Rollout, temperature: float, micro_batch_size: int) -> Tensor:
    """token_logprobs over the whole rollout in micro-batches, without gradients."""
    chunks = []
    for start in range(0, rollout.input_ids.shape[0], micro_batch_size):
        ids, mask = rollout.select(slice(start, start + micro_batch_size))
        chunks.append(token_logprobs(model, ids, mask, rollout.prompt_len, temperature)[0])
    return torch.cat(chunks)
