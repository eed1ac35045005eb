"""Fault injection: a training process killed in the middle of writing a checkpoint (issue 15).

A real subprocess trains a tiny model; its checkpoint writer is slowed down at the second
checkpoint, and the test SIGKILLs the process while that checkpoint is half on disk. The
half-written one must never be loaded: the rerun resumes from the previous complete
checkpoint and ends with the same weights and metrics as a run that was never stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from pgrpo.core.checkpoint import checkpoint_root, latest_checkpoint
from pgrpo.core.metric_log import read_metrics
from pgrpo.core.trainer import Trainer, train_policy

REPO = Path(__file__).resolve().parents[2]
CFG = dict(model="tiny-random-llama", steps=6, prompts_per_step=2, num_generations=4,
           max_new_tokens=12, micro_batch_size=4, lr=1e-3, checkpoint_every=2, keep_checkpoints=3)
# The child: train, but hang inside the write of the step-4 checkpoint (after the weights,
# before the optimizer state), saying so on stdout, so the parent can kill it there.
CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
import torch
import pgrpo.core.checkpoint as ck
from pgrpo.core.config import PolicyConfig
from pgrpo.core.trainer import train_policy
real_save = torch.save
def slow_save(obj, path, *a, **k):
    real_save(obj, path, *a, **k)
    if "step_000004.tmp" in str(path):
        print("writing", flush=True)
        time.sleep(300)
ck.torch.save = slow_save
train_policy(PolicyConfig(**{cfg!r}), {out!r})
"""


def _weights(run: Path) -> dict:
    return safetensors.torch.load_file(str(run / "model" / "model.safetensors"))


def test_a_kill_mid_checkpoint_never_leaves_one_that_loads(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), cfg=CFG, out=str(out))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", "the child never reached the checkpoint"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    # What the kill left: step 2 complete, step 4 half-written in its .tmp folder.
    names = sorted(p.name for p in checkpoint_root(out).iterdir())
    assert names == ["step_000002", "step_000004.tmp"], names
    assert (checkpoint_root(out) / "step_000004.tmp" / "model.safetensors").is_file()
    assert latest_checkpoint(out).name == "step_000002"

    from pgrpo.core.config import PolicyConfig
    cfg = PolicyConfig(**CFG)
    resumed = Trainer(cfg, out)
    assert resumed.step == 2  # the complete checkpoint, not the half-written one
    resumed.train()
    whole = train_policy(cfg, tmp_path / "whole")
    a, b = _weights(tmp_path / "whole"), _weights(out)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    rows_a = read_metrics(whole.model_dir.parent / "metrics.jsonl")
    rows_b = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows_b] == list(range(1, 7))
    for ra, rb in zip(rows_a, rows_b):
        for k in ra:
            if not k.startswith("perf/"):
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    # The stale .tmp is gone once a later checkpoint of that step was written.
    assert not (checkpoint_root(out) / "step_000004.tmp").exists()
