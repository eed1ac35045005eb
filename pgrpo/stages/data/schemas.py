"""pandera schemas of every table that crosses a stage boundary.

    prepare        -> users, prompts, pairs, judge     (data/processed/*.parquet)
    assign_groups  -> groups                           (data/processed/groups.parquet)

`validate(df, Schema, where)` checks lazily and raises one `DataValidationError`
listing every failure (column, check, row numbers, a few sample values), so a
user fixes a file in one go instead of one error at a time.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SPLITS = ["train", "eval"]
NON_EMPTY = {"min_value": 1}


class DataValidationError(ValueError):
    """A table failed its schema; the message is the full, readable report."""


class Users(pa.DataFrameModel):
    user_id: Series[str] = pa.Field(unique=True, str_length=NON_EMPTY)
    split: Series[str] = pa.Field(isin=SPLITS)
    # A known preference label (synthetic persona, the file's `group` column, a
    # demographic field); null when unknown. Used by assign_groups method=label
    # and to score clusterings; never by training directly.
    true_group: Series[str] = pa.Field(nullable=True)
    # What a real system knows about the user, in words (may be empty).
    profile: Series[str]

    class Config:
        strict = False  # sources may carry extra metadata columns


class Prompts(pa.DataFrameModel):
    prompt_id: Series[str] = pa.Field(unique=True, str_length=NON_EMPTY)
    user_id: Series[str] = pa.Field(str_length=NON_EMPTY)
    split: Series[str] = pa.Field(isin=SPLITS)
    # The full user message, context included, exactly as the policy sees it.
    prompt: Series[str] = pa.Field(str_length=NON_EMPTY)


class Pairs(pa.DataFrameModel):
    pair_id: Series[str] = pa.Field(unique=True, str_length=NON_EMPTY)
    user_id: Series[str] = pa.Field(str_length=NON_EMPTY)
    prompt_id: Series[str] = pa.Field(str_length=NON_EMPTY)
    split: Series[str] = pa.Field(isin=SPLITS)
    prompt: Series[str] = pa.Field(str_length=NON_EMPTY)
    chosen: Series[str] = pa.Field(str_length=NON_EMPTY)
    rejected: Series[str] = pa.Field(str_length=NON_EMPTY)

    @pa.dataframe_check(error="chosen equals rejected")
    def chosen_differs_from_rejected(cls, df: pd.DataFrame) -> Series[bool]:
        return df["chosen"] != df["rejected"]

    @pa.dataframe_check(error="duplicate (user_id, prompt, chosen, rejected) row")
    def no_duplicate_pairs(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df.duplicated(["user_id", "prompt", "chosen", "rejected"], keep="first")


class Judge(pa.DataFrameModel):
    """What evaluation scores a user's completions with; training never reads it."""

    user_id: Series[str] = pa.Field(unique=True, str_length=NON_EMPTY)
    kind: Series[str] = pa.Field(isin=["persona_utility", "heldout_items"])
    payload: Series[str] = pa.Field(str_length=NON_EMPTY)  # JSON, shape given by `kind`


class Groups(pa.DataFrameModel):
    user_id: Series[str] = pa.Field(unique=True, str_length=NON_EMPTY)
    group: Series[str] = pa.Field(str_length=NON_EMPTY)


def _rows(sub: pd.DataFrame) -> str:
    rows = sorted({int(i) for i in sub["index"].dropna()})
    shown = ", ".join(map(str, rows[:10])) + (f" ... ({len(rows)} rows)" if len(rows) > 10 else "")
    return f" at rows {shown}" if rows else ""


def _report(where: str, err: pa.errors.SchemaErrors, max_samples: int = 5) -> str:
    cases = err.failure_cases
    lines = [f"{where}: the table fails its schema"]
    for (context, column, check), sub in cases.groupby(
        ["schema_context", "column", "check"], sort=False, dropna=False
    ):
        if context == "DataFrameSchema":
            continue  # row-level checks, reported once per row below
        samples = ", ".join(repr(v) for v in sub["failure_case"].head(max_samples))
        lines.append(f"  - column {column!r}, check {check!r}{_rows(sub)}; values: {samples}")
    table = cases[cases["schema_context"] == "DataFrameSchema"]
    for check, sub in table.groupby("check", sort=False):
        first = sub["index"].dropna().drop_duplicates().head(max_samples)
        samples = "; ".join(
            ", ".join(f"{c}={v!r:.40}" for c, v in zip(sub.loc[sub["index"] == i, "column"],
                                                       sub.loc[sub["index"] == i, "failure_case"]))
            for i in first
        )
        lines.append(f"  - rows, check {check!r}{_rows(sub)}; rows: {samples}")
    return "\n".join(lines)


def validate(df: pd.DataFrame, schema: type[pa.DataFrameModel], where: str) -> pd.DataFrame:
    """Validate lazily; on failure raise DataValidationError with every problem listed."""
    if df.empty:
        raise DataValidationError(f"{where}: the table is empty")
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as e:
        raise DataValidationError(_report(where, e)) from None
