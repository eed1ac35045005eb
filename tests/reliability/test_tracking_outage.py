"""Fault injection: the tracking server goes down mid-run and comes back (issue 15).

A real `mlflow server` on localhost, stopped after step 4 and started again on the same
store a few steps later. Before: each step during the outage blocked for ~4 minutes in
MLflow's HTTP retries and was then dropped. Now: logging a step never waits for the
server, and once it is back every step reaches MLflow: nothing lost.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from pgrpo.tracking.mlflow_logger import MlflowLogger  # noqa: E402
from pgrpo.tracking.team_stack import start_server, stop_server as _stop_server  # noqa: E402

STEP_SECONDS = 0.1  # a (very fast) training step between two log calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, tmp: Path) -> subprocess.Popen:
    return start_server(port, f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", tmp)


def test_an_outage_neither_stalls_training_nor_loses_a_metric(tmp_path, monkeypatch):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(port, tmp_path)
    try:
        monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        run = client.create_run(client.create_experiment("outage"))
        logger = MlflowLogger(run.info.run_id, flush_timeout=120, probe_every=0.5)
        for step in range(5):
            logger.log_metrics({"train": {"reward": step / 10}}, step)
            time.sleep(STEP_SECONDS)
        assert logger.flush(30)
        _stop_server(server)

        waits = []
        for step in range(5, 15):  # the outage: training goes on
            t0 = time.perf_counter()
            logger.log_metrics({"train": {"reward": step / 10}}, step)
            waits.append(time.perf_counter() - t0)
            time.sleep(STEP_SECONDS)
        assert max(waits) < STEP_SECONDS, f"a log call waited {max(waits):.3f} s"
        assert logger.unsent == 10

        server = _start_server(port, tmp_path)
        t0 = time.perf_counter()
        assert logger.close() is True
        replay = time.perf_counter() - t0
        history = client.get_metric_history(run.info.run_id, "train/reward")
        assert sorted((m.step, m.value) for m in history) == [(s, s / 10) for s in range(15)]
        assert logger.failed_sends <= 1  # the probe kept it from sending into the outage
        print(f"\nlongest log call during the outage {max(waits) * 1000:.1f} ms; "
              f"10 queued steps sent {replay:.1f} s after the restart; metrics lost: 0")
    finally:
        _stop_server(server)


def test_a_server_gone_by_the_end_of_a_stage_costs_a_warning_not_the_stage(tmp_path, monkeypatch):
    """The server dies while the stage works: recording its end (and anything else after the
    work) warns in seconds instead of failing the finished stage after minutes of retries."""
    from pgrpo.tracking.mlflow_tracking import TrackingConfig, stage_run
    from pgrpo.tracking.server import best_effort

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(port, tmp_path)
    monkeypatch.delenv("PGRPO_PARENT_RUN_ID", raising=False)
    try:
        cfg = TrackingConfig(tracking_uri=uri, experiment="outage-end")
        t0 = time.perf_counter()
        with pytest.warns(UserWarning, match="not recorded in MLflow .*unreachable"):
            with stage_run("prepare", cfg, params={"seed": 0}) as run:
                _stop_server(server)
                t0 = time.perf_counter()  # the work is done here; only the records are left
                assert best_effort("the metrics", lambda: mlflow.log_metric("x", 1.0)) is False
        seconds = time.perf_counter() - t0
        assert run is not None and mlflow.active_run() is None  # mlflow's own state is clean
        assert seconds < 30, f"the stage's end took {seconds:.0f} s"
        print(f"\nstage end with the server gone: {seconds:.1f} s, warnings instead of a failure")
    finally:
        _stop_server(server)
