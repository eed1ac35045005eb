"""The trainer's MLflow logger: metrics are sent in the background, so an outage costs nothing.

Training never waits on the tracking server. `log_metrics` only queues the step (the
trainer has already written it to the run's metrics.jsonl); a sender thread posts
queued steps with one `log_batch` each. When a send fails the step stays queued and
the sender waits until the server answers again (a TCP probe before each send and
every `probe_every` seconds while it is down, not MLflow's minutes of HTTP retries), then sends everything that waited,
in order. `close()` (the end of the stage) sends what is left, for up to
`flush_timeout` seconds; only if the server is still down then does it warn how many
steps did not reach MLflow (metrics.jsonl has them all, and
`pgrpo.tracking.mlflow_tracking.log_metrics_file` replays them).

    logger = MlflowLogger()            # inside `with stage_run(...)`: the active run
    logger.log_metrics({"train": {"reward/casual": 0.7}}, step=3)   # returns at once
    logger.close()                     # sends the rest; True if nothing is left behind
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from pgrpo.tracking.mlflow_names import active_run_id, flatten_metrics
from pgrpo.tracking.server import probe

MAX_BATCH = 1000  # MLflow's metrics per log_batch


def parent_curves(algorithm: str) -> Callable[[str], str | None]:
    """`rename` for a copy of a training run's per-group rewards on its pipeline (parent)
    run: train/reward/<group> -> train/<algorithm>/reward/<group>, everything else dropped.
    MLflow's chart view opens on the parent with its children collapsed, so without these
    a new user sees no chart at all (tests/orchestration/test_browser_ui.py)."""
    def rename(name: str) -> str | None:
        head = "train/reward/"
        return f"train/{algorithm}/reward/{name[len(head):]}" if name.startswith(head) else None
    return rename


class MlflowLogger:
    """MetricLogger to an MLflow run, names like train/reward/<group>; None and NaN dropped."""

    def __init__(self, run_id: str | None = None, flush_timeout: float = 120.0,
                 probe_every: float = 2.0, rename: Callable[[str], str | None] | None = None):
        """`rename`: each metric's name -> the name to log it under, or None to drop it."""
        import mlflow

        self.client = mlflow.MlflowClient()
        self.uri = mlflow.get_tracking_uri()
        self.run_id = run_id or active_run_id()
        self.rename = rename
        self.client.get_run(self.run_id)  # a wrong id fails here, not at step 1000
        self.flush_timeout, self.probe_every = flush_timeout, probe_every
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[tuple[int, list]] = []  # (step, metrics), oldest first
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._deadline = float("inf")  # set by close(): when to stop waiting for the server
        self.failed_sends = 0  # sends that failed and were retried later
        self._thread = threading.Thread(target=self._send_loop, name="mlflow-logger", daemon=True)
        self._thread.start()

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        flat = flatten_metrics(metrics)
        if self.rename is not None:
            flat = {new: v for k, v in flat.items() if (new := self.rename(k)) is not None}
        batch = [Metric(k, v, now, int(step)) for k, v in flat.items()]
        if batch:
            self._idle.clear()
            self._queue.put((int(step), batch))

    @property
    def unsent(self) -> int:
        """Steps queued or waiting for the server."""
        with self._lock:
            return len(self._pending) + self._queue.qsize()

    def _send(self, batch: list) -> None:
        for i in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i:i + MAX_BATCH])

    def _send_loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
                with self._lock:
                    self._pending.append(item)
            except queue.Empty:
                pass
            while True:  # drain, oldest first, while the server answers
                with self._lock:
                    if not self._pending:
                        break
                    step, batch = self._pending[0]
                # Probe first (a TCP connect, ~0.1 ms on localhost): a send to a dead server
                # would sit in MLflow's HTTP retries for minutes, past the server's return.
                if not probe(self.uri) and not self._wait_for_server():
                    return
                try:
                    self._send(batch)
                except Exception:  # noqa: BLE001 - any store failure: keep it, wait, retry
                    self.failed_sends += 1
                    if not self._wait_for_server():
                        return  # closed, and the server stayed down past the deadline
                    continue
                with self._lock:
                    self._pending.pop(0)
            if self._queue.empty():
                with self._lock:
                    if not self._pending:
                        self._idle.set()
                if self._closing:
                    return

    def _wait_for_server(self) -> bool:
        """Block until the server answers (True), or the closing deadline passes (False)."""
        while True:
            if self._closing and time.monotonic() > self._deadline:
                return False
            if probe(self.uri):
                # A store that answers yet fails (e.g. a locked sqlite file): retry, not spin.
                time.sleep(min(self.probe_every, 1.0))
                return True
            time.sleep(self.probe_every)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every queued step is sent; True if none is left."""
        return self._idle.wait(timeout)

    def close(self) -> bool:
        """Send what is left (up to flush_timeout s); warn about anything that could not be."""
        self._deadline = time.monotonic() + self.flush_timeout
        done = self.flush(self.flush_timeout)
        self._closing = True
        left = self.unsent
        if not done and left:
            warnings.warn(f"MLflow run {self.run_id}: {left} steps could not be sent to "
                          f"{self.uri} within {self.flush_timeout:.0f} s; metrics.jsonl in the "
                          "run folder has them all (replay: "
                          "pgrpo.tracking.mlflow_tracking.log_metrics_file)")
        return left == 0
