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
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_INVALID, Consumer, Message, TopicPartition

from mlwatcher.schemas import MetricRecord, SchemaDecodeError
from mlwatcher.schemas.messages import window_id
from mlwatcher.sinks.kafka_io import DeadLetterWriter, SourceRef, commit_offsets, make_consumer
from mlwatcher.sinks.parquet_files import remove_uncommitted, write_atomically
from mlwatcher.sinks.parquet_format import ColumnBuffer, FileRange, partition_dir
from mlwatcher.sinks.shutdown import Shutdown

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-parquet"


@dataclass
class ParquetSinkConfig:
    bootstrap_servers: str
    metrics_topic: str
    dead_letter_topic: str
    output_dir: Path
    group_id: str = DEFAULT_GROUP_ID
    kafka_options: dict[str, str] = field(default_factory=dict)
    #: write a partition's buffer once its records (Avro bytes) reach this size
    roll_bytes: int = 64 * 1024 * 1024
    #: ... or once its oldest record waited this long
    roll_seconds: float = 60.0
    progress_interval: float = 10.0


@dataclass
class ParquetSinkStats:
    records: int = 0
    records_dead_lettered: int = 0
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
    windows: set[str] = field(default_factory=set)


#: committed windows remembered per partition for de-duplication
REMEMBERED_WINDOWS = 100_000


class ParquetSink:
    def __init__(self, config: ParquetSinkConfig) -> None:
        if config.roll_bytes < 1 or config.roll_seconds <= 0:
            raise ValueError(
                f"roll_bytes must be >= 1 and roll_seconds > 0, got {config.roll_bytes} "
                f"and {config.roll_seconds}"
            )
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.stats = ParquetSinkStats()
        self._buffers: dict[tuple[str, int], _PartitionBuffer] = {}
        # Windows already written and committed, per partition (most recent last): a worker
        # that crashed may emit a window's record again, identical, at a later offset.
        self._committed_windows: dict[tuple[str, int], OrderedDict[str, None]] = {}
        # Fault injection for the crash tests: widen the gap between "files durable" and
        # "offsets committed", where a crash leaves uncommitted files behind.
        self._commit_delay = float(os.environ.get("MLWATCHER_PARQUET_TEST_COMMIT_DELAY", "0"))
        self._callback_error: BaseException | None = None
        self._consumer: Consumer = make_consumer(
            config.bootstrap_servers, config.group_id, config.kafka_options
        )
        self._dead_letters = DeadLetterWriter(
            config.bootstrap_servers, config.dead_letter_topic, "sink-parquet", config.kafka_options
        )

    def run(self, shutdown: Shutdown | None = None) -> ParquetSinkStats:
        """Consume until ``shutdown.stopping`` is set, then write everything and commit."""
        stopping = (shutdown or Shutdown()).stopping
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._consumer.subscribe(
            [self.config.metrics_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        next_progress = time.monotonic() + self.config.progress_interval
        try:
            while not stopping.is_set():
                messages = self._consumer.consume(num_messages=2000, timeout=0.2)
                self._raise_callback_error()
                for message in messages:
                    self._handle(message)
                self._roll_due()
                if time.monotonic() >= next_progress:
                    self._log_progress()
                    next_progress = time.monotonic() + self.config.progress_interval
            self._flush(list(self._buffers))
        finally:
            try:
                self._consumer.close()
            finally:
                self._dead_letters.flush()
                if shutdown is not None:
                    shutdown.cancel_timer()
        self._log_progress()
        return self.stats

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {error}")
            log.warning("consumer error: %s", error)
            return
        value = message.value() or b""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self.stats.records += 1
        buffer = self._buffers.get((topic, partition))
        if buffer is None:
            buffer = _PartitionBuffer(offset, offset, time.monotonic())
            self._buffers[(topic, partition)] = buffer
        buffer.last_offset = offset
        buffer.bytes += len(value)
        try:
            header, points = MetricRecord.decode_columns(value)
        except SchemaDecodeError as decode_error:
            self._dead_letters.send(
                value, message.key(), str(decode_error), SourceRef(topic, partition, offset)
            )
            self.stats.records_dead_lettered += 1
            return
        window = window_id(header["agent_id"], header["window_start_ms"])
        committed = self._committed_windows.get((topic, partition), {})
        if window in buffer.windows or window in committed:
            self.stats.records_duplicate += 1
            return
        buffer.windows.add(window)
        directory = partition_dir(header["agent_id"], header["window_start_ms"])
        group = buffer.groups.get(directory)
        if group is None:
            group = buffer.groups[directory] = ColumnBuffer(header["agent_id"])
        group.add_record(header, points)
        if buffer.bytes >= self.config.roll_bytes:
            self._flush([(topic, partition)])

    def _roll_due(self) -> None:
        now = time.monotonic()
        due = [
            key
            for key, buffer in self._buffers.items()
            if buffer.bytes >= self.config.roll_bytes
            or now - buffer.started >= self.config.roll_seconds
        ]
        if due:
            self._flush(due)

    def _flush(self, keys: list[tuple[str, int]]) -> None:
        """Write the buffers of ``keys`` durably, then commit past them."""
        offsets: dict[tuple[str, int], int] = {}
        written: dict[tuple[str, int], set[str]] = {}
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
            offsets[key] = buffer.last_offset + 1
            written[key] = buffer.windows
        if offsets:
            self._dead_letters.flush()
            if self._commit_delay:
                time.sleep(self._commit_delay)
            commit_offsets(self._consumer, offsets, asynchronous=False)
        for key, windows in written.items():
            remembered = self._committed_windows.setdefault(key, OrderedDict())
            remembered.update(dict.fromkeys(windows))
            while len(remembered) > REMEMBERED_WINDOWS:
                remembered.popitem(last=False)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=30)
            for tp in committed:
                start = tp.offset
                if start == OFFSET_INVALID or start < 0:
                    # Nothing committed yet: the group starts at the earliest offset still held.
                    start, _ = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=30
                    )
                removed = remove_uncommitted(self.output_dir, tp.topic, tp.partition, start)
                if removed:
                    log.info(
                        "%s-%d: removed %d uncommitted files (offsets >= %d are replayed)",
                        tp.topic,
                        tp.partition,
                        len(removed),
                        start,
                    )
                self.stats.files_removed_on_assign += len(removed)
        except BaseException as error:
            self._callback_error = error

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write and commit what we hold of the partitions we lose, so the next owner's
        # clean-up finds no uncommitted file of ours.
        try:
            revoked = {(tp.topic, tp.partition) for tp in partitions}
            for key in revoked:
                self._committed_windows.pop(key, None)
            self._flush([key for key in self._buffers if key in revoked])
        except BaseException as error:
            self._callback_error = error
            for tp in partitions:
                self._buffers.pop((tp.topic, tp.partition), None)

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _log_progress(self) -> None:
        buffered = sum(len(g) for b in self._buffers.values() for g in b.groups.values())
        log.info(
            "parquet sink: %s, rows_buffered=%d",
            ", ".join(f"{k}={v}" for k, v in asdict(self.stats).items()),
            buffered,
        )
