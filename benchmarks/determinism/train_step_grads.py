"""Are a training step's gradients the same bits in two processes? (docs/results.md, "Reproducible bit
for bit again"; commit 7c1c93f measured 0 of 272 tensors differing, all 272 before it.)

    python benchmarks/determinism/train_step_grads.py          # ~4 min on 2 cores: 2 x 1 step

Needs `make run` (or `dvc repro train_reward`) first: params.yaml's data and reward model.
Each process builds the grpo trainer for one step and saves the gradients an optimizer
pre-hook sees; the last line is `differing_tensors=<n> of <total> max_abs_diff=<x>`.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

STEP = """
import sys, torch
import pgrpo.stages.reward.training_rewards  # noqa: F401 (the reward-model reward)
from pgrpo.core.config import policy_config
from pgrpo.core.trainer import Trainer
t = Trainer(policy_config("params.yaml", "grpo", {"steps": 1, "resume": False}), sys.argv[2])
saved = {}
def hook(opt, args, kwargs):
    for i, g in enumerate(opt.param_groups):
        for j, p in enumerate(g["params"]):
            if p.grad is not None:
                saved[f"{i}.{j}"] = p.grad.detach().clone()
t.optimizer.optimizer.register_step_pre_hook(hook)
t.train()
torch.save(saved, sys.argv[1])
"""


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"grads{i}.pt" for i in (1, 2)]
        for i, f in enumerate(files):
            subprocess.run([sys.executable, "-c", STEP, str(f), str(Path(tmp) / f"run{i}")],
                           check=True)
        a, b = (torch.load(f, weights_only=True) for f in files)
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    worst = max(((a[k] - b[k]).abs().max().item() for k in diff), default=0.0)
    print(f"differing_tensors={len(diff)} of {len(a)} max_abs_diff={worst:.3g}")


if __name__ == "__main__":
    main()
