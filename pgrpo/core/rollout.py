"""Rollouts: chat-formatted prompts and G sampled completions each.

Prompts are left-padded so every completion starts at the same column P; a
completion runs up to and including its first EOS, later tokens are masked.
Scoring a rollout (token log-probs, the shared-prompt forward): pgrpo.core.logprobs.
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


class RowDraws:
    """The uniform draws of a sampling batch of `total` rows split over processes: at each
    decode step all `total` rows are drawn from one seeded generator, and a process keeps
    its `offset`.. rows. A row then gets the same draws however the batch is split (rank-
    independent sampling); with one process (offset 0, total = its rows) they are the
    draws torch.manual_seed(seed) would give torch.rand in sample_tokens."""

    def __init__(self, seed: int, offset: int, total: int, device: torch.device | str = "cpu"):
        self.offset, self.total = offset, total
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def next(self, rows: int, device: torch.device | str) -> Tensor:
        u = torch.rand(self.total, 1, generator=self.generator, device=self.generator.device)
        return u[self.offset:self.offset + rows].to(device)


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


def sample_tokens(logits: Tensor, temperature: float, top_p: float,
                  block: int = 1024, uniforms: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One token per row from softmax(logits / temperature), nucleus-filtered when top_p < 1;
    returns (tokens [N], their log-probs [N] under logits / temperature, before top-p).

    Inverse-CDF sampling with one uniform draw of the global torch RNG per row, in two
    levels: the row's probability mass in blocks of `block` tokens, a block drawn by its
    mass, then a token within the block. Four passes over the vocabulary (max, exp, block
    sums) where torch.multinomial, which transformers' generate() calls, draws V exponentials
    a row, and a flat cumulative sum would add two more; tests/core/test_rollout.py checks the
    frequencies against the exact distribution. `uniforms` [N, 1] in [0, 1): the draws to use
    instead of the global RNG's."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    top = x.amax(-1, keepdim=True)
    mass = torch.exp(x - top)  # unnormalized probabilities, max 1
    if top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
        sorted_m, order = mass.sort(-1, descending=True)
        before = sorted_m.cumsum(-1) - sorted_m
        drop = before >= top_p * sorted_m.sum(-1, keepdim=True)  # mass before it already enough
        kept = mass.scatter(-1, order, sorted_m.masked_fill(drop, 0.0))
    else:
        kept = mass
    n, v = kept.shape
    nb = -(-v // block)
    padded = kept if nb * block == v else torch.nn.functional.pad(kept, (0, nb * block - v))
    blocks = padded.view(n, nb, block)
    block_cdf = blocks.sum(-1).cumsum(-1)
    u = (torch.rand(n, 1, device=x.device) if uniforms is None else uniforms) * block_cdf[:, -1:]
    b = torch.searchsorted(block_cdf, u).clamp(max=nb - 1)
    below = torch.where(b > 0, block_cdf.gather(-1, (b - 1).clamp(min=0)), torch.zeros_like(u))
    inner = blocks[torch.arange(n, device=x.device), b[:, 0]].cumsum(-1)
    t = torch.searchsorted(inner, u - below).clamp(max=block - 1)
    tokens = (b * block + t).squeeze(-1).clamp(max=v - 1)
    log_total = (mass.sum(-1).log() + top.squeeze(-1))  # logsumexp of x
    return tokens, x.gather(-1, tokens[:, None]).squeeze(-1) - log_total


class _ReservedLayer:
    """One layer's KV cache in a buffer reserved for the whole generation: each step writes
    its keys and values in place and attention reads a view of the filled part. transformers'
    DynamicLayer concatenates instead, copying the whole cache of every layer at every step
    (30 % of a decode step's time at the default's 48 rows, measured with torch.profiler)."""

    def __init__(self, layer, capacity: int):
        keys, values = layer.keys, layer.values
        b, h, length, _ = keys.shape
        self.layer = layer
        self._k = keys.new_empty(b, h, capacity, keys.shape[-1])
        self._v = values.new_empty(b, h, capacity, values.shape[-1])
        self._k[:, :, :length] = keys
        self._v[:, :, :length] = values
        self.length = length

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self.length + key_states.shape[-2]
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.layer.keys, self.layer.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.layer.keys, self.layer.values


def _reserve(cache, capacity: int) -> None:
    """Give every layer of a transformers DynamicCache a buffer of `capacity` positions."""
    for layer in cache.layers:
        layer.update = _ReservedLayer(layer, capacity).update


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
    draws: RowDraws | None = None,
) -> Rollout:
    """Sample `num_generations` completions per prompt (rows grouped by prompt).

    Each prompt is read once (its KV cache then repeated for its G rows), then one token per
    step for every row until every row has ended (EOS) or `max_new_tokens`: a plain decode
    loop over the model with a KV cache, without transformers' generate() and its per-step
    overhead. Sampling uses the global torch RNG (seed it before the call for determinism),
    or `draws`: this call's rows of a larger batch's draws, so that a batch split over
    processes samples what one process would.
    `with_logprobs`: also keep each sampled token's log-prob under logits / temperature
    (equal to token_logprobs on the finished rollout up to float rounding, tested).
    """
    texts = chat_prompts(tokenizer, prompts, system_prompt)
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    device = next(model.parameters()).device
    eos = torch.tensor(eos_token_ids(model, tokenizer), device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0])
    g = num_generations
    was_training = model.training
    model.eval()
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # the first real token is position 0
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                use_cache=True, logits_to_keep=1)
    key = "cache" if "cache" in out else "past_key_values"  # transformers 5 renamed it
    cache = out[key]
    if g > 1:
        cache.batch_repeat_interleave(g)
    _reserve(cache, prompt_ids.shape[1] + max_new_tokens)
    logits = out.logits[:, -1].repeat_interleave(g, 0)
    mask = prompt_mask.repeat_interleave(g, 0)
    position = positions[:, -1:].repeat_interleave(g, 0)
    n = mask.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    tokens, logps = [], []
    for step in range(max_new_tokens):
        token, logp = sample_tokens(logits, temperature, top_p,
                                    uniforms=draws.next(n, device) if draws else None)
        token = token.masked_fill(done, pad)  # a row that has ended only pads
        tokens.append(token)
        logps.append(logp)
        done |= torch.isin(token, eos)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], 1)
        position = position + 1
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                       use_cache=True, **{key: cache}).logits[:, -1]
    model.train(was_training)
    del cache
    completion = torch.stack(tokens, 1)
    comp_mask = completion_mask_from_eos(completion, eos.tolist())
    completion = torch.where(comp_mask.bool(), completion, pad)
    ids = prompt_ids.repeat_interleave(g, 0)
    return Rollout(
        input_ids=torch.cat([ids, completion], 1),
        attention_mask=torch.cat([prompt_mask.repeat_interleave(g, 0), comp_mask], 1),
        completion_mask=comp_mask,
        prompt_len=ids.shape[1],
        completions=tokenizer.batch_decode(completion, skip_special_tokens=True),
        logprobs=torch.stack(logps, 1) * comp_mask if with_logprobs else None,
    )
