"""Kafka plumbing shared by the sinks: consumer settings, dead-letter producer, commits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

log = logging.getLogger(__name__)

#: Header names on dead-lettered messages (values are UTF-8 strings).
HEADER_REASON = "mlwatcher.reason"
HEADER_STAGE = "mlwatcher.stage"
HEADER_SOURCE_TOPIC = "mlwatcher.source.topic"
HEADER_SOURCE_PARTITION = "mlwatcher.source.partition"
HEADER_SOURCE_OFFSET = "mlwatcher.source.offset"


class DeadLetterError(RuntimeError):
    """A dead-letter message could not be written: the sink must not commit past it."""


@dataclass(frozen=True)
class SourceRef:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, message: Message) -> SourceRef:
        return cls(message.topic(), message.partition(), message.offset())


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


def make_consumer(
    bootstrap_servers: str, group_id: str, extra: Mapping[str, str] | None = None
) -> Consumer:
    return Consumer(consumer_config(bootstrap_servers, group_id, extra))


def commit_offsets(
    consumer: Consumer, offsets: Mapping[tuple[str, int], int], *, asynchronous: bool
) -> None:
    """Commit ``{(topic, partition): next_offset}``; a failed sync commit is logged, not fatal
    (the records are simply delivered again: at-least-once)."""
    if not offsets:
        return
    partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    try:
        consumer.commit(offsets=partitions, asynchronous=asynchronous)
    except KafkaException as error:
        log.warning("offset commit failed (records will be delivered again): %s", error)


def is_fatal_consumer_error(error: KafkaError) -> bool:
    return bool(error.fatal())


class DeadLetterWriter:
    """Writes refused input to the dead-letter topic with the reason in headers.

    Idempotent producer, acks=all; :meth:`flush` must succeed before offsets past the
    dead-lettered records are committed.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        stage: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
        }
        config.update(extra or {})
        self.topic = topic
        self.stage = stage
        self.sent = 0
        self._failures: list[str] = []
        self._producer = Producer(config)

    def send(self, value: bytes, key: bytes | None, reason: str, source: SourceRef) -> None:
        headers = [
            (HEADER_REASON, reason.encode()),
            (HEADER_STAGE, self.stage.encode()),
            (HEADER_SOURCE_TOPIC, source.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(source.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(source.offset).encode()),
        ]
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
        self._producer.poll(0)
        self.sent += 1

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(str(error))

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeadLetterError(
                f"{remaining} dead-letter messages to {self.topic!r} not delivered in {timeout} s"
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeadLetterError(
                f"{len(failures)} dead-letter messages to {self.topic!r} failed: {failures[0]}"
            )
