"""Two processes (CPU, gloo) through torchrun: the multi-GPU code path.

accelerate picks up torchrun's environment as it does `accelerate launch`'s
(`accelerate launch --cpu` starts a single process on one machine, so the
test launches with torchrun).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_identical_group_stats_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed:\n{proc.stderr[-3000:]}")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # Every process merged the gathered global batch: same stats, all samples counted.
    for key in ("ids", "count", "mean", "m2"):
        assert torch.equal(r0["stats"][key], r1["stats"][key]), key
    assert r0["stats"]["count"].sum().item() == 2 * 2 * 2 * 4  # steps * processes * prompts * G
    assert torch.equal(r0["param"], r1["param"])  # DDP kept the replicas in sync
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
