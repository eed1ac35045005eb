"""Preference pairs between the base policy's own samples: what the reward model will score.

The template pairs of the prepare stage teach the reward model what a persona likes in
hand-written candidates; the policy then writes text of another kind, which that model
never saw (measured: its scores rank a prompt's SmolLM2 samples like the judge at a
within-prompt correlation of only 0.43 on average). Real preference collection compares
the policy's own samples; here the simulated annotator is the user's judge with the
same Bradley-Terry noise as the template pairs (prepare.bt_temperature):

    P(a chosen over b) = sigmoid((judge(a) - judge(b)) / bt_temperature)

    from pgrpo.stages.reward.policy_pairs import policy_pairs
    pairs, stats = policy_pairs("smollm2-135m-instruct", "data/processed", n_prompts=240)

Used by the train_reward stage when reward.policy_pairs > 0 (pgrpo.orchestration.pipeline).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pgrpo.stages.data.synthetic import prefer_first
from pgrpo.core.io import read_table
from pgrpo.stages.evaluation.judge import judge_kind, judge_scores
from pgrpo.core.prompts import load_prompts
from pgrpo.core.rollout import generate
from pgrpo.core.rollout import derived_seed


def policy_pairs(model_name: str, processed_dir: str | Path, n_prompts: int,
                 samples_per_prompt: int = 4, pairs_per_prompt: int = 3,
                 max_new_tokens: int = 40, temperature: float = 1.0,
                 bt_temperature: float = 0.5, system_prompt: str | None = None, seed: int = 0,
                 batch_size: int = 32) -> tuple[pd.DataFrame, dict]:
    """Pairs (schema Pairs, split "train") between base samples of `n_prompts` training prompts.

    A seeded draw of training prompts; `samples_per_prompt` completions each; up to
    `pairs_per_prompt` distinct pairs of different completions per prompt, labelled by the
    judge with Bradley-Terry noise. Returns (pairs, stats: label agreement with the
    noiseless judge, pairs, prompts).
    """
    from pgrpo.core.models import load_policy

    processed_dir = Path(processed_dir)
    judge = read_table(processed_dir / "judge.parquet")
    if judge_kind(judge) is None:
        raise ValueError("reward.policy_pairs needs a judge to label the pairs, and this data "
                         "has none (file source): set reward.policy_pairs: 0")
    prompts = load_prompts(str(processed_dir / "prompts.parquet"), seed,
                           processed_dir / "groups.parquet", split="train")
    order = sorted(range(len(prompts)), key=lambda i: prompts.metadata[i]["prompt_id"])
    random.Random(f"policy-pairs-{seed}").shuffle(order)
    chosen = prompts.subset(order[:n_prompts])
    model, tokenizer = load_policy(model_name)
    model.eval()
    g, per_call = samples_per_prompt, max(1, batch_size // samples_per_prompt)
    completions: list[str] = []
    for k, start in enumerate(tqdm(range(0, len(chosen), per_call), desc="sampling policy pairs",
                                   unit="batch")):
        torch.manual_seed(derived_seed(seed, k))
        completions += generate(model, tokenizer, chosen.prompts[start:start + per_call], g,
                                max_new_tokens=max_new_tokens, temperature=temperature,
                                system_prompt=system_prompt).completions
    users = [m["user_id"] for m in chosen.metadata for _ in range(g)]
    scores = judge_scores(judge, users, completions)
    rng = random.Random(f"policy-pairs-labels-{seed}")
    rows, agree = [], 0
    for i, meta in enumerate(chosen.metadata):
        texts, utils = completions[i * g:(i + 1) * g], scores[i * g:(i + 1) * g]
        combos = [(a, b) for a in range(g) for b in range(a + 1, g)
                  if texts[a].strip() and texts[a] != texts[b]]
        for a, b in rng.sample(combos, min(pairs_per_prompt, len(combos))):
            first = prefer_first(utils[a], utils[b], bt_temperature, rng)
            c, r = (a, b) if first else (b, a)
            agree += utils[c] > utils[r]
            rows.append({"pair_id": f"{meta['prompt_id']}-policy{len(rows)}",
                         "user_id": meta["user_id"], "prompt_id": meta["prompt_id"],
                         "prompt": chosen.prompts[i], "chosen": texts[c], "rejected": texts[r],
                         "split": "train"})
    pairs = pd.DataFrame(rows, columns=["pair_id", "user_id", "prompt_id", "prompt", "chosen",
                                        "rejected", "split"])
    stats = {"policy_pairs": len(pairs), "policy_pair_prompts": len(chosen),
             "policy_pair_label_agreement": float(agree / len(pairs)) if len(pairs) else None,
             "policy_sample_judge_mean": float(np.mean(scores)) if len(scores) else None}
    return pairs, stats
