"""Durable, atomic Parquet files and the clean-up that makes replays exactly-once.

Exactly-once scheme: a data file is named after the topic partition and the offset range
of the records it holds (``<topic>-<partition>-<first>-<last>.parquet``); the sink commits
``last + 1`` only after every file of the range is fsync'ed and renamed into place. So a
file whose ``first`` offset is at or after the partition's committed offset holds only
records that Kafka will deliver again: when a sink is assigned a partition it deletes those
files (and stray temporary files) before writing anything, and the replay writes them anew.
Files of committed ranges are never touched.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mlwatcher.schemas import MetricRecord
from mlwatcher.schemas.point_columns import extra_json
from mlwatcher.sinks.parquet_format import (
    SCHEMA,
    SCHEMA_VERSION,
    ColumnBuffer,
    FileRange,
    hive_partitioning,
    partition_dir,
)

log = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(directory: Path) -> None:
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):  # a new directory entry is durable once its parent is synced
        _fsync_dir(created.parent)


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that ``path`` is either absent or complete and durable."""
    _make_dirs_durably(path.parent)
    temporary = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, temporary)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _data_name_of(name: str) -> str | None:
    """The data file name a file stands for (itself, or the target of a temporary file)."""
    if name.startswith(".") and _TMP_MARK in name:
        return name[1 : name.index(_TMP_MARK)]
    return name


def remove_uncommitted(root: Path, topic: str, partition: int, committed: int) -> list[Path]:
    """Delete files of ``topic``/``partition`` not covered by the committed offset.

    Deletes data files whose first offset is >= ``committed`` and every temporary file of
    the partition. Returns the deleted paths. A data file straddling the committed offset
    cannot come from this sink (it commits only at file boundaries); it is kept and logged.
    """
    removed: list[Path] = []
    if not root.exists():
        return removed
    for agent_dir in _subdirs(root, "agent_id="):
        for date_dir in _subdirs(agent_dir, "date="):
            with os.scandir(date_dir) as entries:
                for entry in entries:
                    data_name = _data_name_of(entry.name)
                    file_range = FileRange.parse(data_name) if data_name else None
                    if file_range is None or (file_range.topic, file_range.partition) != (
                        topic,
                        partition,
                    ):
                        continue
                    path = Path(entry.path)
                    if entry.name != data_name or file_range.first >= committed:
                        path.unlink(missing_ok=True)
                        removed.append(path)
                    elif file_range.last >= committed:
                        log.warning(
                            "%s straddles the committed offset %d of %s-%d; kept (was the "
                            "consumer group's offset reset?)",
                            path,
                            committed,
                            topic,
                            partition,
                        )
            if removed:
                _fsync_dir(date_dir)
    return removed


def _subdirs(directory: Path, prefix: str) -> list[Path]:
    with os.scandir(directory) as entries:
        return [Path(e.path) for e in entries if e.is_dir() and e.name.startswith(prefix)]


def write_records(records: Iterable[MetricRecord], root: Path, file_name: str) -> list[Path]:
    """Write MetricRecord objects as ``root/<agent_id=...>/<date=...>/<file_name>``, one file
    per agent and UTC day, each atomically: the writer of data sets made without Kafka (the
    offline demo). Same schema and encoding as the sink's files."""
    buffers: dict[str, ColumnBuffer] = {}
    for record in records:
        directory = partition_dir(record.agent_id, record.window_start_ms)
        buffers.setdefault(directory, ColumnBuffer(record.agent_id)).add_metric_record(record)
    written = []
    for directory, buffer in sorted(buffers.items()):
        if len(buffer):
            path = Path(root) / directory / file_name
            write_atomically(buffer.to_table(), path)
            written.append(path)
    return written


def upgrade(table: pa.Table) -> pa.Table:
    """A table read from a data file of any schema version, in the current :data:`SCHEMA`.

    Version 1 files of the sink held ``agent_id`` (dictionary) inside, which breaks
    ``pyarrow.dataset(partitioning="hive")``; those of ``mlwatcher demo --offline`` held
    ``extra`` as a map, ``rows_sampled`` as int32 and no ``model_version``. Version 2 files
    had no ``revision`` column: every row is revision 0 (the record at window close).
    """
    table = table.drop_columns([c for c in ("agent_id", "date") if c in table.column_names])
    optional = ("model_version", "revision")
    missing = [name for name in SCHEMA.names if name not in table.column_names + list(optional)]
    if missing:
        raise ValueError(f"columns {missing} missing: not a file of the metrics data set")
    if pa.types.is_map(table.schema.field("extra").type):
        as_json = [extra_json(dict(cell or [])) for cell in table["extra"].to_pylist()]
        table = table.set_column(
            table.column_names.index("extra"), "extra", pa.array(as_json, pa.string())
        )
    else:
        table = table.set_column(
            table.column_names.index("extra"),
            "extra",
            pc.fill_null(table["extra"].cast(pa.string()), "{}"),
        )
    if "model_version" not in table.column_names:
        table = table.append_column("model_version", pa.array([""] * len(table), pa.string()))
    if "revision" not in table.column_names:
        table = table.append_column("revision", pa.array([0] * len(table), pa.int32()))
    return table.select(SCHEMA.names).cast(SCHEMA)


def migrate(root: Path) -> list[Path]:
    """Rewrite the files of a data set written before the current schema version, in place
    (atomically; see :func:`upgrade`). Current files are left alone; returns the rewritten
    paths."""
    rewritten: list[Path] = []
    for path in sorted(Path(root).glob("agent_id=*/date=*/*.parquet")):
        if _schema_version(path) == SCHEMA_VERSION:
            continue
        write_atomically(upgrade(pq.read_table(path, partitioning=None)), path)
        rewritten.append(path)
        log.info("migrated %s to schema version %s", path, SCHEMA_VERSION)
    return rewritten


def _schema_version(path: Path) -> str:
    metadata = pq.read_schema(path).metadata or {}
    return metadata.get(b"mlwatcher.schema_version", b"1").decode()


#: the data set as readers see it: the files' columns plus the hive directory columns
DATA_SET_SCHEMA = pa.schema([*SCHEMA, ("agent_id", pa.string()), ("date", pa.string())])


def read_data_set(path: Path) -> pa.Table:
    """Every row of a data set (a directory of hive partitions, or one file) in
    :data:`DATA_SET_SCHEMA`, whatever schema version each file has (files of version 2 are
    revision 0). Current files are scanned as one data set; a set with older files is read
    file by file through :func:`upgrade`, the way ``migrate-parquet`` would rewrite them."""
    path = Path(path)
    files = [path] if path.is_file() else _data_files(path)
    if not files:
        return DATA_SET_SCHEMA.empty_table()
    if all(_schema_version(file) == SCHEMA_VERSION for file in files):
        if path.is_file():
            return _with_directory_columns(pq.read_table(path, partitioning=None), path)
        dataset = ds.dataset(path, format="parquet", partitioning=hive_partitioning())
        return dataset.to_table().select(DATA_SET_SCHEMA.names).cast(DATA_SET_SCHEMA)
    tables = [
        _with_directory_columns(upgrade(pq.read_table(file, partitioning=None)), file)
        for file in files
    ]
    return pa.concat_tables(tables) if tables else DATA_SET_SCHEMA.empty_table()


def _data_files(root: Path) -> list[Path]:
    # what pyarrow.dataset reads too: it skips names starting with "." (temporary files) or "_"
    return sorted(
        p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file()
    )


def _with_directory_columns(table: pa.Table, file: Path) -> pa.Table:
    """``agent_id`` and ``date`` from the file's hive directories (None when not in one)."""
    parts = dict(
        part.split("=", 1)
        for part in file.parent.parts[-2:]
        if part.startswith(("agent_id=", "date="))
    )
    agent = unquote(parts["agent_id"]) if "agent_id" in parts else None
    n = table.num_rows
    table = table.append_column("agent_id", pa.array([agent] * n, pa.string()))
    table = table.append_column("date", pa.array([parts.get("date")] * n, pa.string()))
    return table.select(DATA_SET_SCHEMA.names).cast(DATA_SET_SCHEMA)
