"""Reaching the tracking server: fail fast when it is not there, never let it fail finished work.

    check_reachable(uri)        # before a stage starts: one line naming the URI, in seconds
    probe(uri)                  # a TCP connect: is anyone listening? (local stores: yes)
    best_effort("the report", lambda: log_artifact_files([...]))   # after the work is written

MLflow's own HTTP client retries a dead server for about 250 s per call before it raises;
everything here avoids that wait (pgrpo.tracking.mlflow_logger sends per-step metrics in
the background on the same probe).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class TrackingUnreachable(ConnectionError):
    """The tracking server does not answer: raised before any work, in one line."""


def _server_address(uri: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) tracking URI; None for local stores (sqlite, file)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def _refusal(uri: str, timeout: float) -> OSError | None:
    """Why the tracking server refuses a TCP connection; None if it accepts (or is a local store)."""
    address = _server_address(uri)
    if address is None:
        return None
    try:
        socket.create_connection(address, timeout=timeout).close()
        return None
    except OSError as e:
        return e


def probe(uri: str, timeout: float = 2.0) -> bool:
    """True if the tracking server accepts a connection (always True for local stores)."""
    return _refusal(uri, timeout) is None


@contextmanager
def _fail_fast() -> Iterator[None]:
    """MLflow's HTTP client without its minutes of retries (the server is known down)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                             "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def best_effort(what: str, record: Callable[[], Any]) -> bool:
    """Record something in MLflow once a stage's work is done and written: a tracking server
    that is down or failing then costs a warning, never the stage (nor minutes of retries:
    it is probed first). Returns whether it was recorded."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    reachable = probe(uri)
    try:
        if reachable:
            record()
        else:
            with _fail_fast():  # still run it: mlflow's own bookkeeping (end_run) must happen
                record()
        return True
    except Exception as e:  # noqa: BLE001 - any store failure: the outputs are on disk
        why = f"the tracking server {uri} is unreachable" if not reachable else \
            f"{type(e).__name__}: {str(e)[:200]}"
        warnings.warn(f"{what}: not recorded in MLflow ({why}); the stage's outputs are on disk")
        return False


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an http(s) tracking URI nobody listens at (MLflow's own client retries
    for minutes first). Local stores (sqlite, file) need no server and pass."""
    e = _refusal(uri, timeout)
    if e is not None:
        host, port = _server_address(uri)
        raise TrackingUnreachable(
            f"MLflow tracking server {uri} is unreachable ({e.strerror or e}). Start it "
            f"(`mlflow server --host {host} --port {port}`), point "
            "tracking.tracking_uri or $MLFLOW_TRACKING_URI at one that runs, or set "
            "tracking.enabled: false to run without tracking.") from None
