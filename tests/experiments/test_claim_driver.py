"""benchmarks/llm_compare/claim.sh, the pre-registered comparison's driver, on a real tiny
comparison (test_compare's fixture): it runs the presets it is given, stamps each seed with
the thread count it started under, and refuses to resume a seed under another.

    python -m pytest -q tests/experiments/test_claim_driver.py
"""

import os
import subprocess
import sys
from pathlib import Path

from test_compare import tiny_pipeline  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


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
