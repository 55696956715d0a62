"""The Parquet sink worker: metrics topic -> hive-partitioned Parquet files, exactly once.

One consumer in group ``mlwatcher-sink-parquet`` (run more processes to share partitions;
all may write to the same directory). Rows are buffered per topic partition and per
(agent, UTC day); a partition's buffer is written when it holds ``roll_bytes`` of consumed
records or is ``roll_seconds`` old, on partition revocation and on shutdown. See
:mod:`mlwatcher.sinks.parquet_files` for why the data set holds every point exactly once
after crashes and restarts.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.base import Sink, SinkConfig, SinkStats, TopicPartitionKey
from mlwatcher.sinks.parquet_files import remove_uncommitted, write_atomically
from mlwatcher.sinks.parquet_format import ColumnBuffer, FileRange, partition_dir

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-parquet"


@dataclass
class ParquetSinkConfig(SinkConfig):
    output_dir: Path
    group_id: str = field(default=DEFAULT_GROUP_ID, kw_only=True)
    #: write a partition's buffer once its records (Avro bytes) reach this size
    roll_bytes: int = field(default=64 * 1024 * 1024, kw_only=True)
    #: ... or once its oldest record waited this long
    roll_seconds: float = field(default=60.0, kw_only=True)


@dataclass
class ParquetSinkStats(SinkStats):
    rows_written: int = 0
    files_written: int = 0
    files_removed_on_assign: int = 0
    records_duplicate: int = 0


@dataclass
class _PartitionBuffer:
    first_offset: int
    last_offset: int
    started: float
    bytes: int = 0
    groups: dict[str, ColumnBuffer] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)


#: committed records (window, revision) remembered per partition for de-duplication
REMEMBERED_RECORDS = 100_000


def record_id(header: Mapping[str, Any]) -> str:
    """A record across re-emissions: ``agent_id|window_start_ms|revision``. Every revision of
    a window is kept; a re-sent revision is a duplicate."""
    return f"{header['agent_id']}|{header['window_start_ms']}|{header.get('revision', 0)}"


#: the decoded form the sink buffers: (record header, point columns)
Columns = tuple[dict[str, Any], dict[str, Any]]


class ParquetSink(Sink[Columns]):
    """A partition's records are durable once its files are fsync'ed and renamed."""

    name = "parquet"
    max_poll_records = 2000
    # Synchronous: a partition's next owner must find these offsets committed, or it removes
    # the files as uncommitted (and writes them again).
    commit_asynchronously = False

    def __init__(self, config: ParquetSinkConfig) -> None:
        if config.roll_bytes < 1 or config.roll_seconds <= 0:
            raise ValueError(
                f"roll_bytes must be >= 1 and roll_seconds > 0, got {config.roll_bytes} "
                f"and {config.roll_seconds}"
            )
        super().__init__(config, ParquetSinkStats())
        self.config: ParquetSinkConfig = config
        self.stats: ParquetSinkStats = self.stats  # type: ignore[assignment]
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._buffers: dict[TopicPartitionKey, _PartitionBuffer] = {}
        # Records (window, revision) already written and committed, per partition (most recent
        # last): a worker that crashed may emit a record again, identical, at a later offset.
        self._committed_records: dict[TopicPartitionKey, OrderedDict[str, None]] = {}
        self._durable: dict[TopicPartitionKey, int] = {}

    def decode(self, value: bytes) -> Columns:
        return MetricRecord.decode_columns(value)

    def _buffer_for(self, message: Message) -> _PartitionBuffer:
        key = (message.topic(), message.partition())
        offset = message.offset()
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = _PartitionBuffer(offset, offset, time.monotonic())
        buffer.last_offset = offset
        buffer.bytes += len(message.value() or b"")
        return buffer

    def skip(self, message: Message) -> None:
        self._buffer_for(message)

    def add(self, record: Columns, message: Message) -> None:
        header, points = record
        key = (message.topic(), message.partition())
        buffer = self._buffer_for(message)
        record_key = record_id(header)
        if record_key in buffer.records or record_key in self._committed_records.get(key, {}):
            self.stats.records_duplicate += 1
        else:
            buffer.records.add(record_key)
            directory = partition_dir(header["agent_id"], header["window_start_ms"])
            group = buffer.groups.get(directory)
            if group is None:
                group = buffer.groups[directory] = ColumnBuffer(header["agent_id"])
            group.add_record(header, points)
        if buffer.bytes >= self.config.roll_bytes:
            self._write([key])

    def poll(self, idle: bool) -> None:
        now = time.monotonic()
        due = [
            key
            for key, buffer in self._buffers.items()
            if buffer.bytes >= self.config.roll_bytes
            or now - buffer.started >= self.config.roll_seconds
        ]
        if due:
            self._write(due)

    def committable(self) -> Mapping[TopicPartitionKey, int]:
        durable, self._durable = self._durable, {}
        return durable

    def drain(self, partitions: Collection[TopicPartitionKey] | None) -> None:
        self._write(list(self._buffers) if partitions is None else list(partitions))

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        for key in partitions:
            self._buffers.pop(key, None)
            self._committed_records.pop(key, None)
            self._durable.pop(key, None)

    def on_assign(self, start_offsets: Mapping[TopicPartitionKey, int]) -> None:
        for (topic, partition), start in start_offsets.items():
            removed = remove_uncommitted(self.output_dir, topic, partition, start)
            if removed:
                log.info(
                    "%s-%d: removed %d uncommitted files (offsets >= %d are replayed)",
                    topic,
                    partition,
                    len(removed),
                    start,
                )
            self.stats.files_removed_on_assign += len(removed)

    def buffered(self) -> int:
        return sum(len(g) for b in self._buffers.values() for g in b.groups.values())

    def _write(self, keys: list[TopicPartitionKey]) -> None:
        """Write the buffers of ``keys`` durably; their offsets become committable."""
        for key in keys:
            buffer = self._buffers.pop(key, None)
            if buffer is None:
                continue
            file_range = FileRange(key[0], key[1], buffer.first_offset, buffer.last_offset)
            for directory, group in buffer.groups.items():
                if len(group) == 0:
                    continue
                write_atomically(
                    group.to_table(), self.output_dir / directory / file_range.file_name
                )
                self.stats.files_written += 1
                self.stats.rows_written += len(group)
            self._durable[key] = buffer.last_offset + 1
            remembered = self._committed_records.setdefault(key, OrderedDict())
            remembered.update(dict.fromkeys(buffer.records))
            while len(remembered) > REMEMBERED_RECORDS:
                remembered.popitem(last=False)
