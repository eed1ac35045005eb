"""A user's own pairwise preferences: .jsonl, .parquet or .csv.

Columns: user_id, prompt, chosen, rejected; optional `group` (a known preference label,
becomes Users.true_group); any other column is kept on the pairs table as metadata.
Prompt ids come from (user_id, prompt), so a user asked the same prompt twice shares one
prompt id. There is no judge: evaluation of a file source uses the learned reward only.

    from pgrpo.stages.data.files import build
    tables = build("examples/preferences.jsonl")

Every problem with the file stops here with one error that names the file and, where it
can, the line / row, the column and sample values: an unsupported extension, an empty
file, bytes that are not UTF-8, a .parquet that is not parquet, a .jsonl line that is
not a JSON object, missing columns, and (through pandera) empty or missing values,
chosen == rejected and duplicate rows. Row numbers are file line numbers for .jsonl and
.csv (the header is line 1) and 1-based rows for .parquet.
"""

from __future__ import annotations

import io
import json
from numbers import Integral
from pathlib import Path

import pandas as pd

from pgrpo.stages.data import Tables, empty_judge, stable_id
from pgrpo.stages.data.schemas import DataValidationError, Pairs, validate

REQUIRED = ["user_id", "prompt", "chosen", "rejected"]
SUFFIXES = (".jsonl", ".parquet", ".csv")
# The input contract is the Pairs schema minus the columns prepare derives.
INPUT_SCHEMA = Pairs.to_schema().remove_columns(["pair_id", "prompt_id", "split"])


def _text(path: Path, data: bytes) -> str:
    """Decode strict UTF-8 (a BOM is fine); otherwise say where and what the bytes are."""
    if data[:4] == b"PAR1":
        raise ValueError(f"{path}: this is a parquet file, not {path.suffix}; "
                         f"rename it to .parquet")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError(f"{path}: the file is UTF-16 encoded (it starts with a UTF-16 byte "
                         f"order mark); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        bad = data[e.start: e.start + 4]
        near = data[max(e.start - 12, 0): e.start + 12].decode("latin-1")  # never fails
        guess = f" (read as Latin-1 it says {near!r})"
        raise ValueError(f"{path}: line {line}, byte {e.start}: not valid UTF-8 ({e.reason}: "
                         f"bytes {bad!r}); the file is probably in another encoding such as "
                         f"Latin-1 / cp1252{guess}; save it as UTF-8") from None


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    rows, lines, bad = [], [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"line {n}: not valid JSON ({e.msg}): {line[:60]!r}")
            continue
        if not isinstance(row, dict):
            bad.append(f"line {n}: expected a JSON object, got {type(row).__name__}: {line[:60]!r}")
            continue
        rows.append(row)
        lines.append(n)
    if bad:
        more = f"\n  ... ({len(bad)} bad lines)" if len(bad) > 5 else ""
        raise ValueError(f"{path}: not a JSON-lines file (one JSON object per line):\n  "
                         + "\n  ".join(bad[:5]) + more)
    return pd.DataFrame(rows, index=pd.Index(lines, name="line"))


def _read_csv(path: Path, text: str) -> pd.DataFrame:
    try:
        # dtype=str: ids such as 007 stay as written; empty cells become NaN (reported).
        df = pd.read_csv(io.StringIO(text), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{path}: not a readable CSV file: {e}") from None
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    return df


def _read_parquet(path: Path, data: bytes) -> pd.DataFrame:
    # Check the magic bytes first: pyarrow's own error for text bytes is cryptic.
    if not (data[:4] == b"PAR1" and data[-4:] == b"PAR1"):
        head = data[:40].decode("utf-8", errors="replace")
        raise ValueError(f"{path}: not a parquet file (no 'PAR1' magic bytes); it starts with "
                         f"{head!r}; is it a CSV or JSON file with the wrong extension?")
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: a damaged parquet file: {e}") from None
    df.index = pd.RangeIndex(1, len(df) + 1, name="row")
    return df


def read_preferences(path: str | Path) -> pd.DataFrame:
    """Read and validate a preference file; index = line (jsonl/csv) or row (parquet)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r}; expected one of "
                         f"{', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} does not exist")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = _read_parquet(path, data)
    else:
        text = _text(path, data)
        df = _read_jsonl(path, text) if suffix == ".jsonl" else _read_csv(path, text)
    if df.empty:
        raise ValueError(f"{path}: the file has no rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(f"{path}: missing required column(s) {missing}; the file has "
                                  f"columns {list(df.columns)}; expected {REQUIRED} (+ optional "
                                  f"'group' and metadata columns)")
    # Numeric user ids (17, not "17") are natural in a file; everything else must be text.
    df["user_id"] = df["user_id"].map(lambda v: str(v) if isinstance(v, Integral) else v)
    unit = "rows" if suffix == ".parquet" else "rows are file line numbers"
    df = validate(df, INPUT_SCHEMA, f"{path} ({unit})")
    _check_groups(path, df)
    return df


def _check_groups(path: Path, df: pd.DataFrame) -> None:
    """A user has one known group or none: conflicting labels are an error."""
    if "group" not in df.columns:
        return
    labels = df.dropna(subset=["group"]).groupby("user_id")["group"].agg(
        lambda s: sorted(set(map(str, s))))
    conflicts = labels[labels.map(len) > 1]
    if len(conflicts):
        shown = "; ".join(f"{u!r}: {g}" for u, g in conflicts.head(5).items())
        raise DataValidationError(f"{path}: column 'group', check 'one group per user' fails for "
                                  f"{len(conflicts)} user(s): {shown}")


def _jsonable(v: object) -> object:
    # Metadata of mixed types (dicts, lists, numbers) is stored as JSON text so that
    # parquet gets one type per column.
    return v if v is None or isinstance(v, str) or (isinstance(v, float) and pd.isna(v)) \
        else json.dumps(v, sort_keys=True, default=str)


def build(path: str | Path) -> Tables:
    df = read_preferences(path)
    pairs = df.reset_index(drop=True)
    pairs["prompt_id"] = [stable_id("p", u, p) for u, p in zip(pairs["user_id"], pairs["prompt"])]
    pairs["pair_id"] = [stable_id("pair", *r) for r in pairs[REQUIRED].itertuples(index=False)]
    extras = [c for c in pairs.columns if c not in REQUIRED + ["prompt_id", "pair_id", "group"]]
    for c in extras:
        if pairs[c].dtype == object:
            pairs[c] = pairs[c].map(_jsonable)
    prompts = pairs.drop_duplicates("prompt_id")[["prompt_id", "user_id", "prompt"]]
    if "group" in pairs.columns:
        known = pairs.dropna(subset=["group"]).groupby("user_id")["group"].first().astype(str)
    else:
        known = pd.Series(dtype="str")
    users = pd.DataFrame({"user_id": pairs["user_id"].drop_duplicates()})
    # Missing where the file gives no group; dtype str even when no user has one.
    users["true_group"] = pd.Series([known.get(u) for u in users["user_id"]], dtype="str",
                                    index=users.index)
    users["profile"] = ""
    cols = ["pair_id", "user_id", "prompt_id", "prompt", "chosen", "rejected", *extras]
    return Tables(users.reset_index(drop=True), prompts.reset_index(drop=True),
                  pairs[cols], empty_judge(), {"file": str(path)})
