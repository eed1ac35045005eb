"""benchmarks/llm_compare/claim.sh, the pre-registered comparison's driver, on a real tiny
comparison (test_compare's fixture): it runs the presets it is given, stamps each seed with
the thread count it started under, and refuses to resume a seed under another. And
claim_status.py, which says where such a run stands from its folders' stamps.

    python -m pytest -q tests/experiments/test_claim_driver.py
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_compare import tiny_pipeline  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "claim_status", REPO / "benchmarks/llm_compare/claim_status.py")
claim_status = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claim_status)


def _claim(threads: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRESETS": "params.yaml", "SEEDS": "0", "PRUNE": "none",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": threads}
    return subprocess.run(["bash", str(REPO / "benchmarks/llm_compare/claim.sh")], env=env, check=False,
                          capture_output=True, text=True, timeout=900)


def test_a_seed_resumes_only_under_the_thread_count_it_started_with(tiny_pipeline):  # noqa: F811
    from pgrpo.experiments.compare import COMPARE_REPORTS, seed_dirs

    done = _claim("1")
    assert done.returncode == 0, done.stderr[-2000:]
    stamp = seed_dirs(0)[0] / "threads.txt"
    assert stamp.read_text().strip() == "1"
    assert "== seed 0, params.yaml (OMP_NUM_THREADS=1)" in done.stdout
    metrics = seed_dirs(0)[1] / "metrics.json"
    evaluated, summary = metrics.stat().st_mtime_ns, (COMPARE_REPORTS / "summary.json").read_text()
    # another thread count would round, hence sample, differently: refused before any work
    refused = _claim("2")
    assert refused.returncode == 2
    assert "seed 0 of  started with OMP_NUM_THREADS=1, this is 2" in refused.stderr
    assert stamp.read_text().strip() == "1" and metrics.stat().st_mtime_ns == evaluated
    # the same count resumes: the seed is already evaluated, so nothing is redone
    again = _claim("1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert metrics.stat().st_mtime_ns == evaluated
    assert (COMPARE_REPORTS / "summary.json").read_text() == summary


def test_the_status_reads_stamps_and_times_a_seed_from_its_start(tmp_path):
    """Seeds 0 and 1 took 60 and 70 min from start to stamp, seed 2 spanned a stop (5 h), seed
    3 is training (grpo finished, pgrpo at step 3), seed 4 has not started: 65 min a seed,
    two seeds left."""
    t0 = 1_800_000_000

    def touch(path: Path, text: str, when: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (when, when))

    for seed, (start, minutes) in enumerate([(0, 60), (2 * 3600, 70), (4 * 3600, 300)]):
        models = tmp_path / f"models/compare/c/seed{seed}"
        touch(models / "threads.txt", "1\n", t0 + start)
        touch(tmp_path / f"reports/compare/c/seed{seed}/evaluated.json", "{}", t0 + start + 60 * minutes)
        if seed == 0:
            touch(models / "pruned.json", "{}", t0 + start + 3700)
    running = tmp_path / "models/compare/c/seed3"
    touch(running / "threads.txt", "1\n", t0 + 10 * 3600)
    (running / "grpo/model").mkdir(parents=True)
    touch(running / "pgrpo/metrics.jsonl",
          "".join(json.dumps({"step": s, "train/reward/maj": 0.5}) + "\n" for s in (1, 2, 3)), t0)
    states = [claim_status.seed_state("c", s, tmp_path) for s in range(5)]
    assert [s["state"] for s in states] == ["done", "evaluated", "evaluated", "training",
                                            "not started"]
    assert states[3]["detail"] == "1 trainings finished, pgrpo at step 3"
    assert claim_status.pace_s(states) == 65 * 60  # the 5-hour seed spanned a stop: left out
    restored = {**states[0], "started_at": t0, "evaluated_at": t0 + 0.5}  # git's checkout times
    assert claim_status.pace_s([*states, restored, restored]) == 65 * 60
    lines = claim_status.report("c", list(range(5)), tmp_path)
    assert lines[-1] == ("  3 of 5 seeds evaluated; 65 min a seed lately, so about 2.2 h left "
                         "(2 seeds, the one in progress counted whole)")
    assert claim_status.parse_seeds("0-2,5") == [0, 1, 2, 5]
    # against an archive: seed 0 is done but not in it, so a lost machine would lose it
    archive = tmp_path / "kept"
    lines = claim_status.report("c", list(range(5)), tmp_path, archive)
    assert lines[1] == "  seed 0: done, not archived, threads 1" + time.strftime(
        " evaluated %Y-%m-%d %H:%M", time.localtime(t0 + 3600))
    assert lines[-1].endswith(f"prune_seeds.py c --weights --archive {archive}")
    touch(archive / "models/compare/c/seed0/pruned.json", "{}", t0)
    assert claim_status.seed_state("c", 0, tmp_path, archive)["state"] == "done"
    # pgrpo finished: between two trainings while the seed's params register a third, then
    # (all trained, or the reports folder made) its evaluation
    (running / "pgrpo/model").mkdir()
    touch(running / "params.yaml", "policy:\n  steps: 8\nalgorithms:\n  grpo:\n    advantage: grpo\n"
          "  pgrpo:\n    advantage: pgrpo\n  pgrpo_scale:\n    advantage: pgrpo_scale\ncompare:\n"
          "  name: c\n", t0)
    assert claim_status.seed_algorithms(running / "params.yaml") == ["grpo", "pgrpo", "pgrpo_scale"]
    assert claim_status.seed_state("c", 3, tmp_path)["detail"] == (
        "2 trainings finished, the next training starting")
    (running / "pgrpo_scale/model").mkdir(parents=True)
    assert claim_status.seed_state("c", 3, tmp_path)["detail"] == "3 trainings finished, evaluating"
    # a done seed is dated by its own pruned.json (a restored seed's stamps are checkout times)
    touch(tmp_path / "models/compare/c/seed0/pruned.json", '{"when": "2026-12-07T20:26:35+0000"}', t0)
    assert claim_status.report("c", [0], tmp_path)[1] == "  seed 0: done, threads 1 pruned 2026-12-07 20:26"
