"""The Anodot sink worker: metrics topic -> Anodot, at-least-once, nothing lost.

One consumer in group ``mlwatcher-sink-anodot`` (run more processes to share partitions).
Records are handled in the order consumed; their points are cut into requests (at most
``max_points_per_request``, never two points of one series in one request) that are sent
one at a time through the shared rate limit. An offset is committed only after every point
of the record was accepted by Anodot or written to the dead-letter topic with its reason.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Message

from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord, SchemaDecodeError
from mlwatcher.sinks.anodot_client import AnodotClient, SendAborted
from mlwatcher.sinks.anodot_format import AnodotPoint, convert_points, series_id
from mlwatcher.sinks.batching import OffsetTracker, RequestBatcher
from mlwatcher.sinks.kafka_io import (
    DeadLetterWriter,
    SourceRef,
    commit_offsets,
    make_consumer,
)
from mlwatcher.sinks.shutdown import Shutdown

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-anodot"


@dataclass
class AnodotSinkConfig:
    bootstrap_servers: str
    metrics_topic: str
    dead_letter_topic: str
    group_id: str = DEFAULT_GROUP_ID
    kafka_options: dict[str, str] = field(default_factory=dict)
    #: send a partial request once its oldest point waited this long
    linger_seconds: float = 0.5
    progress_interval: float = 10.0


@dataclass
class AnodotSinkStats:
    records: int = 0
    records_dead_lettered: int = 0
    points_accepted: int = 0
    points_dead_lettered: int = 0
    requests: int = 0
    retries: int = 0


@dataclass
class _Outgoing:
    body: AnodotPoint
    source: SourceRef
    key: bytes | None


class AnodotSink:
    def __init__(self, config: AnodotSinkConfig, client: AnodotClient) -> None:
        self.config = config
        self.client = client
        self.stats = AnodotSinkStats()
        self._batcher: RequestBatcher[_Outgoing] = RequestBatcher(client.max_points_per_request)
        self._tracker = OffsetTracker()
        self._batch_started: float | None = None
        self._callback_error: BaseException | None = None
        self._shutdown = Shutdown()
        self._consumer = make_consumer(
            config.bootstrap_servers, config.group_id, config.kafka_options
        )
        self._dead_letters = DeadLetterWriter(
            config.bootstrap_servers, config.dead_letter_topic, "sink-anodot", config.kafka_options
        )

    def run(self, shutdown: Shutdown | None = None) -> AnodotSinkStats:
        """Consume until ``shutdown.stopping`` is set; then drain, commit and return the stats.

        Raises AnodotFatalError (bad token, wrong URL...) with nothing committed for the
        points in flight; they are delivered after the restart.
        """
        self._shutdown = shutdown or Shutdown()
        stopping = self._shutdown.stopping
        self._consumer.subscribe([self.config.metrics_topic], on_revoke=self._on_revoke)
        next_progress = time.monotonic() + self.config.progress_interval
        try:
            while not stopping.is_set():
                messages = self._consumer.consume(num_messages=500, timeout=0.2)
                self._raise_callback_error()
                for message in messages:
                    self._handle(message)
                if self._batcher and (not messages or self._lingered()):
                    self._send(self._batcher.take())
                self._commit(asynchronous=True)
                if time.monotonic() >= next_progress:
                    self._log_progress()
                    next_progress = time.monotonic() + self.config.progress_interval
            self._drain()
        except SendAborted:
            log.warning("shutdown: abandoned %d unsent points (not committed)", len(self._batcher))
        finally:
            self._close()
        self._log_progress()
        return self.stats

    def _lingered(self) -> bool:
        started = self._batch_started
        return started is not None and time.monotonic() - started >= self.config.linger_seconds

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {error}")
            log.warning("consumer error: %s", error)
            return
        source = SourceRef.of(message)
        value = message.value() or b""
        self.stats.records += 1
        try:
            record = MetricRecord.decode(value)
        except SchemaDecodeError as decode_error:
            self._dead_letters.send(value, message.key(), str(decode_error), source)
            self.stats.records_dead_lettered += 1
            self._tracker.add_record(source.topic, source.partition, source.offset, 0)
            return
        converted, rejected = convert_points(record.agent_id, record.window_start_ms, record.points)
        for refused in rejected:
            self._dead_letter_point(
                _point_document(record, refused.point), message.key(), refused.reason, source
            )
        self._tracker.add_record(source.topic, source.partition, source.offset, len(converted))
        for body in converted:
            complete = self._batcher.add(_Outgoing(body, source, message.key()), series_id(body))
            if complete:
                self._send(complete)
            if self._batcher and self._batch_started is None:
                self._batch_started = time.monotonic()

    def _send(self, batch: list[_Outgoing]) -> None:
        self._batch_started = None
        if not batch:
            return
        report = self.client.send([item.body for item in batch], self._shutdown.abort)
        self.stats.requests += report.requests
        self.stats.retries += report.retries
        for index, reason in sorted(report.rejected.items()):
            item = batch[index]
            self._dead_letter_point({"anodot_point": item.body}, item.key, reason, item.source)
        self.stats.points_accepted += len(batch) - len(report.rejected)
        self._tracker.resolve(len(batch))
        # Commit after every request: a crash then re-sends at most the records in flight.
        self._commit(asynchronous=True)

    def _dead_letter_point(
        self, document: dict[str, Any], key: bytes | None, reason: str, source: SourceRef
    ) -> None:
        value = json.dumps(document, sort_keys=True).encode()
        self._dead_letters.send(value, key, reason, source)
        self.stats.points_dead_lettered += 1

    def _commit(self, *, asynchronous: bool) -> None:
        offsets = self._tracker.take_committable()
        if offsets:
            self._dead_letters.flush()
            commit_offsets(self._consumer, offsets, asynchronous=asynchronous)

    def _drain(self) -> None:
        """Send what is buffered and commit it (clean shutdown)."""
        if self._batcher:
            self._send(self._batcher.take())
        self._commit(asynchronous=False)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Finish what was consumed from the partitions we lose, so the next owner starts
        # exactly after it; what cannot be finished stays uncommitted and is redelivered.
        try:
            if not self._shutdown.abort.is_set():
                self._drain()
        except SendAborted:
            pass
        except BaseException as error:  # re-raised from the main loop
            self._callback_error = error
        finally:
            self._batcher.take()
            self._batch_started = None
            self._tracker.forget()

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _close(self) -> None:
        try:
            self._consumer.close()
        finally:
            self._dead_letters.flush()
            self._shutdown.cancel_timer()

    def _log_progress(self) -> None:
        log.info("anodot sink: %s", ", ".join(f"{k}={v}" for k, v in asdict(self.stats).items()))


def _point_document(record: MetricRecord, point: Point) -> dict[str, Any]:
    return {
        "agent_id": record.agent_id,
        "window_start_ms": record.window_start_ms,
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
