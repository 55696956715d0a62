"""The one dead-letter envelope, written by the stream worker and by every sink.

A dead letter is the refused message's key and value, unchanged, with six UTF-8 headers saying
why and where from (documented in docs/dead_letters.md). :func:`envelope_headers` builds them
(the worker passes them to its own producer), :class:`DeadLetterWriter` writes them through a
confluent-kafka producer, :meth:`DeadLetter.from_message` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

#: short machine-readable code: ``undecodable``, ``unknown-schema``, ``invalid-batch``, ...
HEADER_REASON = "mlwatcher.reason"
#: human-readable explanation naming the field and what was expected (at most 1000 characters)
HEADER_DETAIL = "mlwatcher.detail"
#: which process refused it: ``worker``, ``sink-anodot``, ``sink-parquet``, ...
HEADER_STAGE = "mlwatcher.stage"
HEADER_SOURCE_TOPIC = "mlwatcher.source.topic"
HEADER_SOURCE_PARTITION = "mlwatcher.source.partition"
HEADER_SOURCE_OFFSET = "mlwatcher.source.offset"

HEADERS = (
    HEADER_REASON,
    HEADER_DETAIL,
    HEADER_STAGE,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
)

#: the detail is cut to this many characters (headers are not the place for whole documents)
MAX_DETAIL = 1000


class DeadLetterError(RuntimeError):
    """A dead letter could not be written: no offset past it may be committed."""


@dataclass(frozen=True)
class SourceRef:
    """Where a consumed message came from."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, message: Message) -> SourceRef:
        return cls(message.topic(), message.partition(), message.offset())


def envelope_headers(
    reason: str, detail: str, stage: str, source: SourceRef
) -> list[tuple[str, bytes]]:
    """The headers of one dead letter, in the order of :data:`HEADERS`."""
    return [
        (HEADER_REASON, reason.encode()),
        (HEADER_DETAIL, detail[:MAX_DETAIL].encode()),
        (HEADER_STAGE, stage.encode()),
        (HEADER_SOURCE_TOPIC, source.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(source.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source.offset).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter read back from the topic."""

    reason: str
    detail: str
    stage: str
    source: SourceRef
    key: bytes | None
    value: bytes

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        """Parse a consumed dead letter; ValueError if it lacks one of the headers."""
        return cls.from_parts(message.headers() or [], message.key(), message.value() or b"")

    @classmethod
    def from_parts(
        cls,
        headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None],
        key: bytes | None,
        value: bytes,
    ) -> DeadLetter:
        found = dict(headers.items() if isinstance(headers, Mapping) else headers)
        missing = [name for name in HEADERS if found.get(name) is None]
        if missing:
            raise ValueError(f"not a dead letter: headers {missing} missing")
        text = {name: bytes(found[name] or b"").decode() for name in HEADERS}
        return cls(
            reason=text[HEADER_REASON],
            detail=text[HEADER_DETAIL],
            stage=text[HEADER_STAGE],
            source=SourceRef(
                text[HEADER_SOURCE_TOPIC],
                int(text[HEADER_SOURCE_PARTITION]),
                int(text[HEADER_SOURCE_OFFSET]),
            ),
            key=key,
            value=value,
        )


def producer_config(
    bootstrap_servers: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Idempotent, acks=all: a dead letter is as durable as the data it replaces."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
    }
    config.update(extra or {})
    return config


class DeadLetterWriter:
    """Writes dead letters of one ``stage`` to ``topic``.

    :meth:`flush` must succeed before an offset past a dead-lettered message is committed;
    it raises DeadLetterError otherwise. ``sent`` counts the letters handed to the producer.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        stage: str,
        extra: Mapping[str, str] | None = None,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_options``: confluent-kafka options that are not librdkafka strings
        (``error_cb``, ``logger``: see :func:`mlwatcher.outage_log.quiet_client_config`)."""
        self.topic = topic
        self.stage = stage
        self.sent = 0
        self._failures: list[str] = []
        self._producer = Producer(
            {**producer_config(bootstrap_servers, extra), **(client_options or {})}
        )

    def send(
        self,
        value: bytes,
        key: bytes | None,
        reason: str,
        detail: str,
        source: SourceRef,
    ) -> None:
        headers = envelope_headers(reason, detail, self.stage, source)
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
                f"{remaining} dead letters to {self.topic!r} not delivered in {timeout} s"
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeadLetterError(
                f"{len(failures)} dead letters to {self.topic!r} failed: {failures[0]}"
            )
