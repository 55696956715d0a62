"""The worker's core, free of Faust: owned partitions, their state, and batches of messages.

A :class:`Processor` is used from one thread only (the worker's state thread), so partition
ownership, recovery and processing are serialised without locks, and the Faust event loop
(heartbeats, fetching, the web pages) keeps running while a batch is computed.

The contract with Kafka:

- On assignment, a partition's state is read back from the changelog up to its high
  watermark (or kept, if this worker wrote the changelog's last entry itself); consumption of
  it starts right after the state's *cursor*, whatever offset the consumer group committed.
- A batch's effects are durable (records and dead letters first, then state, then the cursor)
  before the call returns; only then does the Faust side ack the messages. So the group offset
  never runs ahead of the durable state, and the cursor makes recovery independent of it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlwatcher.metrics import ReferenceProfile
from mlwatcher.stream_app.changelog import RecoveredPartition
from mlwatcher.stream_app.executor import ActionExecutor, Step
from mlwatcher.stream_app.observability import WorkerStats
from mlwatcher.stream_app.outputs import Outputs, SourceMessage
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.windows import WindowManager

log = logging.getLogger(__name__)

#: a tick is re-sent to a partition at most this often while the previous one is in flight
TICK_RESEND_S = 1.0


@dataclass(frozen=True)
class Incoming:
    """A predictions-topic message as the processor needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    is_tick: bool = False

    @property
    def source(self) -> SourceMessage:
        return SourceMessage(self.topic, self.partition, self.offset, self.key, self.value)


class Verdict(enum.Enum):
    PROCESS = "process"
    SKIP = "skip"  # applied before (a redelivery), or a stale message before a seek lands
    SEEK = "seek"  # a gap: offsets after the cursor were never applied; re-read from it


class OffsetGate:
    """Admits each offset of a partition exactly once, in order, starting after the cursor.

    After a gap the gate asks for a seek back to the first unapplied offset and skips what
    the consumer had already fetched beyond it, until an offset at or before the one that
    revealed the gap arrives: that is the re-read. Its first message is admitted even if it
    is past the wanted offset (the log has a hole there, e.g. transaction markers).
    """

    def __init__(self, applied_offset: int | None = None) -> None:
        self.next_offset = None if applied_offset is None else applied_offset + 1
        self._seek_trigger: int | None = None

    def forget_seek(self) -> None:
        """Drop a pending seek: after a reassignment the consumer fetches afresh anyway."""
        self._seek_trigger = None

    def admit(self, offset: int) -> Verdict:
        if self._seek_trigger is not None:
            if offset > self._seek_trigger:
                return Verdict.SKIP
            self._seek_trigger = None
            if self.next_offset is not None and offset < self.next_offset:
                return Verdict.SKIP
            self.next_offset = offset + 1
            return Verdict.PROCESS
        if self.next_offset is None or offset == self.next_offset:
            self.next_offset = offset + 1
            return Verdict.PROCESS
        if offset < self.next_offset:
            return Verdict.SKIP
        self._seek_trigger = offset
        return Verdict.SEEK


@dataclass
class OwnedPartition:
    manager: WindowManager
    gate: OffsetGate
    #: the changelog's end offset after the last entry this process read or wrote
    changelog_end: int = 0
    tick_sent_at: float | None = None


@dataclass(frozen=True)
class Progress:
    """What the watchdog and the web pages read from another thread (replaced, not mutated)."""

    owned: frozenset[int] = frozenset()
    recovering: frozenset[int] = frozenset()
    next_offsets: Mapping[int, int | None] = field(default_factory=dict)
    open_windows: int = 0
    pending_label_rows: int = 0


Recover = Callable[[Collection[int]], Mapping[int, RecoveredPartition]]
EndOffsets = Callable[[Collection[int]], Mapping[int, int]]


class Processor:
    def __init__(
        self,
        outputs: Outputs,
        recover: Recover,
        changelog_end_offsets: EndOffsets,
        *,
        policy: WindowPolicy | None = None,
        baselines: Mapping[str, ReferenceProfile] | None = None,
        stats: WorkerStats | None = None,
        last_written: Callable[[int], int | None] = lambda partition: None,
        committed: EndOffsets = lambda partitions: {},
    ) -> None:
        self.stats = stats or WorkerStats()
        self.executor = ActionExecutor(outputs, self.stats)
        self.policy = policy or WindowPolicy()
        self.baselines = dict(baselines or {})
        self._recover = recover
        self._changelog_end_offsets = changelog_end_offsets
        self._last_written = last_written
        self._committed = committed
        self.partitions: dict[int, OwnedPartition] = {}  # also kept for revoked partitions
        self.owned: set[int] = set()
        self.pending_recovery: set[int] = set()
        self.busy_since: float | None = None
        #: partitions the consumer must move back to right after their cursor
        self.pending_seeks: dict[int, int] = {}
        self.progress = Progress()

    # -- ownership ----------------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """The consumer group gave us ``partitions`` (the whole assignment)."""
        assigned = set(partitions)
        fresh = assigned - self.owned
        self.owned = assigned
        kept = {p for p in fresh if p in self.partitions}
        if kept:
            ends = self._changelog_end_offsets(kept)
            for p in kept:
                state = self.partitions[p]
                written = self._last_written(p)
                known_end = max(state.changelog_end, -1 if written is None else written + 1)
                if ends.get(p) != known_end:
                    # Someone else owned it meanwhile: what we hold is stale.
                    del self.partitions[p]
                else:
                    state.gate.forget_seek()  # the new assignment fetches afresh
                    log.info(
                        "partition %d: kept the state held in memory (changelog end %d)",
                        p,
                        known_end,
                    )
        self.pending_recovery = {p for p in assigned if p not in self.partitions}
        self._publish()

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions leave this worker: nothing of theirs is processed any more."""
        self.owned -= set(partitions)
        self.pending_recovery &= self.owned
        self._publish()

    def recover_pending(self) -> None:
        """Read the changelog of every newly owned partition and rebuild its windows."""
        wanted = sorted(self.pending_recovery)
        if not wanted:
            return
        began = time.monotonic()
        recovered = self._recover(wanted)
        # Where the consumer starts each partition: the group's committed offset.
        committed = self._committed(wanted)
        for p in wanted:
            part = recovered[p]
            applied = part.applied_offset
            # State from before cursors existed (or none): start at the group's committed
            # offset and make that the cursor at once, so from now on it never decides.
            if applied is None and p in committed:
                applied = committed[p] - 1
            manager = WindowManager(p, self.policy, self.baselines)
            cleanup = manager.restore(list(part.entries.items()))
            state = OwnedPartition(manager, OffsetGate(applied), part.end_offset)
            self.partitions[p] = state
            starts_at = committed.get(p)  # None: no commit, Faust tracks no hole then
            if applied is not None and (starts_at is None or starts_at > applied + 1):
                # Back to the cursor: the offsets between it and the committed one were never
                # applied. From a committed offset behind the cursor the gate skips what the
                # cursor covers instead: a seek forward would leave Faust's acks a hole after
                # its committed offset, and Faust commits nothing past a hole
                # (``Consumer._new_offset``), so the partition's commits would stall.
                self.pending_seeks[p] = applied + 1
            new_cursor = applied if part.applied_offset is None else None
            if cleanup or new_cursor is not None:
                self.executor.execute(p, [Step(_NO_SOURCE, cleanup)], new_cursor)
            self.stats.recovered_bytes += part.bytes_read
            log.info(
                "partition %d: recovered %d agents, %d open windows from %d changelog bytes; "
                "resuming after offset %s",
                p,
                len(manager.agents),
                manager.open_window_count,
                part.bytes_read,
                applied,
            )
        self.pending_recovery -= set(wanted)
        self.stats.recoveries += 1
        self.stats.last_recovery_seconds = time.monotonic() - began
        self._publish()

    # -- processing ---------------------------------------------------------------------------
    def process(self, messages: Sequence[Incoming]) -> list[tuple[int, int]]:
        """Apply a batch of messages; returns the (partition, offset) seeks the consumer owes."""
        self.busy_since = time.monotonic()
        try:
            if self.pending_recovery:
                self.recover_pending()
            return self.take_seeks() + self._process(messages)
        finally:
            self.busy_since = None
            self._publish()

    def _process(self, messages: Sequence[Incoming]) -> list[tuple[int, int]]:
        began = time.perf_counter()
        stats = self.stats
        steps: dict[int, list[Step]] = defaultdict(list)
        applied: dict[int, int] = {}
        seeks: list[tuple[int, int]] = []
        for message in messages:
            p = message.partition
            state = self.partitions.get(p)
            if p not in self.owned or state is None:
                stats.skipped_not_owned += 1
                continue
            verdict = state.gate.admit(message.offset)
            if verdict is Verdict.SKIP:
                stats.skipped_replayed += 1
                continue
            if verdict is Verdict.SEEK:
                stats.seeks += 1
                assert state.gate.next_offset is not None
                log.warning(
                    "partition %d: offset %d arrived but %d is the first not applied: "
                    "seeking back to it",
                    p,
                    message.offset,
                    state.gate.next_offset,
                )
                seeks.append((p, state.gate.next_offset))
                continue
            stats.messages += 1
            if message.is_tick:
                stats.ticks += 1
                state.tick_sent_at = None
                try:
                    now_ms = int(message.value or b"")
                except ValueError:
                    now_ms = message.timestamp_ms
                actions = state.manager.on_tick(now_ms, message.offset)
            else:
                actions = state.manager.on_message(message.value, message.offset)
            steps[p].append(Step(message.source, actions))
            applied[p] = message.offset
        computed = time.perf_counter()
        for p, partition_steps in steps.items():
            self.executor.execute(p, partition_steps, applied[p])
        stats.compute_seconds += computed - began
        stats.execute_seconds += time.perf_counter() - computed
        return seeks

    def take_seeks(self) -> list[tuple[int, int]]:
        """Seeks owed to the consumer since the last call (after recoveries)."""
        seeks = [(p, offset) for p, offset in self.pending_seeks.items() if p in self.owned]
        self.pending_seeks.clear()
        return seeks

    # -- ticks --------------------------------------------------------------------------------
    def partitions_due_a_tick(self, now_s: float) -> list[int]:
        """Owned partitions with a window that a tick sent now would close."""
        due = []
        for p in sorted(self.owned):
            state = self.partitions.get(p)
            if state is None or p in self.pending_recovery:
                continue
            if state.tick_sent_at is not None and now_s - state.tick_sent_at < TICK_RESEND_S:
                continue
            deadline = state.manager.next_wall_deadline_ms()
            if deadline is None or now_s * 1000 < deadline:
                continue
            state.tick_sent_at = now_s
            due.append(p)
        return due

    # -- internals ----------------------------------------------------------------------------
    def _publish(self) -> None:
        self.progress = Progress(
            owned=frozenset(self.owned),
            recovering=frozenset(self.pending_recovery),
            next_offsets={
                p: self.partitions[p].gate.next_offset for p in self.owned if p in self.partitions
            },
            open_windows=sum(
                self.partitions[p].manager.open_window_count
                for p in self.owned
                if p in self.partitions
            ),
            pending_label_rows=sum(
                self.partitions[p].manager.pending_label_rows
                for p in self.owned
                if p in self.partitions
            ),
        )


_NO_SOURCE = SourceMessage("", -1, -1, None, None)
