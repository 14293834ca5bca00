"""The two tables every data source returns, and the checks every source shares."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from glasskit.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "timestamp")


@dataclass
class RawData:
    """A dataset as read from its files.

    interactions: columns ``user, item, timestamp`` and optionally ``rating`` or ``label``
        (1 = positive, 0 = exposure negative), in file order.
    items: column ``item`` plus text columns (``title``, ``genres``, ``year``, ...); with
        ``content="tokens"`` the text is ids as tokens (S3-Rec's attributes), not language.
    embeddings: optional ``(item ids, matrix)`` shipped with the data (synthetic, csv).
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    embeddings: tuple[np.ndarray, np.ndarray] | None = None
    notes: tuple[str, ...] = ()
    content: str = "language"  # the items' text: "language" (titles, ...) or "tokens" (attribute ids)


def read_table(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """Read a delimited file, failing with the file and the missing column named."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: file is empty") from e
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: malformed file ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def numeric_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as numbers, or a DataError naming the first bad row and value."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: column {column!r} must be numeric; row {row} holds {df[column].iloc[row]!r}"
        )
    return values


def unique_ids(ids: pd.Series, source: str) -> None:
    """Refuse an id column with repeats (two rows for one item would each claim to describe it)."""
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids.iloc[int(np.flatnonzero(dup)[0])]
        rows = np.flatnonzero((ids == first).to_numpy()).tolist()
        raise DataError(f"{source}: item_id {first!r} appears in rows {rows[:5]} "
                        f"({int(ids.duplicated().sum())} repeated id(s) in all); keep one row per item")


def clean_interactions(df: pd.DataFrame, source: str, duplicates: str = "drop") -> pd.DataFrame:
    """Check and normalise an interactions table (columns user, item, timestamp[, rating|label])."""
    missing = [c for c in INTERACTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{source}: no interactions")
    df = df.copy()
    df["timestamp"] = numeric_column(df, "timestamp", source)
    for col in ("user", "item", "timestamp"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise DataError(f"{source}: column {col!r} is empty in row {row}")
    bad = ~np.isfinite(df["timestamp"].to_numpy(dtype=np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column 'timestamp' must be finite; row {row} holds "
                        f"{float(df['timestamp'].iloc[row])}")
    if df["timestamp"].dtype.kind == "f":  # decimals, or integers too long for int64
        inexact = np.abs(df["timestamp"].to_numpy()) >= 2.0**53
        if inexact.any():
            row = int(np.flatnonzero(inexact)[0])
            raise DataError(
                f"{source}: column 'timestamp' holds {df['timestamp'].iloc[row]:.17g} in row {row}, "
                "beyond the integers a float64 holds exactly (2^53): the column was read as floats "
                "(a decimal in some row, or integers longer than 18 digits), so neighbouring events "
                "would tie and reorder. Write every timestamp as an integer of at most 18 digits, or "
                "in coarser units")
    for col in ("rating", "label"):
        if col in df.columns:
            df[col] = numeric_column(df, col, source)
    dup = df.duplicated(subset=["user", "item", "timestamp"], keep="first")
    if dup.any():
        n = int(dup.sum())
        row = int(np.flatnonzero(dup.to_numpy())[0])
        msg = f"{source}: {n} duplicate row(s) (same user, item and timestamp), first at row {row}"
        if duplicates == "error":
            raise DataError(msg)
        warnings.warn(msg + "; keeping the first of each", stacklevel=2)
        df = df.loc[~dup]
    return df.reset_index(drop=True)
