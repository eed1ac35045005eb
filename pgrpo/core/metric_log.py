"""Where metrics go: a small interface, so MLflow (or anything) plugs in later.

The trainer only calls `log_metrics(metrics, step)` and `close()`. A JSON-lines
file in the run folder is always written; it is the record that resumed runs
truncate and continue, and what plots and reports read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol


class MetricLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """Appends one JSON object per step: {"step": s, "<name>": value, ...}."""

    def __init__(self, path: str | Path, resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is None:
            self.path.write_text("")
        elif self.path.exists():
            # Drop steps logged after the checkpoint we resume from: they are redone.
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_from_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a", encoding="utf-8")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class MultiLogger:
    def __init__(self, *loggers: MetricLogger):
        self.loggers = [lg for lg in loggers if lg is not None]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
