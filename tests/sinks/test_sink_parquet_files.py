"""Parquet layout, atomic files and the clean-up of uncommitted files (no Kafka)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from parquet_helpers import (
    expected_rows,
    normalise,
    read_with_duckdb,
    read_with_pandas,
    read_with_polars,
    read_with_pyarrow,
)
from sink_helpers import latest_state, make_labelled_record, make_record

from mlwatcher.metrics import Point
from mlwatcher.report import data
from mlwatcher.schemas import MetricRecord
from mlwatcher.schemas.point_columns import extra_json
from mlwatcher.sinks.parquet_files import (
    migrate,
    read_data_set,
    remove_uncommitted,
    write_atomically,
    write_records,
)
from mlwatcher.sinks.parquet_format import (
    SCHEMA,
    ColumnBuffer,
    FileRange,
    latest_revisions,
    partition_dir,
)


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
    assert read_with_polars(tmp_path) == expected
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


def test_the_offline_writer_and_the_sink_write_identical_files(tmp_path: Path) -> None:
    """One writer, one schema: records written from their Avro bytes (the sink) and from
    MetricRecord objects (the offline demo) give the same schema and the same bytes."""
    records = [make_record("agent one/α", w, 7) for w in range(3)] + [make_record("b", 1500, 4)]
    records[1].points[0] = Point("accuracy", "gauge", 0.5, extra={"average": "macro"})
    records[2].model_version = "v2"
    _write_records(tmp_path / "sink", records, FileRange("m", 0, 0, 3))
    written = write_records(records, tmp_path / "offline", FileRange("m", 0, 0, 3).file_name)
    assert len(written) == 2
    for offline_file in written:
        sink_file = tmp_path / "sink" / offline_file.relative_to(tmp_path / "offline")
        assert pq.read_schema(offline_file).equals(pq.read_schema(sink_file), check_metadata=True)
        assert offline_file.read_bytes() == sink_file.read_bytes()
    assert pq.read_schema(written[0]).metadata == {b"mlwatcher.schema_version": b"3"}
    assert read_with_polars(tmp_path / "offline") == expected_rows(records)


def _version_1_files(root: Path, records: list[MetricRecord]) -> None:
    """What the sink (agent_id inside) and ``demo --offline`` (extra as a map, int32
    rows_sampled, no model_version) wrote before schema version 2."""
    for index, record in enumerate(records):
        directory = root / partition_dir(record.agent_id, record.window_start_ms)
        directory.mkdir(parents=True, exist_ok=True)
        n = len(record.points)
        columns = {
            "window_start": pa.array([record.window_start_ms] * n, pa.timestamp("ms", tz="UTC")),
            "window_end": pa.array([record.window_end_ms] * n, pa.timestamp("ms", tz="UTC")),
            "what": [p.what for p in record.points],
            "class_name": pa.array([p.class_name for p in record.points], pa.string()),
            "feat_name": pa.array([p.feat_name for p in record.points], pa.string()),
            "stat": pa.array([p.stat for p in record.points], pa.string()),
            "target_type": [p.target_type for p in record.points],
            "value": [p.value for p in record.points],
        }
        if index % 2 == 0:  # the sink's version 1
            agent = pa.DictionaryArray.from_arrays(
                pa.array([0] * n, pa.int32()), pa.array([record.agent_id])
            )
            table = pa.table(
                {
                    "agent_id": agent,
                    **columns,
                    "extra": [extra_json(p.extra) if p.extra else "{}" for p in record.points],
                    "rows_seen": pa.array([record.rows_seen] * n, pa.int64()),
                    "rows_sampled": pa.array([record.rows_sampled] * n, pa.int64()),
                    "model_version": [record.model_version] * n,
                }
            )
        else:  # the offline demo's version 1
            table = pa.table(
                {
                    **columns,
                    "extra": pa.array(
                        [list(p.extra.items()) for p in record.points],
                        pa.map_(pa.string(), pa.string()),
                    ),
                    "rows_seen": pa.array([record.rows_seen] * n, pa.int64()),
                    "rows_sampled": pa.array([record.rows_sampled] * n, pa.int32()),
                }
            )
        pq.write_table(table, directory / f"v1-{index}.parquet")


def test_version_1_data_sets_are_migrated_in_place(tmp_path: Path) -> None:
    records = [make_record(f"agent-{i % 2}", i, 5) for i in range(4)]
    records[1].points[0] = Point("f1", "gauge", 0.25, extra={"average": "micro"})
    _version_1_files(tmp_path, records)
    with pytest.raises(pa.ArrowTypeError, match="agent_id"):  # the bug of issue 11
        ds.dataset(tmp_path, partitioning="hive").to_table()
    assert len(migrate(tmp_path)) == 4
    expected = expected_rows(records)
    assert read_with_pyarrow(tmp_path) == expected
    assert read_with_pandas(tmp_path) == expected
    assert read_with_duckdb(tmp_path) == expected
    assert read_with_polars(tmp_path) == expected
    assert migrate(tmp_path) == []  # already current
    assert all(pq.read_schema(p).equals(SCHEMA) for p in tmp_path.rglob("*.parquet"))


def test_migrate_parquet_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlwatcher.cli import main

    records = [make_record("a", 0, 3), make_record("b", 1, 3)]
    _version_1_files(tmp_path, records)
    result = CliRunner().invoke(main, ["sink", "migrate-parquet", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "migrated 2 files" in result.output
    assert read_with_pyarrow(tmp_path) == expected_rows(records)


def _version_2_files(root: Path, records: list[MetricRecord]) -> None:
    """What the sink wrote before label revisions: no ``revision`` column, version 2."""
    for offset, record in enumerate(records):
        name = FileRange("m", 0, offset, offset).file_name
        buffer = ColumnBuffer(record.agent_id)
        buffer.add_metric_record(record)
        table = buffer.to_table().drop_columns(["revision"])
        table = table.replace_schema_metadata({"mlwatcher.schema_version": "2"})
        path = root / partition_dir(record.agent_id, record.window_start_ms) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


def test_version_2_files_are_read_as_revision_0_and_migrated(tmp_path: Path) -> None:
    old = [make_labelled_record("a", w) for w in range(3)]
    new = [make_labelled_record("a", 3), make_labelled_record("a", 1, revision=1)]
    _version_2_files(tmp_path, old)
    write_records(new, tmp_path, "m-0-00000000000000000003-00000000000000000004.parquet")

    table = read_data_set(tmp_path)
    assert normalise(table.to_pandas()) == expected_rows([*old, *new])
    revisions = table.group_by("revision").aggregate([("value", "count")]).to_pylist()
    assert sorted((r["revision"], r["value_count"]) for r in revisions) == [
        (0, sum(len(r.points) for r in [*old, new[0]])),
        (1, len(new[1].points)),
    ]
    latest = latest_revisions(table).to_pandas()
    assert normalise(latest) == expected_rows(latest_state([*old, *new]))
    replayed = data.load_metrics(tmp_path)  # the report reads the mixed set, too
    assert set(replayed["revision"]) == {0, 1}

    assert len(migrate(tmp_path)) == len(old)  # only the version 2 files
    assert all(pq.read_schema(p).equals(SCHEMA) for p in tmp_path.rglob("*.parquet"))
    assert read_with_pandas(tmp_path) == expected_rows([*old, *new])
    assert read_with_duckdb(tmp_path) == expected_rows([*old, *new])
    assert migrate(tmp_path) == []
