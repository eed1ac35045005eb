"""Fault injection: two runs in one workspace (issue 15).

A real holder process takes the pipeline's lock (what a Prefect flow does for its
whole run); a real `python -m pgrpo.orchestration.pipeline prepare` (what `dvc repro` runs) then
stops at once, names the holder and writes nothing. SIGKILL the holder and the lock
is free again: no stale lock after a crash. Comparison seeds lock their own folders.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pgrpo.core.config import read_params
from pgrpo.orchestration.pipeline import PIPELINE_LOCK, stage_lock
from pgrpo.orchestration.run_lock import RunLocked, holder, run_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; sys.path.insert(0, {repo!r})\n"
        "from pgrpo.orchestration.run_lock import run_lock\n"
        "with run_lock('pipeline', 'prefect flow run holder-test'):\n"
        "    print('held', flush=True); time.sleep(120)\n")


def _hold(cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO))], cwd=cwd,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_stage_stops_when_another_run_holds_the_workspace(tmp_path):
    params = read_params(REPO / "configs" / "smoke.yaml")
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stage = [sys.executable, "-m", "pgrpo.orchestration.pipeline", "prepare"]
    holder_proc = _hold(tmp_path)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(stage, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        seconds = time.perf_counter() - t0
        assert proc.returncode == 3, proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"pid {holder_proc.pid}" in errors[0] and "holder-test" in errors[0]
        assert not (tmp_path / "data").exists()  # it wrote nothing
        # A patient run waits, and gets the lock once the holder is gone (SIGKILL: the
        # kernel drops the flock, nothing stale is left behind).
        threading.Timer(2.0, holder_proc.send_signal, [signal.SIGKILL]).start()
        proc = subprocess.run(stage, cwd=tmp_path, env={**env, "PGRPO_LOCK_WAIT": "60"},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "data" / "processed" / "prompts.parquet").is_file()
    finally:
        holder_proc.kill()
        holder_proc.wait()
    print(f"\nlocked-out stage gave up after {seconds:.1f} s")


def test_lock_is_reentrant_in_process_and_exclusive_across(tmp_path):
    locks = tmp_path / "locks"
    with run_lock("x", "outer", lock_dir=locks):
        with run_lock("x", "inner", lock_dir=locks):  # a flow's own stages: no deadlock
            pass
        assert holder("x", locks)["command"] == "outer"
        # Another process cannot take it, and is told who has it.
        code = ("import sys; sys.path.insert(0, {repo!r}); from pathlib import Path\n"
                "from pgrpo.orchestration.run_lock import run_lock, RunLocked\n"
                "try:\n    with run_lock('x', 'other', lock_dir=Path({d!r})): print('got')\n"
                "except RunLocked as e: print('locked:', e)\n").format(repo=str(REPO), d=str(locks))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        assert out.startswith("locked:") and f"pid {os.getpid()}" in out and "outer" in out
    with run_lock("x", "again", lock_dir=locks):  # released on exit
        assert holder("x", locks)["command"] == "again"


def test_waiting_gives_up_after_the_wait(tmp_path):
    proc = _hold(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunLocked, match="holder-test"):
            with run_lock("pipeline", "waiter", wait=1.5, lock_dir=tmp_path / ".run" / "locks"):
                pass
        assert 1.5 <= time.perf_counter() - t0 < 10
    finally:
        proc.kill()
        proc.wait()


def test_comparison_seeds_lock_their_own_folders():
    default = dict(policy_root=Path("models/policy"), reports_dir=Path("reports"))
    assert stage_lock("prepare", None, **default) == PIPELINE_LOCK
    assert stage_lock("train_policy", "grpo", **default) == PIPELINE_LOCK
    seed = dict(policy_root=Path("models/compare/seed1"), reports_dir=Path("reports/compare/seed1"))
    names = {stage_lock("train_policy", "grpo", **seed), stage_lock("train_policy", "pgrpo", **seed),
             stage_lock("evaluate", None, **seed),
             stage_lock("train_policy", "grpo", policy_root=Path("models/compare/seed2"),
                        reports_dir=Path("reports/compare/seed2"))}
    assert len(names) == 4 and PIPELINE_LOCK not in names
