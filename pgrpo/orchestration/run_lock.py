"""One writer per output folder: two runs in one workspace cannot interleave their writes.

Every stage takes the lock of what it writes before it reads or writes anything
(pgrpo.orchestration.pipeline.run_stage), and a Prefect flow takes the pipeline's lock for its
whole run. A second run that wants a held lock stops at once with a message that
names the holder (pid, host, command, since when), or waits up to `wait` seconds.

    with run_lock("pipeline", "dvc repro train_reward"):
        ...

Locks are `flock`s on files under .run/locks/: the kernel drops them when the holder
exits, however it exits (SIGKILL, power loss), so a crash never leaves a stale lock.
The file's content only says who holds it. Taking a lock this process already holds
is free (a flow's stages run inside the flow's lock).

Which lock: the pipeline's own outputs (data/processed, models/reward, models/policy,
reports/) share one, "pipeline"; a comparison seed's policy or report folder has its
own (pgrpo.experiments.compare), so seeds and algorithms can train in parallel.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_DIR = Path(".run") / "locks"
_held: dict[str, int] = {}  # lock name -> depth, in this process
_guard = threading.Lock()


class RunLocked(RuntimeError):
    """Another run holds the lock."""


def lock_name(folder: str | Path) -> str:
    """A file-name-safe lock name for an output folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(folder)).strip("/")) or "root"


def holder(name: str, lock_dir: Path = LOCK_DIR) -> dict | None:
    """Who holds (or last held) lock `name`, as written by its holder; None if never taken."""
    try:
        return json.loads((lock_dir / f"{name}.lock").read_text(encoding="utf-8") or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (no holder recorded)"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: "
            f"{info.get('command')}")


@contextmanager
def run_lock(name: str, command: str | None = None, wait: float = 0.0,
             lock_dir: Path = LOCK_DIR) -> Iterator[None]:
    """Hold lock `name` for the block; RunLocked if another process holds it past `wait` s."""
    with _guard:
        if _held.get(name):
            _held[name] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _guard:
                _held[name] -= 1
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunLocked(
                        f"{path} is held by {_describe(holder(name, lock_dir))}. Another run is "
                        "writing the same outputs; wait for it to finish (or stop it) and run "
                        "again.") from None
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": command or " ".join(sys.argv),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[name] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(name, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
