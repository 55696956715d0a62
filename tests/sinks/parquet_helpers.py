"""Reading a Parquet sink data set with pyarrow, pandas and DuckDB (no options) as row tuples."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

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
                )
            ] += 1
    return rows


def _normalise(frame: pd.DataFrame) -> Counter[Row]:
    frame = frame[list(COLUMNS)].copy()
    for column in ("window_start", "window_end"):
        frame[column] = (
            pd.to_datetime(frame[column], utc=True).astype("datetime64[ms, UTC]").astype("int64")
        )
    frame["agent_id"] = frame["agent_id"].astype(str)
    rows: Counter[Row] = Counter()
    for values in frame.itertuples(index=False, name=None):
        rows[tuple(None if v is None or v is pd.NA or v != v else v for v in values)] += 1
    return rows


def read_with_pyarrow(root: Path) -> Counter[Row]:
    return _normalise(pq.read_table(root).to_pandas())


def read_with_pandas(root: Path) -> Counter[Row]:
    return _normalise(pd.read_parquet(root))


def read_with_duckdb(root: Path) -> Counter[Row]:
    return _normalise(duckdb.sql(f"SELECT * FROM '{root}/**/*.parquet'").df())
