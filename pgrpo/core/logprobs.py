"""Scoring rollouts: the log-prob of every completion token under a model, at a temperature.

    token_logprobs(model, ids, mask, prompt_len)         one forward per row
    shared_prompt_logprobs(model, ids, mask, P, G)       rows in groups of G sharing a prompt:
                                                         each prompt computed once (below)
    completion_logprobs(...)                             the second when G > 1, else the first
    batched_logprobs(model, rollout, T, micro, G)        over a whole rollout, no gradients

Log-probs are taken under logits / temperature, the distribution that sampled them, so
the importance ratio of on-policy samples is exactly 1. Only the positions whose logits a
loss reads go through the output layer.

The shared-prompt forward (Prefix Grouper, arXiv 2506.05433) gives the same numbers as
`token_logprobs` on G separate rows at a fraction of the work. A rollout's rows come in groups of G that share a left-padded prompt of P tokens and end in
C completion tokens each. The plain forward runs G rows of P + C positions; here each group
is one row of P + G * C positions,

    [ prompt (P) | completion 1 (C) | completion 2 (C) | ... | completion G (C) ]

with an attention mask under which the prompt sees itself causally, and completion j sees
the prompt's real tokens and its own earlier tokens, never another completion's. Positions
restart after the prompt for every completion (n_real_prompt + t, as in the plain row), so
each completion token sees exactly the keys and values it sees in its own row: same
log-probs, and the prompt's gradient is the sum of what its G copies would receive. Only the
G * C positions whose logits a loss reads go through the output layer (the prompt's last
position once per completion, for the first completion token).

With the default's 77-token prompts, G = 6 and 40-token completions, a group is 317
positions instead of 6 x 117 = 702 (benchmarks/step_profile.py measures what it saves).

    logp, entropy = shared_prompt_logprobs(model, ids, mask, prompt_len, num_generations=6)
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgrpo.core.rollout import Rollout


def _scores(logits: Tensor, targets: Tensor, temperature: float,
            with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """Log-probs of `targets` [.., C] under logits [.., C, V] / temperature (log-softmax never
    materialized over the vocabulary: logsumexp + gather), and optionally the entropies."""
    logits = logits.float()
    if temperature != 1.0:  # a division copies the logits (kept alive for the backward)
        logits = logits / temperature
    lse = logits.logsumexp(-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = lse - (logits.softmax(-1) * logits).sum(-1)
    return logp, entropy


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
    return _scores(logits, input_ids[:, prompt_len:], temperature, with_entropy)


def completion_logprobs(model, input_ids: Tensor, attention_mask: Tensor, prompt_len: int,
                        num_generations: int = 1, temperature: float = 1.0,
                        with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """token_logprobs of rows in groups of `num_generations` that share their prompt (the
    layout generate() returns): each prompt computed once per group when G > 1
    (shared_prompt_logprobs below), the plain per-row forward when G = 1."""
    if num_generations > 1:
        return shared_prompt_logprobs(model, input_ids, attention_mask, prompt_len,
                                      num_generations, temperature, with_entropy)
    return token_logprobs(model, input_ids, attention_mask, prompt_len, temperature, with_entropy)


def micro_batches(num_rows: int, micro_batch_size: int, num_generations: int) -> list[slice]:
    """Row slices of at most `micro_batch_size` rows (at least one prompt's G), whole groups
    of G rows each: a group sharing its prompt is never split."""
    step = max(1, micro_batch_size // num_generations) * num_generations
    return [slice(start, start + step) for start in range(0, num_rows, step)]


@torch.no_grad()
def batched_logprobs(model, rollout: Rollout, temperature: float, micro_batch_size: int,
                     num_generations: int = 1) -> Tensor:
    """completion_logprobs over the whole rollout in micro-batches, without gradients."""
    chunks = []
    for rows in micro_batches(rollout.input_ids.shape[0], micro_batch_size, num_generations):
        ids, mask = rollout.select(rows)
        chunks.append(completion_logprobs(model, ids, mask, rollout.prompt_len, num_generations,
                                          temperature)[0])
    return torch.cat(chunks)


def _check_grouped(prompt_ids: Tensor, prompt_mask: Tensor, num_generations: int) -> None:
    g = num_generations
    ids, mask = prompt_ids.unflatten(0, (-1, g)), prompt_mask.unflatten(0, (-1, g))
    if not (torch.equal(ids, ids[:, :1].expand_as(ids)) and torch.equal(mask, mask[:, :1].expand_as(mask))):
        raise ValueError(f"rows are not in groups of {g} that share a prompt: the shared-prompt "
                         "forward needs the layout of pgrpo.core.rollout.generate")


def packed_layout(prompt_mask: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For B groups: prompt_mask [B, P], completion_mask [B, G, C] (1 on real tokens) ->
    (allowed [B, L, L] bool: query row may attend to key column, position_ids [B, L],
    logit positions [G * C]: where each completion token's predicting hidden state is),
    L = P + G * C."""
    p = prompt_mask.shape[1]
    _, g, c = completion_mask.shape
    length = p + g * c
    device = prompt_mask.device
    ar = torch.arange(length, device=device)
    block = torch.where(ar >= p, torch.div(ar - p, c, rounding_mode="floor"), -1)
    key_real = torch.cat([prompt_mask, completion_mask.flatten(1)], 1).bool()  # [B, L]
    causal = ar[None, :] <= ar[:, None]
    # a key in the prompt, or in the query's own block (the prompt is block -1 of itself)
    same_part = (ar[None, :] < p) | (block[:, None] == block[None, :])
    allowed = (causal & same_part)[None] & key_real[:, None, :]
    # every row attends at least to itself: padding rows (whose outputs nothing reads) would
    # otherwise be all-masked, which sdpa turns into NaN
    allowed |= torch.eye(length, dtype=torch.bool, device=device)[None]
    n_real = prompt_mask.sum(-1, keepdim=True)  # [B, 1]
    prompt_pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    t = torch.arange(c, device=device).repeat(g)  # [G * C], block-major
    position_ids = torch.cat([prompt_pos, n_real + t[None]], 1)
    logit_pos = p + ar[: g * c] - 1  # the position before each completion token ...
    logit_pos = torch.where(t == 0, p - 1, logit_pos)  # ... the prompt's last for the first one
    return allowed, position_ids, logit_pos


def _attention_mask(model, allowed: Tensor) -> Tensor:
    """The 4D mask transformers passes through untouched: bool for sdpa / flash, additive
    float for the eager implementation (which adds it to the scores)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
    mask = allowed[:, None]
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min)
    return mask


def shared_prompt_logprobs(model, input_ids: Tensor, attention_mask: Tensor, prompt_len: int,
                           num_generations: int, temperature: float = 1.0,
                           with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """token_logprobs (pgrpo.core.rollout) of rows that come in groups of `num_generations`
    sharing their prompt, each group forwarded as one packed row: [N, C] log-probs (and
    entropies) of the completion tokens, equal to the plain computation within float
    rounding (tests/core/test_shared_prompt.py)."""
    g, p = num_generations, prompt_len
    n, total = input_ids.shape
    if n % g:
        raise ValueError(f"{n} rows are not whole groups of {g}")
    c = total - p
    _check_grouped(input_ids[:, :p], attention_mask[:, :p], g)
    prompt_ids, prompt_mask = input_ids[::g, :p], attention_mask[::g, :p]
    completion_ids = input_ids[:, p:]
    completion_mask = attention_mask[:, p:].unflatten(0, (-1, g))
    allowed, position_ids, logit_pos = packed_layout(prompt_mask, completion_mask)
    packed = torch.cat([prompt_ids, completion_ids.unflatten(0, (-1, g)).flatten(1)], 1)
    # The G first completion tokens are all predicted from the prompt's last position. Asking
    # the model for that position G times would make the backward of its hidden-state gather
    # an accumulating scatter with repeated indices, whose CPU kernel adds in a thread-dependent
    # order (the gradients then differ across processes in the last bits). So it is kept once,
    # the other positions are all distinct, and the G copies are an expand, whose backward is an
    # ordinary sum: the same numbers, bit for bit from run to run (tests/core/test_shared_prompt.py).
    distinct = torch.cat([logit_pos[:1], logit_pos.view(g, c)[:, 1:].flatten()])
    logits = model(input_ids=packed, attention_mask=_attention_mask(model, allowed),
                   position_ids=position_ids, logits_to_keep=distinct, use_cache=False).logits
    targets = completion_ids.unflatten(0, (-1, g))  # [B, G, C]
    first = _scores(logits[:, :1, None].expand(-1, g, 1, -1), targets[..., :1], temperature,
                    with_entropy)  # from [B, G, 1, V]: a view, the logits are not copied
    rest = _scores(logits[:, 1:].unflatten(1, (g, c - 1)), targets[..., 1:], temperature,
                   with_entropy)  # from [B, G, C - 1, V]
    logp, entropy = (None if a is None else torch.cat([a, b], 2).flatten(0, 1)
                     for a, b in zip(first, rest))
    return logp, entropy
