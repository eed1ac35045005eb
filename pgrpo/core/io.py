"""Atomic outputs: a stage writes everything to temporary paths, then renames.

If any write fails, nothing of that stage's outputs is left behind (neither the
new files nor half-written ones); a finished rename is all-or-nothing per file.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_outputs(*finals: str | Path):
    """Yield temporary paths for `finals`; rename them all into place on success.

        with atomic_outputs("data/processed/users.parquet", "reports/x.json") as (users, x):
            df.to_parquet(users); x.write_text("...")
    """
    finals = [Path(p) for p in finals]
    temps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in finals]
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        for tmp, final in zip(temps, finals):
            if not tmp.exists():
                raise FileNotFoundError(f"stage output {final} was not written")
        for tmp, final in zip(temps, finals):
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_table(path: str | Path) -> pd.DataFrame:
    """A .parquet, .csv or .jsonl table; a clear error for a missing file or other suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    raise ValueError(f"table {path}: expected .parquet, .csv or .jsonl")


def table_columns(path: str | Path) -> list[str]:
    """A table's column names, reading as little as its format allows (a parquet file's
    schema only: the prompt table is checked before every stage)."""
    path = Path(path)
    if path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if path.suffix == ".csv" and path.is_file():
        return list(pd.read_csv(path, nrows=0).columns)
    return list(read_table(path).columns)
