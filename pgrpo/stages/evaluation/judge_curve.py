"""Learning curves from the judge: the policy on held-out validation prompts every k steps.

The training reward on training batches can rise while users are served worse (a reward
model can be hacked), so convergence speed and the area under the curve are read from
the judge on prompts training never sees: the held-out prompts whose
`pgrpo.stages.evaluation.evaluate.eval_role` is "val" (never the report's test prompts). Every evaluation
uses the same prompts and the same sampling seeds, so points differ by the policy alone.

    python -m pgrpo.orchestration.pipeline train_policy --algorithm grpo     # with policy.judge_every: 2
    # metrics.jsonl then has judge/reward/<group> and judge/mean_reward at steps 0, 2, 4, ...

    from pgrpo.stages.evaluation.judge_curve import JudgeCurve
    hook = JudgeCurve.from_processed("data/processed", every=2, per_group=4, samples=2,
                                     max_new_tokens=40)
    train_policy(cfg, out, hooks=[hook])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgrpo.core.io import read_table
from pgrpo.stages.evaluation.judge import judge_kind, judge_scores
from pgrpo.stages.evaluation.curves import JUDGE_CURVE_KEY as KEY  # per-group curve, read by pgrpo.stages.evaluation.curves
from pgrpo.core.prompts import PromptSet
from pgrpo.core.rollout import generate
from pgrpo.core.rollout import derived_seed

MEAN_KEY = "judge/mean_reward"  # unweighted mean over groups
SEED = 2024  # sampling seed of every curve point (the same draws at every step)


class JudgeCurve:
    """A trainer step hook (pgrpo.core.trainer.StepHook): judge metrics at step 0 and every `every`."""

    def __init__(self, prompts: PromptSet, judge, every: int, samples: int, max_new_tokens: int,
                 temperature: float = 1.0, system_prompt: str | None = None,
                 batch_size: int = 128, last_step: int | None = None):
        if every < 1:
            raise ValueError(f"judge curve: every must be >= 1, got {every}")
        if judge_kind(judge) is None:
            raise ValueError("judge curve: the judge table has no rows (file source): there is "
                             "nothing to judge with; set policy.judge_every: 0")
        self.prompts, self.judge, self.every, self.samples = prompts, judge, every, samples
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.system_prompt, self.batch_size, self.last_step = system_prompt, batch_size, last_step

    @classmethod
    def from_processed(cls, processed_dir: str | Path, every: int, per_group: int, samples: int,
                       max_new_tokens: int, **kwargs) -> JudgeCurve:
        """Validation prompts and the judge from the prepare stage's folder."""
        from pgrpo.stages.evaluation.evaluate import eval_prompts

        processed_dir = Path(processed_dir)
        prompts = eval_prompts(processed_dir / "prompts.parquet", processed_dir / "groups.parquet",
                               per_group, SEED, role="val")
        return cls(prompts, read_table(processed_dir / "judge.parquet"), every, samples,
                   max_new_tokens, **kwargs)

    def __call__(self, step: int, model, tokenizer) -> dict[str, float]:
        if step % self.every and step != self.last_step:
            return {}
        g, per_call = self.samples, max(1, self.batch_size // self.samples)
        completions: list[str] = []
        rng_state = torch.get_rng_state()  # the hook must not move training's random stream
        for k, start in enumerate(range(0, len(self.prompts), per_call)):
            torch.manual_seed(derived_seed(SEED, k))
            completions += generate(model, tokenizer, self.prompts.prompts[start:start + per_call],
                                    g, max_new_tokens=self.max_new_tokens,
                                    temperature=self.temperature,
                                    system_prompt=self.system_prompt).completions
        torch.set_rng_state(rng_state)
        users = [m["user_id"] for m in self.prompts.metadata for _ in range(g)]
        scores = judge_scores(self.judge, users, completions)
        gids = self.prompts.group_ids.repeat_interleave(g).numpy()
        out = {KEY.format(group=self.prompts.group_names[k]): float(scores[gids == k].mean())
               for k in np.unique(gids)}
        out[MEAN_KEY] = float(np.mean(list(out.values())))
        return out
