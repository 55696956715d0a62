"""Reading a Parquet sink data set as row tuples with pandas, pyarrow.dataset (hive), DuckDB
(hive_partitioning=true) and polars (hive_partitioning=True), each with its hive defaults."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds

from mlwatcher.schemas import MetricRecord

Row = tuple[object, ...]
COLUMNS = (
    "agent_id",
    "window_start",
    "window_end",
    "what",
    "class_name",
    "feat_name",
    "stat",
    "target_type",
    "value",
    "extra",
    "rows_seen",
    "rows_sampled",
    "revision",
)


def expected_rows(records: Sequence[MetricRecord]) -> Counter[Row]:
    rows: Counter[Row] = Counter()
    for r in records:
        for p in r.points:
            extra = json.dumps(dict(p.extra), sort_keys=True, separators=(",", ":"))
            rows[
                (
                    r.agent_id,
                    r.window_start_ms,
                    r.window_end_ms,
                    p.what,
                    p.class_name,
                    p.feat_name,
                    p.stat,
                    p.target_type,
                    p.value,
                    extra if p.extra else "{}",
                    r.rows_seen,
                    r.rows_sampled,
                    r.revision,
                )
            ] += 1
    return rows


def normalise(frame: pd.DataFrame) -> Counter[Row]:
    # agent_id and date come from the directory names, as proper columns of every reader.
    assert {"agent_id", "date"} <= set(frame.columns), list(frame.columns)
    frame = frame[[*COLUMNS, "date"]].copy()
    for column in ("window_start", "window_end"):
        frame[column] = (
            pd.to_datetime(frame[column], utc=True).astype("datetime64[ms, UTC]").astype("int64")
        )
    day = pd.to_datetime(frame["window_start"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    assert (pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d") == day).all()
    frame = frame.drop(columns="date")
    frame["agent_id"] = frame["agent_id"].astype(str)
    rows: Counter[Row] = Counter()
    for values in frame.itertuples(index=False, name=None):
        rows[tuple(None if v is None or v is pd.NA or v != v else v for v in values)] += 1
    return rows


def read_with_pyarrow(root: Path) -> Counter[Row]:
    return normalise(ds.dataset(root, partitioning="hive").to_table().to_pandas())


def read_with_pandas(root: Path) -> Counter[Row]:
    return normalise(pd.read_parquet(root))


def read_with_duckdb(root: Path) -> Counter[Row]:
    query = f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    return normalise(duckdb.sql(query).df())


def read_with_polars(root: Path) -> Counter[Row]:
    frame = pl.read_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    return normalise(frame.to_pandas())
