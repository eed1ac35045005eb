"""A team's tracking server, for real: PostgreSQL (the OS's, a private cluster) behind
`mlflow server` with proxied artifacts (pgrpo.tracking.team_stack), and the smoke pipeline
recording to it over HTTP. Runs, per-group metrics, logged models, the registry and the
`champion` alias all land there; the runs are rows of the PostgreSQL database and the model
files sit in the server's artifact folder, not in the client's working directory.

    .venv/bin/python -m pytest -q tests/tracking/test_team_tracking.py     # ~3 min on 2 cores

Skipped where the OS has no PostgreSQL server programs (Debian: postgresql).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from pgrpo.tracking import team_stack

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def team_server():
    """(server URL, database URI, artifact folder); everything stopped and removed after."""
    pytest.importorskip("psycopg2", reason="pip install -e '.[team]' (psycopg2-binary)")
    try:
        team_stack.pg_bin("initdb")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    # Not under pytest's 0700 tmp root: PostgreSQL runs as its own OS user when we are root.
    root = Path(tempfile.mkdtemp(prefix="pgrpo-team-"))
    root.chmod(0o755)
    pg, artifacts = root / "pg", root / "artifacts"
    uri = team_stack.start_postgres(pg, _free_port())
    port = _free_port()
    url, server = f"http://127.0.0.1:{port}", None
    try:
        try:
            server = team_stack.start_server(port, uri, artifacts, root, log=root / "server.log")
        except RuntimeError as e:
            pytest.fail(str(e))
        yield url, uri, artifacts
    finally:
        if server is not None:
            team_stack.stop_server(server)
        team_stack.stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


def test_the_pipeline_records_everything_to_a_postgres_backed_server(team_server, tmp_path,
                                                                    monkeypatch):
    import mlflow

    from pgrpo.core.config import read_params, write_params
    from pgrpo.orchestration.pipeline import STAGES, run_stage

    url, uri, artifacts = team_server
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.delenv("PGRPO_PARENT_RUN_ID", raising=False)
    write_params(read_params(REPO / "configs" / "smoke.yaml"), tmp_path / "params.yaml")
    params = read_params(tmp_path / "params.yaml")
    for stage in STAGES:
        for alg in (params["algorithms"] if stage == "train_policy" else [None]):
            run_stage(stage, "params.yaml", alg)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()

    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([exp.experiment_id])
    stages = {r.data.tags.get("pgrpo.stage") for r in runs}
    assert set(STAGES) <= stages and all(r.info.status == "FINISHED" for r in runs)
    for alg in params["algorithms"]:
        (train,) = [r for r in runs if r.data.tags.get("pgrpo.stage") == "train_policy"
                    and r.data.tags.get("pgrpo.algorithm") == alg]
        assert any(k.startswith("train/reward/") for k in train.data.metrics), alg
        assert train.info.artifact_uri.startswith("mlflow-artifacts:"), train.info.artifact_uri
    # the registry and the champion alias, on the server
    champion = client.get_model_version_by_alias("pgrpo-policy", "champion")
    assert champion.tags["pgrpo.algorithm"] in params["algorithms"]
    assert client.search_model_versions("name='pgrpo-reward-model'")
    # the model files went through the server into its artifact folder
    assert list(artifacts.rglob("*.safetensors"))
    # and the runs are rows of the PostgreSQL database (not a file store somewhere)
    count = subprocess.run([team_stack.pg_bin("psql"), uri.replace("+psycopg2", ""), "-tAc",
                            f"SELECT count(*) FROM runs WHERE experiment_id = '{exp.experiment_id}'"],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert int(count) == len(runs)
