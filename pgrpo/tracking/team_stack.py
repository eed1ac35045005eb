"""A team's tracking stack on one machine: a private PostgreSQL cluster (the OS's
PostgreSQL) as MLflow's database, behind `mlflow server` with proxied artifact storage,
so that every run, metric, logged model, registry version and alias lives on a server
that several people and machines record to. `scripts/ui.sh start` runs it when
PGRPO_TRACKING=postgres; tests/tracking/test_team_tracking.py starts it the same way.

    python -m pgrpo.tracking.team_stack start --dir .run/pg --port 5433   # prints the database URI
    python -m pgrpo.tracking.team_stack server --backend <that URI> --artifacts .run/mlartifacts
    python -m pgrpo.tracking.team_stack stop --dir .run/pg

A team's own server (PostgreSQL elsewhere, artifacts on S3) takes the same `mlflow server`
line with its URIs; a run records to it with MLFLOW_TRACKING_URI=http://<host>:<port>.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DATABASE = "mlflow"
USER = "postgres"  # the cluster's superuser; local connections are trusted (loopback only)


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl, createdb): Debian keeps them off PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise FileNotFoundError(f"PostgreSQL's {name} not found (apt-get install postgresql)")
    return path


def _as_owner(cmd: list[str], data_dir: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the OS's postgres user."""
    if os.geteuid() != 0:
        return cmd
    shutil.chown(data_dir.parent, USER)
    return ["runuser", "-u", USER, "--", *cmd]


def database_uri(port: int) -> str:
    """SQLAlchemy's URI, the driver named: psycopg2 (psycopg2-binary, the `team` extra)."""
    return f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"


def start_postgres(folder: str | Path, port: int) -> str:
    """Start the cluster in folder/data on 127.0.0.1:port (made on first use, with the
    database `mlflow`); returns the URI to give `mlflow server --backend-store-uri`."""
    folder = Path(folder).resolve()
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)

    def run(cmd: list[str]) -> None:
        subprocess.run(_as_owner(cmd, data), check=True, capture_output=True, text=True)

    if not (data / "PG_VERSION").exists():
        run([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8"])
    try:
        run([pg_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "start",
             "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"])
    except subprocess.CalledProcessError as e:
        log = (folder / "postgres.log").read_text()[-2000:] if (folder / "postgres.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start on port {port}: {e.stderr.strip()}\n{log}") from None
    exists = subprocess.run([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", USER,
                             "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
                            check=True, capture_output=True, text=True).stdout.strip()
    if exists != "1":
        subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
                       check=True, capture_output=True, text=True)
    return database_uri(port)


def stop_postgres(folder: str | Path) -> None:
    data = Path(folder).resolve() / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_owner([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                                 data), check=True, capture_output=True, text=True)


def server_command(port: int, backend_uri: str, artifacts: str | Path,
                   host: str = "127.0.0.1") -> list[str]:
    """`mlflow server` on the database with proxied artifacts: clients upload models and
    figures through the server (mlflow-artifacts:/), never to a path of their own."""
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
            "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
            "--serve-artifacts", "--workers", "1"]


def start_server(port: int, backend_uri: str, artifacts: str | Path, cwd: str | Path,
                 env: dict | None = None, log: Path | None = None,
                 timeout: float = 120.0) -> subprocess.Popen:
    """server_command on 127.0.0.1:`port` in a process group of its own, returned once its
    /health answers 200: the real server that tests and benchmarks run against. If it exits
    or is not up within `timeout` s it is stopped and RuntimeError says so (with the end of
    `log`, its stderr, where given)."""
    env = {**(os.environ if env is None else env),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    stderr = log.open("w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(server_command(port, backend_uri, artifacts), cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    finally:
        if log:
            stderr.close()  # the server holds its own copy of the descriptor
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = log.read_text()[-2000:] if log else ""
            raise RuntimeError(f"mlflow server on port {port} did not start within "
                               f"{timeout:.0f} s{': ' + tail if tail else ''}")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it and its workers), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["start", "stop", "server"],
                   help="start / stop the PostgreSQL cluster; server: become `mlflow server` on it")
    p.add_argument("--dir", default=".run/pg", help="the cluster's folder")
    p.add_argument("--port", type=int, default=None,
                   help="PostgreSQL's port (start: 5433), or the server's (server: 5000)")
    p.add_argument("--backend", help="server: the database URI that start printed")
    p.add_argument("--artifacts", default=".run/mlartifacts", help="server: artifact folder")
    a = p.parse_args(argv)
    if a.action == "server":
        if not a.backend:
            p.error("server needs --backend (the URI that `start` printed)")
        cmd = server_command(a.port or 5000, a.backend, Path(a.artifacts).resolve())
        os.execv(cmd[0], cmd)  # the server itself, under this process id (scripts/ui.sh stops it)
    try:
        if a.action == "start":
            print(start_postgres(a.dir, a.port or 5433))
        else:
            stop_postgres(a.dir)
    except (FileNotFoundError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {getattr(e, 'stderr', None) or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
