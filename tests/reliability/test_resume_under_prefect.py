"""Fault injection: a train_policy task that dies mid-run is retried by Prefect and resumes
from its last checkpoint (issue 15).

A real flow run (temporary Prefect server) of the real train_policy task on tiny models.
The first attempt fails at step 3 with an error a retry can fix (a lost worker); the
retry resumes from the step-2 checkpoint instead of step 1, and the metrics of every step
are there once, as in a run that was never interrupted.
"""

from __future__ import annotations

from tests.orchestration.test_flows import TINY, write_params  # sets Prefect's test environment first

from pgrpo.core.config import merge_params
from pgrpo.orchestration.pipeline import run_stage
from pgrpo.core.metric_log import read_metrics


def test_a_failed_task_is_retried_and_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from prefect import flow
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from tasks import stages

    monkeypatch.chdir(tmp_path)
    params = merge_params(TINY, {"policy": {"steps": 4, "checkpoint_every": 2}})
    write_params(tmp_path / "params.yaml", params)
    for stage in ("prepare", "assign_groups", "train_reward"):
        run_stage(stage, "params.yaml")

    attempts = []
    real_log = stages.ProgressLogger.log_metrics

    def dies_once_at_step_3(self, metrics, step):
        if step == 3 and not attempts:
            attempts.append(step)
            raise RuntimeError("worker lost")  # transient: retry_if_transient says retry
        real_log(self, metrics, step)

    monkeypatch.setattr(stages.ProgressLogger, "log_metrics", dies_once_at_step_3)

    @flow
    def train_once():
        return stages.train_policy.with_options(retry_delay_seconds=0, refresh_cache=True)(
            params_file="params.yaml", algorithm="grpo")

    with prefect_test_harness(server_startup_timeout=None), \
            temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "r"}):
        state = train_once(return_state=True)
    assert state.is_completed(), state.message
    assert attempts == [3]  # it did fail once
    out = capsys.readouterr().out
    assert "resumed from" in out and "(step 2)" in out, out
    rows = read_metrics(tmp_path / "models" / "policy" / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "models" / "policy" / "grpo" / "model").is_dir()
