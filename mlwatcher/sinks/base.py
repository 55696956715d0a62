"""What a sink is: a small base class; :mod:`mlwatcher.sinks.runner` does the Kafka side.

Like Quix Streams' ``BatchingSink``, a sink only says what to do with a record and when its
data is durable at the destination; the runner consumes, dead-letters undecodable records,
calls the hooks below in consumption order, commits after the sink's durability point, logs
progress and counts. A sink written this way::

    class PrintSink(Sink[MetricRecord]):
        name = "print"

        def __init__(self, config: SinkConfig) -> None:
            super().__init__(config, SinkStats())
            self._done: dict[tuple[str, int], int] = {}

        def add(self, record: MetricRecord, message: Message) -> None:
            print(record.window_id)  # durable as soon as it is printed
            self.done(message)

        def skip(self, message: Message) -> None:
            self.done(message)

        def done(self, message: Message) -> None:
            self._done[(message.topic(), message.partition())] = message.offset() + 1

        def committable(self) -> dict[tuple[str, int], int]:
            done, self._done = self._done, {}
            return done
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Generic, TypeVar

from confluent_kafka import Message

from mlwatcher.dead_letter import DeadLetterWriter
from mlwatcher.outage_log import OutageLog, quiet_client_config
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.runner import SinkRunner
from mlwatcher.sinks.shutdown import Shutdown

R = TypeVar("R")
#: (topic, partition)
TopicPartitionKey = tuple[str, int]


@dataclass
class SinkConfig:
    """What every sink needs to consume the metrics topic."""

    bootstrap_servers: str
    metrics_topic: str
    dead_letter_topic: str
    #: consumer group; empty: ``mlwatcher-sink-<name>``
    group_id: str = field(default="", kw_only=True)
    #: librdkafka options for the consumer and the dead-letter producer (SASL/SSL...)
    kafka_options: dict[str, str] = field(default_factory=dict, kw_only=True)
    #: seconds between progress lines (also the interval of the broker-outage summary)
    progress_interval: float = field(default=10.0, kw_only=True)


@dataclass
class SinkStats:
    """The runner's counters; a sink subclasses this with its own."""

    records: int = 0
    records_dead_lettered: int = 0
    commits: int = 0
    kafka_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Sink(ABC, Generic[R]):
    """A destination for the records of the metrics topic.

    The runner calls, on its one thread: :meth:`on_assign` after a rebalance, :meth:`add`
    (or :meth:`skip` for a record it dead-lettered) for every record in consumption order,
    :meth:`poll` after every consume round, :meth:`committable` after each of these to learn
    which offsets may be committed, :meth:`drain` and :meth:`forget` when partitions are
    revoked, :meth:`drain` at shutdown. A hook may raise
    :class:`~mlwatcher.sinks.shutdown.Abandoned` once ``shutdown.abort`` is set.
    """

    #: short name: the consumer group ``mlwatcher-sink-<name>``, the ``sink-<name>`` stage of
    #: its dead letters, the prefix of its log lines
    name: ClassVar[str]
    #: most records taken from one ``consume`` call
    max_poll_records: ClassVar[int] = 500
    #: commit in the background (True) or wait for the broker's answer (False)
    commit_asynchronously: ClassVar[bool] = True

    def __init__(self, config: SinkConfig, stats: SinkStats) -> None:
        self.config = config
        self.stats = stats
        #: set by the runner; ``shutdown.abort`` tells a hook to give up (raise Abandoned)
        self.shutdown = Shutdown()
        #: the errors of every Kafka client of the sink, one log line per progress interval
        self.kafka_outage = OutageLog(
            f"{self.name} sink: Kafka ({config.bootstrap_servers})",
            logging.getLogger(f"mlwatcher.sinks.{self.name}"),
            interval=config.progress_interval,
        )
        self.dead_letters = DeadLetterWriter(
            config.bootstrap_servers,
            config.dead_letter_topic,
            f"sink-{self.name}",
            config.kafka_options,
            client_options=quiet_client_config(self.kafka_outage),
        )

    @property
    def group_id(self) -> str:
        return self.config.group_id or f"mlwatcher-sink-{self.name}"

    def decode(self, value: bytes) -> R:
        """Bytes of the metrics topic to the record :meth:`add` takes; SchemaDecodeError if not."""
        return MetricRecord.decode(value)  # type: ignore[return-value]

    @abstractmethod
    def add(self, record: R, message: Message) -> None:
        """Take one record (it may be written or sent now, or buffered)."""

    @abstractmethod
    def skip(self, message: Message) -> None:
        """The runner dead-lettered this message: count its offset as handled."""

    def poll(self, idle: bool) -> None:
        """Batching hook, after every consume round: write or send what is due.
        ``idle``: that round brought no message."""

    @abstractmethod
    def committable(self) -> Mapping[TopicPartitionKey, int]:
        """Take the ``{(topic, partition): next offset}`` made durable since the last call."""

    def start_time_ms(self) -> int | None:
        """Where newly assigned partitions start: ``None`` (the default) at the group's
        committed offsets; a Unix time in ms: at each partition's first record of that time or
        later (its end when there is none), for a sink that rebuilds its state from the topic
        rather than resuming where it committed."""
        return None

    def on_assign(self, start_offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Partitions were assigned; consumption of each starts at the given offset."""

    def drain(self, partitions: Collection[TopicPartitionKey] | None) -> None:
        """Make everything buffered of ``partitions`` (None: of all) durable (revoke, stop)."""

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        """Partitions were revoked: drop what is left of them (it is redelivered elsewhere)."""

    def buffered(self) -> int:
        """How many items are held and not yet durable (for the progress line)."""
        return 0

    def close(self) -> None:
        """The runner stopped; release the destination's resources."""

    def run(self, shutdown: Shutdown | None = None) -> SinkStats:
        """Consume until ``shutdown.stopping`` is set; then drain, commit and return the stats."""
        return SinkRunner(self).run(shutdown)
