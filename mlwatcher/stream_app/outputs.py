"""Everything the worker writes to Kafka goes through one confluent-kafka producer.

State entries (changelog), metric records, dead letters and control ticks share one
idempotent ``acks=all`` producer, so writes to one partition stay in order and a
:meth:`KafkaOutputs.flush` that returns means every write before it is on the broker. The
worker never lets a source offset count as processed before that flush (see
:mod:`mlwatcher.stream_app.processor`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from mlwatcher.dead_letter import SourceRef, envelope_headers

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16_000_000
CONTROL_HEADER = "mlwatcher-control"
TICK = b"tick"
DEAD_LETTER_STAGE = "worker"


class DeliveryFailed(RuntimeError):
    """A write was refused or timed out: the batch that made it must not count as processed."""


@dataclass(frozen=True)
class SourceMessage:
    """The input message a dead letter copies (bytes and where they came from)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Outputs(Protocol):
    """Where an :class:`~mlwatcher.stream_app.executor.ActionExecutor` writes."""

    def put_state(self, partition: int, key: bytes, value: bytes | None) -> None: ...

    def emit_record(self, key: bytes, value: bytes) -> None: ...

    def dead_letter(self, source: SourceMessage, reason: str, detail: str) -> None: ...

    def flush(self) -> None:
        """Return once every write so far is acknowledged; raise DeliveryFailed if one failed."""


def producer_config(
    bootstrap_servers: str, kafka_options: Mapping[str, object], client_id: str
) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        # Retried until delivered: an outage stalls the worker (and is reported as such)
        # instead of failing a write whose batch would then have to be dropped.
        "message.timeout.ms": 0,
        "linger.ms": 2,
        "batch.size": 4_000_000,
        "message.max.bytes": MAX_MESSAGE_BYTES + 100_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000,
        "compression.type": "lz4",
        "log_level": 3,
    }
    config.update(kafka_options)
    return config


class KafkaOutputs:
    """The worker's producer, with delivery tracking per changelog partition."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        changelog_topic: str,
        metrics_topic: str,
        dead_letter_topic: str,
        predictions_topic: str,
        kafka_options: Mapping[str, object] | None = None,
        client_id: str = "mlwatcher-worker",
    ) -> None:
        self.changelog_topic = changelog_topic
        self.metrics_topic = metrics_topic
        self.dead_letter_topic = dead_letter_topic
        self.predictions_topic = predictions_topic
        self._producer = Producer(
            producer_config(bootstrap_servers, kafka_options or {}, client_id)
        )
        self._lock = threading.Lock()
        self._failures: list[str] = []
        #: offset of the latest acknowledged write per changelog partition
        self.last_state_offset: dict[int, int] = {}
        self.state_bytes = 0

    # -- writes -------------------------------------------------------------------------------
    def put_state(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.state_bytes += len(key) + (len(value) if value else 0)
        self._produce(self.changelog_topic, key, value, partition=partition)

    def emit_record(self, key: bytes, value: bytes) -> None:
        self._produce(self.metrics_topic, key, value)

    def dead_letter(self, source: SourceMessage, reason: str, detail: str) -> None:
        self._produce(
            self.dead_letter_topic,
            source.key,
            source.value,
            headers=envelope_headers(
                reason,
                detail,
                DEAD_LETTER_STAGE,
                SourceRef(source.topic, source.partition, source.offset),
            ),
        )

    def send_tick(self, partition: int, now_ms: int) -> None:
        """Append a control tick to a predictions partition (closes quiet agents' windows)."""
        self._produce(
            self.predictions_topic,
            None,
            str(now_ms).encode(),
            partition=partition,
            headers=[(CONTROL_HEADER, TICK)],
        )
        self._producer.poll(0)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every write is acknowledged (or ``timeout_s`` passed: DeliveryFailed)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            pending = self._producer.flush(min(1.0, remaining))
            self._raise_failures()
            if pending == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise DeliveryFailed(f"{pending} writes still unacknowledged after {timeout_s} s")

    def close(self) -> None:
        self._producer.flush(10)

    # -- internals ----------------------------------------------------------------------------
    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        kwargs: dict[str, object] = {"on_delivery": self._delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: wait for deliveries

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            with self._lock:
                self._failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")
            return
        if message.topic() == self.changelog_topic:
            partition, offset = message.partition(), message.offset()
            if offset > self.last_state_offset.get(partition, -1):
                self.last_state_offset[partition] = offset

    def _raise_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryFailed(f"{len(failures)} writes failed, first: {failures[0]}")
