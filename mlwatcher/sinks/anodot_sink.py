"""The Anodot sink worker: metrics topic -> Anodot, at-least-once, nothing lost.

One consumer in group ``mlwatcher-sink-anodot`` (run more processes to share partitions).
Records are handled in the order consumed; their points are cut into requests (at most
``max_points_per_request``, never two points of one series in one request) that are sent
one at a time through the shared rate limit. An offset is committed only after every point
of the record was accepted by Anodot or written to the dead-letter topic with its reason.

Label revisions (records with ``revision`` >= 1, label metrics of a window that closed
before its labels came) are not sent: Metrics 2.0 drops a point older than the latest point
of its series, and by the time a revision comes, the series has points of newer windows.
``mlwatcher sink anodot-labels`` (:mod:`mlwatcher.sinks.anodot_labels`) sends them, as
series of their own; see docs/sinks.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from mlwatcher.dead_letter import SourceRef
from mlwatcher.point import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_format import AnodotPoint, convert_points, series_id
from mlwatcher.sinks.base import Sink, SinkConfig, SinkStats, TopicPartitionKey
from mlwatcher.sinks.batching import OffsetTracker, RequestBatcher

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-anodot"

#: dead-letter reasons of single points
REFUSED_POINT = "point-refused"  # not convertible to a valid Anodot point
REJECTED_BY_ANODOT = "anodot-rejected"  # Anodot answered with a permanent error


@dataclass
class AnodotSinkConfig(SinkConfig):
    group_id: str = field(default=DEFAULT_GROUP_ID, kw_only=True)
    #: send a partial request once its oldest point waited this long
    linger_seconds: float = field(default=0.5, kw_only=True)


@dataclass
class AnodotSinkStats(SinkStats):
    points_accepted: int = 0
    points_dead_lettered: int = 0
    requests: int = 0
    retries: int = 0
    #: label revisions, left to ``sink anodot-labels``
    revisions_skipped: int = 0


@dataclass
class _Outgoing:
    body: AnodotPoint
    source: SourceRef
    key: bytes | None


class AnodotSink(Sink[MetricRecord]):
    """Points are durable once Anodot accepted them (or they are dead-lettered).

    ``run`` raises AnodotFatalError (bad token, wrong URL...) with nothing committed for the
    points in flight; they are delivered after the restart.
    """

    name = "anodot"
    commit_asynchronously = True

    def __init__(self, config: AnodotSinkConfig, client: AnodotClient) -> None:
        super().__init__(config, AnodotSinkStats())
        self.config: AnodotSinkConfig = config
        self.stats: AnodotSinkStats = self.stats  # type: ignore[assignment]
        self.client = client
        self._batcher: RequestBatcher[_Outgoing] = RequestBatcher(client.max_points_per_request)
        self._tracker = OffsetTracker()
        self._batch_started: float | None = None

    def add(self, record: MetricRecord, message: Message) -> None:
        source = SourceRef.of(message)
        if record.revision > 0:
            self.stats.revisions_skipped += 1
            self._tracker.add_record(source.topic, source.partition, source.offset, 0)
            return
        converted, rejected = convert_points(record.agent_id, record.window_start_ms, record.points)
        for refused in rejected:
            self._dead_letter_point(
                point_document(record, refused.point),
                message.key(),
                REFUSED_POINT,
                refused.reason,
                source,
            )
        self._tracker.add_record(source.topic, source.partition, source.offset, len(converted))
        for body in converted:
            complete = self._batcher.add(_Outgoing(body, source, message.key()), series_id(body))
            if complete:
                self._send(complete)
            if self._batcher and self._batch_started is None:
                self._batch_started = time.monotonic()

    def skip(self, message: Message) -> None:
        self._tracker.add_record(message.topic(), message.partition(), message.offset(), 0)

    def poll(self, idle: bool) -> None:
        if self._batcher and (idle or self._lingered()):
            self._send(self._batcher.take())

    def committable(self) -> Mapping[TopicPartitionKey, int]:
        return self._tracker.take_committable()

    def drain(self, partitions: Collection[TopicPartitionKey] | None) -> None:
        # One batcher holds every partition's points, in consumption order: send them all.
        if self._batcher:
            self._send(self._batcher.take())

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        self._batcher.take()
        self._batch_started = None
        self._tracker.forget()

    def buffered(self) -> int:
        return len(self._batcher)

    def _lingered(self) -> bool:
        started = self._batch_started
        return started is not None and time.monotonic() - started >= self.config.linger_seconds

    def _send(self, batch: list[_Outgoing]) -> None:
        self._batch_started = None
        if not batch:
            return
        report = self.client.send([item.body for item in batch], self.shutdown.abort)
        self.stats.requests += report.requests
        self.stats.retries += report.retries
        for index, reason in sorted(report.rejected.items()):
            item = batch[index]
            self._dead_letter_point(
                {"anodot_point": item.body}, item.key, REJECTED_BY_ANODOT, reason, item.source
            )
        self.stats.points_accepted += len(batch) - len(report.rejected)
        self._tracker.resolve(len(batch))

    def _dead_letter_point(
        self,
        document: dict[str, Any],
        key: bytes | None,
        reason: str,
        detail: str,
        source: SourceRef,
    ) -> None:
        value = json.dumps(document, sort_keys=True).encode()
        self.dead_letters.send(value, key, reason, detail, source)
        self.stats.points_dead_lettered += 1


def point_document(record: MetricRecord, point: Point) -> dict[str, Any]:
    """A refused point as the JSON document of its dead letter."""
    return {
        "agent_id": record.agent_id,
        "window_start_ms": record.window_start_ms,
        "revision": record.revision,
        "point": {
            "what": point.what,
            "target_type": point.target_type,
            "value": repr(point.value),
            "class_name": point.class_name,
            "feat_name": point.feat_name,
            "stat": point.stat,
            "extra": dict(point.extra),
        },
    }
