"""Parquet layout, atomic files and the clean-up of uncommitted files (no Kafka)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from parquet_helpers import expected_rows, read_with_duckdb, read_with_pandas, read_with_pyarrow
from sink_helpers import make_record

from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.parquet_files import remove_uncommitted, write_atomically
from mlwatcher.sinks.parquet_format import SCHEMA, ColumnBuffer, FileRange, partition_dir


def _write_records(root: Path, records, file_range: FileRange) -> None:  # type: ignore[no-untyped-def]
    groups: dict[str, ColumnBuffer] = {}
    for record in records:
        directory = partition_dir(record.agent_id, record.window_start_ms)
        header, points = MetricRecord.decode_columns(record.encode())
        groups.setdefault(directory, ColumnBuffer(record.agent_id)).add_record(header, points)
    for directory, group in groups.items():
        write_atomically(group.to_table(), root / directory / file_range.file_name)


def test_file_range_names_round_trip() -> None:
    file_range = FileRange("mlwatcher.metrics-v2", 11, 5, 1234)
    assert FileRange.parse(file_range.file_name) == file_range
    assert FileRange.parse("part-0.parquet") is None
    assert partition_dir("a b/c", 0) == "agent_id=a%20b%2Fc/date=1970-01-01"


def test_data_set_is_typed_and_readable_by_pyarrow_pandas_duckdb(tmp_path: Path) -> None:
    records = [make_record("agent one/α", w, 7) for w in range(3)] + [make_record("b", 1500, 4)]
    records[0].points.append(Point("prediction_count", "counter", 3.0, class_name="7"))
    _write_records(tmp_path, records, FileRange("m", 0, 0, 3))
    expected = expected_rows(records)
    assert read_with_pyarrow(tmp_path) == expected
    assert read_with_pandas(tmp_path) == expected
    assert read_with_duckdb(tmp_path) == expected
    single = next(tmp_path.rglob("*.parquet"))
    assert pq.read_schema(single).remove_metadata() == SCHEMA
    described = duckdb.sql(f"DESCRIBE SELECT * FROM '{tmp_path}/**/*.parquet'").fetchall()
    types = {row[0]: row[1] for row in described}
    assert types["window_start"] == "TIMESTAMP WITH TIME ZONE"
    assert types["value"] == "DOUBLE"
    # agent b's window starts 1500 minutes after midnight: the next UTC day
    assert sorted(p.name for p in tmp_path.glob("agent_id=b/*")) == ["date=2025-11-30"]


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2]})
    target = tmp_path / "a" / "b" / "f.parquet"
    write_atomically(table, target)
    assert pq.read_table(target).equals(table)
    assert [p.name for p in target.parent.iterdir()] == ["f.parquet"]


def test_remove_uncommitted_keeps_committed_ranges_only(tmp_path: Path) -> None:
    record = make_record("a", 0, 2)
    for first, last in [(0, 9), (10, 19), (20, 24)]:
        _write_records(tmp_path, [record], FileRange("m", 0, first, last))
    _write_records(tmp_path, [record], FileRange("m", 1, 20, 30))  # other partition
    _write_records(tmp_path, [record], FileRange("other", 0, 20, 30))  # other topic
    directory = tmp_path / partition_dir("a", record.window_start_ms)
    stray = directory / f".{FileRange('m', 0, 25, 30).file_name}.tmp-123-abcd"
    stray.write_bytes(b"half a file")
    removed = remove_uncommitted(tmp_path, "m", 0, committed=20)
    assert sorted(p.name for p in removed) == sorted(
        [FileRange("m", 0, 20, 24).file_name, stray.name]
    )
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted(
        FileRange(*args).file_name
        for args in [("m", 0, 0, 9), ("m", 0, 10, 19), ("m", 1, 20, 30), ("other", 0, 20, 30)]
    )
