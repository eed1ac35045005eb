"""Two deployment runs on a real process work pool, each in its own checkout (issue 26 item 3).

A temporary Prefect server, a real `prefect worker` process, a real `mlflow server` and a
local-folder DVC remote: the runs (smoke params, one with a changed seed) go at the same
time; each clones the deployed commit, records to the server, and is saved and pushed as a
DVC experiment, which a fresh clone then applies and pulls with `dvc status` clean.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.test_tracking_outage import _free_port, _start_server, _stop_server
from tests.orchestration.test_dvc_pipeline import _run, _smoke_repo

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~5 min on 2 cores: two smoke pipelines at once, servers and a worker
def test_two_runs_on_a_process_work_pool_each_in_its_own_checkout(tmp_path):
    import mlflow
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.workpool import deploy, ensure_pool, head_commit

    repo, env = _smoke_repo(tmp_path)
    for package in ("flows", "tasks"):  # the flow a worker loads from its checkout
        shutil.copytree(REPO / package, repo / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    remote = tmp_path / "dvc-remote"
    _run(["dvc", "remote", "add", "-d", "team", str(remote)], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "flows and a DVC remote"], repo, env)
    server = _start_server(port := _free_port(), tmp_path)
    url = f"http://127.0.0.1:{port}"
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    try:
        with prefect_test_harness(server_startup_timeout=None):
            ensure_pool("pgrpo-test")
            name = deploy("pgrpo-test", str(repo), head_commit(str(repo)), url)
            worker_env = {**env, "PREFECT_API_URL": PREFECT_API_URL.value(),
                          "MLFLOW_TRACKING_URI": url}
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "pgrpo-test",
                 "--limit", "2"], cwd=worker_dir, env=worker_env, start_new_session=True,
                stdout=(tmp_path / "worker.log").open("w"), stderr=subprocess.STDOUT)
            try:
                runs = [run_deployment(name, parameters=p, timeout=0)
                        for p in ({}, {"seed": 1})]
                states = _wait(runs, worker, tmp_path / "worker.log")
            finally:
                worker.terminate()
                worker.wait(60)
        log = (tmp_path / "worker.log").read_text()[-4000:]
        assert all(s.is_completed() for s in states), [s.message for s in states] + [log]

        # the deployed repo was not touched: no outputs, nothing to commit
        assert not (repo / "models").exists() and not (repo / "mlflow.db").exists()
        assert _run(["git", "status", "--porcelain"], repo, env).strip() == ""
        exps = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).split()
        assert len(exps) == 2, exps  # each run saved and pushed as a DVC experiment
        assert any(remote.rglob("*")), "nothing pushed to the DVC remote"

        # both recorded to the server: two parent runs, their stage runs finished
        client = mlflow.MlflowClient(url)
        exp = client.get_experiment_by_name("pgrpo-smoke")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in runs)

        # a fresh clone gets a run back: its params and lock from git, its outputs from DVC
        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        run_name = exps[0].rsplit("/", 1)[-1]
        _run(["dvc", "exp", "pull", "origin", run_name], clone, env)
        _run(["dvc", "exp", "apply", run_name], clone, env)
        _run(["dvc", "pull"], clone, env)
        assert (clone / "reports" / "report.md").is_file()
        assert "up to date" in _run(["dvc", "status"], clone, env)
    finally:
        _stop_server(server)


def _wait(runs, worker, log: Path, timeout: float = 1200):
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            states = [client.read_flow_run(r.id).state for r in runs]
            if all(s.is_final() for s in states):
                return states
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"work-pool runs not finished: {[s.name for s in states]}\n"
                            f"{log.read_text()[-4000:]}")
            time.sleep(2)
