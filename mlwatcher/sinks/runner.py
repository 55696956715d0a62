"""The one consumer loop of every sink: consume, dead-letter what does not decode, hand the rest
to the sink, commit after the sink's durability point, log progress and count.

Offsets are committed by hand (``enable.auto.commit=false``) and only those the sink returned
from :meth:`~mlwatcher.sinks.base.Sink.committable`, after the dead letters are flushed: a
record is never committed before it is durable at the destination or in the dead-letter topic.
Rebalance callbacks run inside ``consume``; an exception there is re-raised from the loop.
While the broker is unreachable the runner logs one line per progress interval
(:class:`~mlwatcher.outage_log.OutageLog`) and counts the errors in ``stats.kafka_errors``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from mlwatcher.dead_letter import SourceRef
from mlwatcher.outage_log import quiet_client_config
from mlwatcher.schemas import SchemaDecodeError
from mlwatcher.sinks.shutdown import Abandoned, Shutdown

if TYPE_CHECKING:
    from mlwatcher.sinks.base import Sink, TopicPartitionKey

log = logging.getLogger(__name__)

#: seconds one ``consume`` call waits for records
CONSUME_TIMEOUT = 0.2


def consumer_config(
    bootstrap_servers: str, group_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Manual commits only: an offset is committed once its record is fully handled."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    config.update(extra or {})
    return config


class SinkRunner:
    """Runs one :class:`~mlwatcher.sinks.base.Sink` against the metrics topic."""

    def __init__(self, sink: Sink[Any]) -> None:
        self.sink = sink
        config = sink.config
        self._outage = sink.kafka_outage
        self._consumer = Consumer(
            {
                **consumer_config(config.bootstrap_servers, sink.group_id, config.kafka_options),
                **quiet_client_config(self._outage),
            }
        )
        self._shutdown = Shutdown()
        self._callback_error: BaseException | None = None

    def run(self, shutdown: Shutdown | None = None) -> Any:
        """Consume until ``shutdown.stopping`` is set; drain, commit, close; return the stats."""
        self._shutdown = self.sink.shutdown = shutdown or Shutdown()
        sink, stopping = self.sink, self._shutdown.stopping
        self._consumer.subscribe(
            [sink.config.metrics_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        next_progress = time.monotonic() + sink.config.progress_interval
        try:
            while not stopping.is_set():
                messages = self._consumer.consume(sink.max_poll_records, CONSUME_TIMEOUT)
                self._raise_callback_error()
                for message in messages:
                    self._handle(message)
                sink.poll(idle=not messages)
                self._commit(asynchronous=sink.commit_asynchronously)
                self._outage.tick()
                sink.stats.kafka_errors = self._outage.errors
                if time.monotonic() >= next_progress:
                    self._log_progress()
                    next_progress = time.monotonic() + sink.config.progress_interval
            sink.drain(None)
            self._commit(asynchronous=False)
        except Abandoned:
            log.warning(
                "%s sink: shutdown: abandoned %d unsent items (not committed)",
                sink.name,
                sink.buffered(),
            )
        finally:
            try:
                self._consumer.close()
            finally:
                try:
                    sink.dead_letters.flush()
                finally:
                    sink.close()
                    self._shutdown.cancel_timer()
        self._log_progress()
        return sink.stats

    def _handle(self, message: Message) -> None:
        sink, stats = self.sink, self.sink.stats
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {error}")
            self._outage.error(error)
            return
        stats.records += 1
        value = message.value() or b""
        try:
            record = sink.decode(value)
        except SchemaDecodeError as refused:
            sink.dead_letters.send(
                value, message.key(), refused.reason, str(refused), SourceRef.of(message)
            )
            stats.records_dead_lettered += 1
            sink.skip(message)
        else:
            sink.add(record, message)
        self._commit(asynchronous=sink.commit_asynchronously)

    def _commit(self, *, asynchronous: bool) -> None:
        offsets = self.sink.committable()
        if offsets:
            self._commit_offsets(offsets, asynchronous=asynchronous)

    def _commit_offsets(
        self, offsets: Mapping[TopicPartitionKey, int], *, asynchronous: bool
    ) -> None:
        self.sink.dead_letters.flush()
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=partitions, asynchronous=asynchronous)
            self.sink.stats.commits += 1
        except KafkaException as error:
            # At least once: the records are delivered again and the sink writes them again.
            log.warning("%s sink: offset commit failed: %s", self.sink.name, error)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            starts: dict[TopicPartitionKey, int] = {}
            for tp in consumer.committed(partitions, timeout=30):
                start = tp.offset
                if start == OFFSET_INVALID or start < 0:
                    # Nothing committed yet: the group starts at the earliest offset still held.
                    start, _ = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=30
                    )
                starts[(tp.topic, tp.partition)] = start
            since_ms = self.sink.start_time_ms()
            if since_ms is not None:
                starts = self._seek_to_time(consumer, partitions, since_ms)
            self.sink.on_assign(starts)
        except BaseException as error:
            self._callback_error = error

    def _seek_to_time(
        self, consumer: Consumer, partitions: list[TopicPartition], since_ms: int
    ) -> dict[TopicPartitionKey, int]:
        """Assign ``partitions`` at their first record of ``since_ms`` or later."""
        asked = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions]
        starts: dict[TopicPartitionKey, int] = {}
        for tp in consumer.offsets_for_times(asked, timeout=30):
            start = tp.offset
            if start < 0:  # nothing that recent: start at the end
                _, start = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=30
                )
            starts[(tp.topic, tp.partition)] = start
        for tp in partitions:
            tp.offset = starts[(tp.topic, tp.partition)]
        strategy = self.sink.config.kafka_options.get("partition.assignment.strategy", "")
        if "cooperative" in strategy:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        return starts

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what was consumed from the partitions we lose, so the next owner starts
        # exactly after it; what cannot be finished stays uncommitted and is redelivered.
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        try:
            if not self._shutdown.abort.is_set():
                self.sink.drain(revoked)
                self._commit(asynchronous=False)
        except Abandoned:
            pass
        except BaseException as error:
            self._callback_error = error
        finally:
            self.sink.forget(revoked)

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _log_progress(self) -> None:
        stats = self.sink.stats.as_dict()
        log.info(
            "%s sink: %s, buffered=%d",
            self.sink.name,
            ", ".join(f"{key}={value}" for key, value in stats.items()),
            self.sink.buffered(),
        )
