"""An in-memory stand-in for the broker the worker writes to, for the pure stream-app tests.

It plays the *remote* side (topics that keep what was written), so the real
:class:`~mlwatcher.stream_app.executor.ActionExecutor` and
:class:`~mlwatcher.stream_app.processor.Processor` run unchanged on top of it. It can fail
after a number of state writes, which is what a kill -9 looks like from the broker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from mlwatcher.schemas import MetricRecord
from mlwatcher.stream_app.changelog import RecoveredPartition
from mlwatcher.stream_app.outputs import SourceMessage
from mlwatcher.stream_app.state_codec import cursor_key, unpack_cursor
from mlwatcher.stream_app.windows import DeadLetter


class Crash(Exception):
    """The process died here: nothing after this write reached the broker."""


class MemoryOutputs:
    def __init__(self, fail_after_state_writes: int | None = None) -> None:
        self.state_log: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self.records: list[MetricRecord] = []
        self.record_bytes: list[bytes] = []
        self.dead: list[DeadLetter] = []
        self.dead_sources: list[SourceMessage] = []
        self.flushes = 0
        self._last_written: dict[int, int] = {}  # by this producer (the log may be shared)
        self._budget = fail_after_state_writes

    # -- the Outputs protocol -----------------------------------------------------------------
    def put_state(self, partition: int, key: bytes, value: bytes | None) -> None:
        if self._budget is not None:
            if self._budget == 0:
                raise Crash(f"crashed before writing {key[:40]!r}")
            self._budget -= 1
        self.state_log[partition].append((key, value))
        self._last_written[partition] = len(self.state_log[partition]) - 1

    def emit_record(self, key: bytes, value: bytes) -> None:
        self.record_bytes.append(value)
        self.records.append(MetricRecord.decode(value))

    def dead_letter(self, source: SourceMessage, reason: str, detail: str) -> None:
        self.dead.append(DeadLetter(reason, detail))
        self.dead_sources.append(source)

    def flush(self) -> None:
        self.flushes += 1

    # -- what a reader of the topics would see ------------------------------------------------
    def table(self, partition: int) -> dict[bytes, bytes]:
        """The state partition after compaction (latest value per key, tombstones dropped)."""
        table: dict[bytes, bytes] = {}
        for key, value in self.state_log[partition]:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return table

    def recover(self, partitions: Collection[int]) -> dict[int, RecoveredPartition]:
        result = {}
        for p in partitions:
            entries = self.table(p)
            cursor = entries.pop(cursor_key(p), None)
            result[p] = RecoveredPartition(
                p,
                entries,
                None if cursor is None else unpack_cursor(cursor),
                len(self.state_log[p]),
            )
        return result

    def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        return {p: len(self.state_log[p]) for p in partitions}

    def last_written(self, partition: int) -> int | None:
        return self._last_written.get(partition)

    def another_producer(self) -> MemoryOutputs:
        """A second worker's producer writing to the same state topic."""
        other = MemoryOutputs()
        other.state_log = self.state_log
        return other

    def copy_state(self) -> MemoryOutputs:
        """A broker that kept this one's state topic (records and dead letters not copied)."""
        other = MemoryOutputs()
        for p, log in self.state_log.items():
            other.state_log[p] = list(log)
        return other
