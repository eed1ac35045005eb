"""The shared-prompt forward (pgrpo.core.logprobs) against the plain per-row forward:
same log-probs, entropies and gradients within float rounding, on the tiny model and on
SmolLM2-135M's architecture (its config, 2 of its 30 layers, random weights), with
completions that end at different lengths and prompts of different lengths."""

import pytest
import torch

from pgrpo.core.logprobs import (
    batched_logprobs,
    completion_logprobs,
    micro_batches,
    packed_layout,
    shared_prompt_logprobs,
    token_logprobs,
)
from pgrpo.core.models import build_tiny_model
from pgrpo.core.rollout import Rollout


def smollm2_architecture(num_layers: int = 2):
    """SmolLM2-135M-Instruct's config (as its GGUF converts: hidden 576, 9 query and 3
    key-value heads, MLP 1536, vocab 49152, RoPE theta 1e5, tied embeddings) with fewer
    layers and random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=num_layers, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def ragged_rollout(vocab: int, prompt_lens: list[int], completion_lens: list[list[int]],
                   completion_len: int, pad: int = 0) -> Rollout:
    """Left-padded prompts of the given real lengths, G completions each of the given real
    lengths (then padding outside the mask), random tokens: the layout generate() returns."""
    gen = torch.Generator().manual_seed(1)
    p = max(prompt_lens)
    ids, att = [], []
    for plen, lens in zip(prompt_lens, completion_lens):
        prompt = torch.randint(3, vocab, (plen,), generator=gen)
        for clen in lens:
            comp = torch.randint(3, vocab, (completion_len,), generator=gen)
            comp[clen:] = pad
            ids.append(torch.cat([torch.full((p - plen,), pad), prompt, comp]))
            att.append(torch.cat([torch.zeros(p - plen), torch.ones(plen),
                                  (torch.arange(completion_len) < clen).float()]).long())
    ids, att = torch.stack(ids), torch.stack(att)
    return Rollout(input_ids=ids, attention_mask=att, completion_mask=att[:, p:], prompt_len=p,
                   completions=[""] * len(ids))


def _loss_and_grads(model, fn, rollout, weights):
    model.zero_grad()
    logp, entropy = fn()
    mask = rollout.completion_mask.float()
    (logp * mask * weights).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), entropy, grads


@pytest.mark.parametrize("arch", ["tiny", "smollm2"])
def test_shared_prompt_logprobs_and_gradients_equal_the_plain_forward(arch):
    model = build_tiny_model(seed=1)[0].eval() if arch == "tiny" else smollm2_architecture()
    g = 3
    r = ragged_rollout(model.config.vocab_size, [7, 12], [[5, 1, 9], [9, 3, 6]], completion_len=9)
    weights = torch.randn(r.input_ids.shape[0], 9, generator=torch.Generator().manual_seed(2))
    plain = _loss_and_grads(model, lambda: token_logprobs(
        model, r.input_ids, r.attention_mask, r.prompt_len, 0.8, with_entropy=True), r, weights)
    shared = _loss_and_grads(model, lambda: shared_prompt_logprobs(
        model, r.input_ids, r.attention_mask, r.prompt_len, g, 0.8, with_entropy=True), r, weights)
    mask = r.completion_mask.bool()
    torch.testing.assert_close(shared[0][mask], plain[0][mask], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1][mask], plain[1][mask], atol=2e-5, rtol=1e-5)
    assert plain[2].keys() == shared[2].keys()
    for name, grad in plain[2].items():
        scale = grad.abs().max().clamp(min=1e-8)
        assert (shared[2][name] - grad).abs().max() / scale < 1e-4, name


def test_the_packed_mask_keeps_completions_apart_and_positions_restart_after_the_prompt():
    # one group: a 3-token prompt with one pad in front, two completions of 2 (second: 1 real)
    allowed, pos, logit_pos = packed_layout(torch.tensor([[0, 1, 1]]),
                                            torch.tensor([[[1, 1], [1, 0]]]))
    a = allowed[0].int().tolist()
    assert a[1] == [0, 1, 0, 0, 0, 0, 0] and a[2] == [0, 1, 1, 0, 0, 0, 0]   # prompt: causal, no pad
    assert a[4] == [0, 1, 1, 1, 1, 0, 0]  # completion 1, token 2: prompt + its own tokens
    assert a[5] == [0, 1, 1, 0, 0, 1, 0]  # completion 2, token 1: prompt, not completion 1
    assert a[6][6] == 1 and a[6][5] == 1  # a row after the EOS still sees itself (no NaN)
    assert a[0] == [1, 0, 0, 0, 0, 0, 0]  # a padding row sees itself only
    assert pos[0].tolist() == [0, 0, 1, 2, 3, 2, 3]
    assert logit_pos.tolist() == [2, 3, 2, 5]  # each token predicted from the one before it


def test_rows_that_do_not_share_their_prompt_are_refused():
    model = build_tiny_model(seed=1)[0].eval()
    r = ragged_rollout(model.config.vocab_size, [4, 5], [[2, 2], [2, 2]], completion_len=2)
    with pytest.raises(ValueError, match="groups of 4"):
        shared_prompt_logprobs(model, r.input_ids, r.attention_mask, r.prompt_len, 4)
    ids = r.input_ids.clone()
    ids[1, -3] = ids[1, -3] + 1  # the second row's prompt differs from the first's
    with pytest.raises(ValueError, match="share a prompt"):
        shared_prompt_logprobs(model, ids, r.attention_mask, r.prompt_len, 2)


def test_micro_batches_never_split_a_group_and_batched_logprobs_agree():
    assert micro_batches(12, 8, 3) == [slice(0, 6), slice(6, 12)]
    assert micro_batches(12, 2, 3) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    assert micro_batches(5, 2, 1) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    model = build_tiny_model(seed=1)[0].eval()
    r = ragged_rollout(model.config.vocab_size, [3, 6, 4], [[2, 4], [4, 1], [3, 3]], completion_len=4)
    mask = r.completion_mask.bool()
    plain = batched_logprobs(model, r, 1.0, 8)
    grouped = batched_logprobs(model, r, 1.0, 4, num_generations=2)
    torch.testing.assert_close(grouped[mask], plain[mask], atol=2e-5, rtol=1e-5)
    one, _ = completion_logprobs(model, r.input_ids, r.attention_mask, r.prompt_len, 1)
    torch.testing.assert_close(one[mask], plain[mask])



def test_shared_prompt_gradients_are_bitwise_repeatable():
    """The same inputs, the same gradient bits, every time. When the prompt's last position
    was asked for G times, the backward of that gather was an accumulating scatter whose CPU
    kernel, on two threads, adds the G copies in a timing-dependent order: on one packed row
    at SmolLM2's sizes 3 of 4 repeats gave different bits (never on the tiny model), and a
    trainer step's 272 gradients differed by ~1e-7 from run to run."""
    import hashlib

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the race needs two threads; CI machines have two cores
    try:
        model = smollm2_architecture()
        r = ragged_rollout(model.config.vocab_size, [77], [[40, 31, 40, 12, 40, 40]], 40)
        digests = set()
        for _ in range(5):
            model.zero_grad()
            logp, _ = shared_prompt_logprobs(model, r.input_ids, r.attention_mask, r.prompt_len, 6)
            (logp * r.completion_mask).sum().backward()
            digest = hashlib.sha256()
            for p in model.parameters():
                digest.update(p.grad.numpy().tobytes())
            digests.add(digest.hexdigest())
    finally:
        torch.set_num_threads(threads)
    assert len(digests) == 1, f"{len(digests)} different gradients from 5 identical backwards"
