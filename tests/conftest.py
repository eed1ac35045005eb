"""Shared fixtures: offline settings, a private model cache, a tiny training config."""

import os
from pathlib import Path

import pytest

# Before anything imports transformers / huggingface_hub.
REPO = Path(__file__).resolve().parents[1]
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
# Models the tests materialize (tiny model, converted SmolLM2) stay inside the repo's
# ignored pytest cache, not in the user's ~/.cache/pgrpo.
os.environ.setdefault("PGRPO_CACHE", str(REPO / ".pytest_cache" / "pgrpo-cache"))
SHARED = REPO.parent / "shared"

from pgrpo import NO_TELEMETRY

os.environ.update(NO_TELEMETRY)
# Every test that starts Prefect (the flows', the mechanism's, the comparison's) gets a
# private home, not ~/.prefect, and time for the temporary server: it takes ~30 s to start
# on 2 idle cores, past Prefect's default 20 s when the machine is busy. Here, not in one
# test file, so that a folder or a file run alone gets them too. prefect_test_harness has its
# own fixed 30 s unless called with server_startup_timeout=None, as every test here does.
# Made here: Prefect makes only the last folder, and warned in a fresh clone, which has no
# .pytest_cache yet (once make test started pytest workers before pytest made it).
os.environ.setdefault("PREFECT_HOME", str(REPO / ".pytest_cache" / "prefect-home"))
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture
def tiny_cfg():
    """PolicyConfig for a seconds-long run of the tiny random Llama on the builtin task."""
    from pgrpo.core.config import PolicyConfig

    def make(**overrides):
        base = dict(model="tiny-random-llama", steps=3, prompts_per_step=2, num_generations=4,
                    max_new_tokens=12, micro_batch_size=4, lr=1e-3, checkpoint_every=2)
        return PolicyConfig(**{**base, **overrides})

    return make


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory):
    """An empty, migrated MLflow SQLite store, cached per MLflow version next to the tiny
    models. Creating one costs 5-7 s of schema migrations; copying it 0.1 s."""
    import shutil

    mlflow = pytest.importorskip("mlflow")
    from pgrpo.core.models import cache_dir

    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not path.is_file():
        tmp = tmp_path_factory.mktemp("template") / "mlflow.db"
        mlflow.MlflowClient(f"sqlite:///{tmp}").search_experiments()
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_db):
    """A fresh MLflow tracking store and working directory (with a params.yaml); returns the
    client."""
    import shutil

    import mlflow

    from pgrpo.tracking.mlflow_tracking import PARENT_ENV

    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for var in (PARENT_ENV, "DVC_STAGE", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "params.yaml").write_text("reward:\n  epochs: 1\npolicy:\n  steps: 3\n")
    yield mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.end_run()  # a failing test must not leave an active run to the next one


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (a free port) that lets this user in with a key
    made here: {"user", "port", "key"}. Skipped where the OS has no sshd (Debian's
    openssh-server; .ci/run installs it)."""
    import getpass
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(binary).is_file():
        pytest.skip("no sshd: apt-get install openssh-server (the SSH remote test needs one)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        f"UsePAM no\nPidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    log = (d / "sshd.log").open("w")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
        time.sleep(0.1)
    yield {"user": getpass.getuser(), "port": port, "key": d / "user"}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
