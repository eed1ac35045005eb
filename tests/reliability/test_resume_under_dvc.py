"""Fault injection: `dvc repro` of a training stage killed with SIGKILL, then run again (issue 15).

DVC deletes a stage's outputs before it runs it; the checkpoint folder is `persist: true`
in dvc.yaml, so it survives, and the rerun resumes from the last checkpoint the killed run
completed (metrics.jsonl restored from the checkpoint's copy). The result must equal an
uninterrupted run of the same config and seed: the same metrics, step by step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from pgrpo.core.config import read_params
from pgrpo.core.metric_log import read_metrics
from tests.orchestration.test_dvc_pipeline import _run, _smoke_repo

STEPS, EVERY = 12, 3
DROP = ("perf/", "train/completion_tokens")  # timings differ between any two runs


def test_a_killed_dvc_repro_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(tmp_path):
    repo, env = _smoke_repo(tmp_path)
    params = read_params(repo / "params.yaml")
    params["policy"].update(steps=STEPS, checkpoint_every=EVERY)
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "train_reward"], repo, env)

    ckpts = repo / "models" / "policy" / "grpo" / "checkpoints"
    proc = subprocess.Popen(["dvc", "repro", "train_policy@grpo"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (ckpts / "step_000006").is_dir():  # two checkpoints done, more steps to go
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in ckpts.iterdir() if not p.name.endswith(".tmp"))
    assert done and done[-1] >= "step_000006", done

    out = _run(["dvc", "repro", "train_policy@grpo"], repo, env)
    resumed = int(done[-1].split("_")[1])
    assert "resumed from" in out and f"(step {resumed})" in out, out
    assert "starting over" not in out

    # the same stage, uninterrupted, in a fresh folder of the same repo
    straight = _run(["python", "-c", (
        "from pgrpo.orchestration.pipeline import run_stage; "
        "run_stage('train_policy', 'params.yaml', 'grpo', policy_root='straight')")], repo, env)
    del straight
    a = read_metrics(repo / "straight" / "grpo" / "metrics.jsonl")
    b = read_metrics(repo / "models" / "policy" / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in x.items() if not k.startswith(DROP)} == pytest.approx(
            {k: v for k, v in y.items() if not k.startswith(DROP)}, abs=1e-5), x["step"]
    assert "up to date" in _run(["dvc", "status", "train_policy@grpo"], repo, env)
