"""The Anodot label sink: each window's label metrics once, after waiting for late labels.

Why a sink of its own. Labels often come after their window closed; the worker then emits
label revisions of the window (``MetricRecord.revision`` >= 1). Anodot's Metrics 2.0 keeps one
value per series and timestamp and drops a point older than the latest point of its series,
and by the time a revision comes the series already has points of newer windows. Metrics 3.0
does not help: its watermark *closes* a bucket for good, and a gauge sent twice into one
bucket is averaged, not replaced. So revisions cannot update the series ``sink anodot``
fills at window close. This sink sends, **once per window**, its label metrics as they stand
``label_wait`` seconds after the window's end (revision 0's label points, replaced by every
revision that came in time), into series of their own: the same properties plus
``label_wait=<seconds>s``. Each such series gets its windows in time order.

When a window is due. Time is the Kafka timestamp of the records of the window's partition
(when the worker emitted them), or the wall clock once the sink has caught up (a consume
round brought nothing). A replay after a crash therefore releases every window with the same
revisions as the first run did. A revision whose timestamp is past its window's due time is
``late``: counted, not sent (it is in the Parquet data set and in Prometheus).

At least once, nothing lost. The offsets of a partition are committed up to its oldest
record whose window is still held or in flight; a crash replays from there, rebuilds what
was held and re-sends what was not confirmed (Anodot de-duplicates by series and timestamp).
This is why it is its own consumer group: ``sink anodot`` commits at once and never re-sends
``label_wait`` worth of records. Memory: the label points of the windows of the last
``label_wait`` seconds of every agent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace

from confluent_kafka import Message

from mlwatcher.dead_letter import SourceRef
from mlwatcher.schemas import MetricRecord
from mlwatcher.schemas.messages import LABEL_WHATS
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_format import AnodotPoint, convert_points, series_id
from mlwatcher.sinks.anodot_sink import REFUSED_POINT, REJECTED_BY_ANODOT, point_document
from mlwatcher.sinks.base import Sink, SinkConfig, SinkStats, TopicPartitionKey
from mlwatcher.sinks.batching import RequestBatcher

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-anodot-labels"
#: seconds after a window's end its label metrics are sent
DEFAULT_LABEL_WAIT = 3600
#: windows already sent, remembered to recognise their late revisions
REMEMBERED_WINDOWS = 100_000

WindowKey = tuple[str, int]  # (agent_id, window_start_ms)


@dataclass
class HeldWindow:
    """The label points of one window, waiting for its due time."""

    record: MetricRecord  # its header, and its latest label points
    due_ms: int
    #: the first record of the window this sink took: commits stay before it until sent
    source: SourceRef
    key: bytes | None

    @property
    def window(self) -> WindowKey:
        return self.record.agent_id, self.record.window_start_ms

    @property
    def partition(self) -> TopicPartitionKey:
        return self.source.topic, self.source.partition


#: what :meth:`LabelHorizon.offer` did with a record
HELD, REVISED, REPLAY, LATE, NO_LABELS = "held", "revised", "replay", "late", "no_labels"


class LabelHorizon:
    """Label points per window until ``wait_ms`` after the window's end (pure: no I/O).

    :meth:`offer` takes records in partition order with their timestamps; :meth:`release`
    hands out the windows that are due, oldest due first, each once.
    """

    def __init__(self, wait_ms: int) -> None:
        if wait_ms < 0:
            raise ValueError(f"label wait must be >= 0 ms, got {wait_ms}")
        self.wait_ms = wait_ms
        self._held: dict[WindowKey, HeldWindow] = {}
        self._released: OrderedDict[WindowKey, None] = OrderedDict()
        # oldest_offsets() runs after every record: kept up to date instead of recomputed
        self._oldest: dict[TopicPartitionKey, int] | None = {}

    def __len__(self) -> int:
        return len(self._held)

    def offer(
        self, record: MetricRecord, source: SourceRef, key: bytes | None, time_ms: int
    ) -> str:
        """Take one record emitted at ``time_ms``; returns what it did (:data:`HELD` ...)."""
        window = (record.agent_id, record.window_start_ms)
        due_ms = record.window_end_ms + self.wait_ms
        points = [p for p in record.points if p.what in LABEL_WHATS]
        if record.revision > 0 and (time_ms > due_ms or window in self._released):
            return LATE
        held = self._held.get(window)
        if held is None:
            if not points or window in self._released:
                return NO_LABELS
            held = HeldWindow(replace(record, points=points), due_ms, source, key)
            self._held[window] = held
            if self._oldest is not None:  # offsets only grow within a partition
                self._oldest.setdefault(held.partition, source.offset)
            return HELD
        if record.revision <= held.record.revision:
            return REPLAY  # a worker's replay: the held points are as new or newer
        # each ``what`` of the revision replaces the held points of that ``what``
        revised = {p.what for p in points}
        kept = [p for p in held.record.points if p.what not in revised]
        held.record = replace(record, points=kept + points)
        return REVISED

    def release(self, time_of: Callable[[TopicPartitionKey], int]) -> list[HeldWindow]:
        """Remove and return the windows due at the time of their partition."""
        due = [h for h in self._held.values() if h.due_ms <= time_of(h.partition)]
        due.sort(key=lambda h: (h.due_ms, h.window))
        for held in due:
            del self._held[held.window]
            self._released[held.window] = None
            self._oldest = None
        while len(self._released) > REMEMBERED_WINDOWS:
            self._released.popitem(last=False)
        return due

    def oldest_offsets(self) -> dict[TopicPartitionKey, int]:
        """Per partition, the offset of the first record of its oldest held window."""
        if self._oldest is None:
            self._oldest = {}
            for held in self._held.values():
                offset = self._oldest.get(held.partition)
                if offset is None or held.source.offset < offset:
                    self._oldest[held.partition] = held.source.offset
        return dict(self._oldest)

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        lost = set(partitions)
        for window, held in list(self._held.items()):
            if held.partition in lost:
                del self._held[window]
        self._oldest = None


@dataclass
class AnodotLabelSinkConfig(SinkConfig):
    group_id: str = field(default=DEFAULT_GROUP_ID, kw_only=True)
    #: seconds after a window's end its label metrics are sent (and later revisions ignored)
    label_wait_seconds: int = field(default=DEFAULT_LABEL_WAIT, kw_only=True)
    #: send a partial request once its oldest point waited this long
    linger_seconds: float = field(default=0.5, kw_only=True)


@dataclass
class AnodotLabelSinkStats(SinkStats):
    windows_held: int = 0
    revisions_taken: int = 0
    revisions_late: int = 0
    windows_sent: int = 0
    points_accepted: int = 0
    points_dead_lettered: int = 0
    requests: int = 0
    retries: int = 0


@dataclass
class _Outgoing:
    body: AnodotPoint
    held: HeldWindow


class AnodotLabelSink(Sink[MetricRecord]):
    """Sends each window's label metrics ``label_wait_seconds`` after its end, once."""

    name = "anodot-labels"
    commit_asynchronously = True

    def __init__(self, config: AnodotLabelSinkConfig, client: AnodotClient) -> None:
        super().__init__(config, AnodotLabelSinkStats())
        self.config: AnodotLabelSinkConfig = config
        self.stats: AnodotLabelSinkStats = self.stats  # type: ignore[assignment]
        self.client = client
        self.horizon = LabelHorizon(config.label_wait_seconds * 1000)
        self.label_wait = f"{config.label_wait_seconds}s"
        self._batcher: RequestBatcher[_Outgoing] = RequestBatcher(client.max_points_per_request)
        self._batch_started: float | None = None
        #: released windows whose points are not all answered yet -> points left
        self._in_flight: dict[WindowKey, tuple[int, HeldWindow]] = {}
        self._consumed: dict[TopicPartitionKey, int] = {}  # next offset after the last taken
        self._committed: dict[TopicPartitionKey, int] = {}
        self._stream_ms: dict[TopicPartitionKey, int] = {}

    def add(self, record: MetricRecord, message: Message) -> None:
        partition = (message.topic(), message.partition())
        _, timestamp_ms = message.timestamp()
        stream_ms = max(self._stream_ms.get(partition, 0), timestamp_ms)
        self._stream_ms[partition] = stream_ms
        outcome = self.horizon.offer(record, SourceRef.of(message), message.key(), timestamp_ms)
        self.stats.windows_held += outcome == HELD
        self.stats.revisions_taken += outcome == REVISED
        if outcome == LATE:
            self.stats.revisions_late += 1
            log.debug(
                "anodot-labels: revision %d of %s came after the window was due; not sent",
                record.revision,
                record.window_id,
            )
        self._consumed[partition] = message.offset() + 1

    def skip(self, message: Message) -> None:
        self._consumed[(message.topic(), message.partition())] = message.offset() + 1

    def poll(self, idle: bool) -> None:
        now_ms = int(time.time() * 1000)
        for held in self.horizon.release(
            lambda partition: now_ms if idle else self._stream_ms.get(partition, 0)
        ):
            self._queue(held)
        if self._batcher and (idle or self._lingered()):
            self._send(self._batcher.take())

    def committable(self) -> Mapping[TopicPartitionKey, int]:
        pinned = self.horizon.oldest_offsets()
        for _, held in self._in_flight.values():
            offset = pinned.get(held.partition)
            if offset is None or held.source.offset < offset:
                pinned[held.partition] = held.source.offset
        ready = {}
        for partition, consumed in self._consumed.items():
            offset = min(consumed, pinned.get(partition, consumed))
            if offset > self._committed.get(partition, -1):
                ready[partition] = self._committed[partition] = offset
        return ready

    def drain(self, partitions: Collection[TopicPartitionKey] | None) -> None:
        # Released windows are sent; held ones stay uncommitted and are rebuilt by the replay.
        if self._batcher:
            self._send(self._batcher.take())

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        self._batcher.take()
        self._batch_started = None
        self._in_flight.clear()
        self.horizon.forget(partitions)
        for partition in partitions:
            self._consumed.pop(partition, None)
            self._committed.pop(partition, None)
            self._stream_ms.pop(partition, None)

    def buffered(self) -> int:
        return len(self.horizon) + len(self._batcher)

    def _lingered(self) -> bool:
        started = self._batch_started
        return started is not None and time.monotonic() - started >= self.config.linger_seconds

    def _queue(self, held: HeldWindow) -> None:
        record = held.record
        converted, rejected = convert_points(
            record.agent_id, record.window_start_ms, record.points, self.label_wait
        )
        for refused in rejected:
            self._dead_letter(
                point_document(record, refused.point), held, REFUSED_POINT, refused.reason
            )
        self.stats.windows_sent += 1
        if not converted:
            return
        self._in_flight[held.window] = (len(converted), held)
        for body in converted:
            complete = self._batcher.add(_Outgoing(body, held), series_id(body))
            if complete:
                self._send(complete)
            if self._batcher and self._batch_started is None:
                self._batch_started = time.monotonic()

    def _send(self, batch: list[_Outgoing]) -> None:
        self._batch_started = None
        if not batch:
            return
        report = self.client.send([item.body for item in batch], self.shutdown.abort)
        self.stats.requests += report.requests
        self.stats.retries += report.retries
        for index, reason in sorted(report.rejected.items()):
            item = batch[index]
            self._dead_letter({"anodot_point": item.body}, item.held, REJECTED_BY_ANODOT, reason)
        self.stats.points_accepted += len(batch) - len(report.rejected)
        for item in batch:
            window = item.held.window
            left, held = self._in_flight[window]
            if left == 1:
                del self._in_flight[window]
            else:
                self._in_flight[window] = (left - 1, held)

    def _dead_letter(
        self, document: dict[str, object], held: HeldWindow, reason: str, detail: str
    ) -> None:
        value = json.dumps(document, sort_keys=True).encode()
        self.dead_letters.send(value, held.key, reason, detail, held.source)
        self.stats.points_dead_lettered += 1
