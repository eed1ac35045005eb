"""The trainer's sampling and forward as they were before the speed work, kept only to measure
against: `python benchmarks/step_profile.py --baseline` profiles a step on them, and
`benchmarks/default_tuning/tune.py --baseline_paths` trains on them (did the speed work change
what the default learns?).

- sampling: each prompt's KV cache computed once, then transformers' generate()
  (torch.multinomial, its own per-step bookkeeping), commit 7b9e587;
- forward: every completion a row of its own, its prompt recomputed;
- micro-batches of rows, not of prompts.

    from baseline_paths import baseline_paths   # with benchmarks/ on sys.path
    with baseline_paths():
        trainer.train_step()
"""

from __future__ import annotations

import torch


@torch.no_grad()
def hf_generate(model, tokenizer, prompts, num_generations, *, max_new_tokens, temperature=1.0,
                top_p=1.0, system_prompt=None, with_logprobs=False, draws=None):
    """Sampling as it was (commit 7b9e587): each prompt's KV cache computed once, then
    transformers' generate() (torch.multinomial, its own per-step bookkeeping). `draws` (the
    trainer's rank-independent draws, added later) is ignored: generate() samples from torch's
    global generator, which the trainer seeds just before, as it did then."""
    from pgrpo.core.rollout import Rollout, chat_prompts, completion_mask_from_eos, eos_token_ids

    texts = chat_prompts(tokenizer, prompts, system_prompt)
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False)
    g = num_generations
    ids, mask = enc["input_ids"].repeat_interleave(g, 0), enc["attention_mask"].repeat_interleave(g, 0)
    eos = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=enc["input_ids"][:, :-1], attention_mask=enc["attention_mask"][:, :-1],
                position_ids=positions[:, :-1], use_cache=True, logits_to_keep=1)
    key = "cache" if "cache" in out else "past_key_values"
    cache = out[key]
    cache.batch_repeat_interleave(g)
    out = model.generate(input_ids=ids, attention_mask=mask, **{key: cache}, do_sample=True,
                         temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                         output_logits=with_logprobs, return_dict_in_generate=True)
    model.train(was_training)
    completion = out.sequences[:, ids.shape[1]:]
    comp_mask = completion_mask_from_eos(completion, eos)
    completion = torch.where(comp_mask.bool(), completion, tokenizer.pad_token_id)
    return Rollout(input_ids=torch.cat([ids, completion], 1),
                   attention_mask=torch.cat([mask, comp_mask], 1), completion_mask=comp_mask,
                   prompt_len=ids.shape[1],
                   completions=tokenizer.batch_decode(completion, skip_special_tokens=True))


def per_row_logprobs(model, input_ids, attention_mask, prompt_len, num_generations=1,
                     temperature=1.0, with_entropy=False):
    """The forward as it was: every completion a row of its own, its prompt recomputed."""
    from pgrpo.core.logprobs import token_logprobs

    return token_logprobs(model, input_ids, attention_mask, prompt_len, temperature, with_entropy)


def baseline_paths():
    """Patch the trainer's sampling and forward to the baseline's (undone on exit)."""
    import contextlib
    from unittest import mock

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch("pgrpo.core.trainer.generate", hf_generate))
    stack.enter_context(mock.patch("pgrpo.core.trainer.completion_logprobs", per_row_logprobs))
    stack.enter_context(mock.patch("pgrpo.core.trainer.micro_batches", lambda n, size, g: [
        slice(start, start + size) for start in range(0, n, size)]))  # rows, not prompts
    return stack
