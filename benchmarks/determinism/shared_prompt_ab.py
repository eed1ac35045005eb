"""The shared-prompt forward + backward before and after commit 7c1c93f (the prompt's last
position asked for once instead of G times), alternated 6 times in one process at the
default's shapes (4 prompts x G=6, 77-token prompts, 40-token completions, SmolLM2).
The figure in docs/results.md: new/old 1.05 (medians 9.38 s vs 8.94 s), within the run-to-run spread.

    python benchmarks/determinism/shared_prompt_ab.py      # ~2 min on 2 cores

`old` below is the code before the fix, kept here only as this benchmark's baseline.
"""
import statistics
import time

import torch

from pgrpo.core import logprobs as L
from pgrpo.core.config import policy_config
from pgrpo.core.models import load_policy

cfg = policy_config("params.yaml", "grpo", {})
model, tok = load_policy(cfg.model)
torch.manual_seed(0)
B, G, P, C = 4, 6, 77, 40
V = model.config.vocab_size
prompt = torch.randint(0, V, (B, P)).repeat_interleave(G, 0)
ids = torch.cat([prompt, torch.randint(0, V, (B * G, C))], 1)
mask = torch.ones_like(ids)
def old(model, input_ids, attention_mask, p, g, temperature=1.0):
    n, total = input_ids.shape; c = total - p
    prompt_ids, prompt_mask = input_ids[::g, :p], attention_mask[::g, :p]
    completion_ids = input_ids[:, p:]
    completion_mask = attention_mask[:, p:].unflatten(0, (-1, g))
    allowed, position_ids, logit_pos = L.packed_layout(prompt_mask, completion_mask)
    packed = torch.cat([prompt_ids, completion_ids.unflatten(0, (-1, g)).flatten(1)], 1)
    logits = model(input_ids=packed, attention_mask=L._attention_mask(model, allowed),
                   position_ids=position_ids, logits_to_keep=logit_pos, use_cache=False).logits
    return L._scores(logits.unflatten(1, (g, c)).flatten(0, 1), completion_ids, temperature, False)
def run(fn):
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    lp = fn(model, ids, mask, P, G, 1.0)[0]
    lp.sum().backward()
    return time.perf_counter() - t, lp.detach()
times = {"old": [], "new": []}
for i in range(6):
    for name, fn in (("old", old), ("new", L.shared_prompt_logprobs)):
        dt, lp = run(fn); times[name].append(dt)
        if i == 0: print(name, lp[0, :3])
for k, v in times.items(): print(k, "median s", round(statistics.median(v[1:]), 3), [round(x, 2) for x in v])
print("new/old", statistics.median(times["new"][1:]) / statistics.median(times["old"][1:]))
