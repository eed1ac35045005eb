"""Two work-pool runs at once against the same two one after the other (issue 26, item 8).

    python benchmarks/workpool_concurrency.py                    # smoke preset, ~6 min on 2 cores

A temporary Prefect server, a real `mlflow server`, a folder DVC remote and a deployment of a
throw-away repo holding this checkout's code with the smoke params (flows/workpool.py). A
process worker runs two deployment runs (seeds 1 and 2) first with --limit 2 (at once), then
two more with --limit 1 (one after the other); each run clones, pulls, runs the pipeline,
pushes. Prints each wall time, trigger to both finished, and `concurrent_over_sequential`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sh(args: list[str], cwd: Path, env: dict) -> None:
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repo(root: Path, env: dict) -> Path:
    from pgrpo.core.config import read_params, write_params

    repo = root / "repo"
    for part in ("pgrpo", "flows", "tasks", "configs", "data/raw"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")
    write_params(read_params(REPO / "configs" / "smoke.yaml"), repo / "params.yaml")
    sh(["dvc", "remote", "add", "-d", "team", str(root / "dvc-remote")], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "bench"], repo, env)
    return repo


def timed_pair(deployment: str, limit: int, seeds: tuple[int, int], env: dict, root: Path) -> float:
    from prefect import get_client
    from prefect.deployments import run_deployment

    log = (root / f"worker-limit{limit}.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool",
                               "bench", "--limit", str(limit)], cwd=root, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.perf_counter()
        runs = [run_deployment(deployment, parameters={"seed": s}, timeout=0) for s in seeds]
        with get_client(sync_client=True) as client:
            while True:
                states = [client.read_flow_run(r.id).state for r in runs]
                if all(s.is_final() for s in states):
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited: see {log.name}")
                time.sleep(1)
        wall = time.perf_counter() - t0
        if not all(s.is_completed() for s in states):
            raise RuntimeError(f"runs failed: {[s.message for s in states]} (see {log.name})")
        return wall
    finally:
        worker.terminate()
        worker.wait(60)


def main() -> int:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.workpool import deploy, ensure_pool, head_commit
    from pgrpo import NO_TELEMETRY
    from pgrpo.tracking.team_stack import start_server, stop_server

    root = Path(tempfile.mkdtemp(prefix="pgrpo-workpool-bench-"))
    env = {**os.environ, **NO_TELEMETRY, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    repo = make_repo(root, env)
    port = free_port()
    server = start_server(port, f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root, env)
    url = f"http://127.0.0.1:{port}"
    try:
        with prefect_test_harness():
            ensure_pool("bench")
            deployment = deploy("bench", str(repo), head_commit(str(repo)), url)
            worker_env = {**env, "PREFECT_API_URL": PREFECT_API_URL.value(),
                          "MLFLOW_TRACKING_URI": url}
            concurrent = timed_pair(deployment, 2, (1, 2), worker_env, root)
            print(f"concurrent_wall_s={concurrent:.1f}", flush=True)
            sequential = timed_pair(deployment, 1, (3, 4), worker_env, root)
            print(f"sequential_wall_s={sequential:.1f}", flush=True)
        print(f"concurrent_over_sequential={concurrent / sequential:.3f}")
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
