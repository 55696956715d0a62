"""The Prometheus sink: metrics topic → ``/metrics``, the latest closed window of every agent.

One consumer in group ``mlwatcher-sink-prometheus``. Its state is the latest window of each
agent (:class:`~mlwatcher.sinks.prometheus_format.LatestWindows`), held in memory and served by
``prometheus_client``'s HTTP server; Prometheus scrapes it. Nothing is durable, so when a
partition is assigned (start, restart, rebalance) the sink re-reads it from ``lookback_seconds``
ago, which rebuilds the latest window of every agent active since; offsets are committed only
so that the group's lag shows how far behind the sink is. Agents of a revoked partition are
dropped (their next owner serves them); agents whose latest window ended more than
``expire_after_windows`` of their windows ago expire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.process_collector import ProcessCollector

from mlwatcher.schemas import MetricRecord, SchemaDecodeError
from mlwatcher.sinks.kafka_io import DeadLetterWriter, SourceRef, commit_offsets, make_consumer
from mlwatcher.sinks.prometheus_format import LatestWindows, SeriesFilter
from mlwatcher.sinks.shutdown import Shutdown

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-prometheus"
DEFAULT_PORT = 6070

TopicPartitionKey = tuple[str, int]

#: reasons a metric record is refused with (the ``reason`` label of the dead-letter counter)
DEAD_LETTER_REASONS = ("undecodable",)


@dataclass
class PrometheusSinkConfig:
    bootstrap_servers: str
    metrics_topic: str
    dead_letter_topic: str
    group_id: str = DEFAULT_GROUP_ID
    kafka_options: dict[str, str] = field(default_factory=dict)
    progress_interval: float = 10.0
    #: address of the /metrics endpoint; loopback unless told otherwise
    web_host: str = "127.0.0.1"
    #: 0: any free port (see ``PrometheusSink.port``)
    web_port: int = DEFAULT_PORT
    series_filter: SeriesFilter = field(default_factory=SeriesFilter)
    #: an agent's series go away once its latest window ended this many windows ago
    expire_after_windows: float = 10.0
    #: on assignment, re-read this many seconds of the topic to rebuild the latest windows
    lookback_seconds: float = 3600.0


@dataclass
class PrometheusSinkStats:
    records: int = 0
    records_dead_lettered: int = 0
    records_stale: int = 0
    records_revised: int = 0
    points: int = 0
    points_filtered: int = 0
    points_refused: int = 0
    agents_expired: int = 0


class SinkMetrics:
    """The sink's own series, next to the agents' (same registry, same /metrics)."""

    def __init__(self, registry: CollectorRegistry, windows: LatestWindows) -> None:
        ProcessCollector(registry=registry)
        self.records = Counter(
            "mlwatcher_sink_records",
            "Metric records consumed, by outcome: new (a newer window), revision (the held "
            "window again), stale (older than the held window, ignored), dead_letter.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("new", "revision", "stale", "dead_letter"):
            self.records.labels(outcome)
        self.dead_letters = Counter(
            "mlwatcher_sink_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        # Present from the start at 0: increase() sees the first dead letter as a rise.
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.points = Counter(
            "mlwatcher_sink_points",
            "Points of the records taken, by fate: exported, filtered (cardinality filter), "
            "refused (extra properties that are not valid labels).",
            ["fate"],
            registry=registry,
        )
        for fate in ("exported", "filtered", "refused"):
            self.points.labels(fate)
        self.agents_expired = Counter(
            "mlwatcher_sink_agents_expired",
            "Agents whose series expired (no window for expire_after_windows windows).",
            registry=registry,
        )
        Gauge(
            "mlwatcher_sink_agents", "Agents with exported series.", registry=registry
        ).set_function(lambda: len(windows.agents()))
        Gauge(
            "mlwatcher_sink_series", "Series exported for the agents.", registry=registry
        ).set_function(lambda: windows.series)


class PrometheusSink:
    """Consumes metric records into :class:`LatestWindows` and serves them over HTTP."""

    name = "prometheus"
    max_poll_records = 2000

    def __init__(self, config: PrometheusSinkConfig) -> None:
        if config.lookback_seconds < 0:
            raise ValueError(f"lookback_seconds must be >= 0, got {config.lookback_seconds}")
        self.config = config
        self.stats = PrometheusSinkStats()
        self.windows = LatestWindows(config.series_filter, config.expire_after_windows)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.windows)
        self.metrics = SinkMetrics(self.registry, self.windows)
        self._done: dict[TopicPartitionKey, int] = {}
        self._next_expiry = 0.0
        self._server: Any = None
        self._server_thread: Any = None
        self.dead_letters = DeadLetterWriter(
            config.bootstrap_servers,
            config.dead_letter_topic,
            f"sink-{self.name}",
            config.kafka_options,
        )

    # -- HTTP ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Start the /metrics endpoint (a daemon thread of prometheus_client)."""
        if self._server is None:
            self._server, self._server_thread = start_http_server(
                self.config.web_port, addr=self.config.web_host, registry=self.registry
            )
            log.info("prometheus sink: serving http://%s:%d/metrics", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- records ---------------------------------------------------------------------------

    def decode(self, value: bytes) -> tuple[dict[str, Any], Any]:
        return MetricRecord.decode_columns(value)

    def add(self, record: tuple[dict[str, Any], Any], message: Message) -> None:
        header, columns = record
        key = (message.topic(), message.partition())
        result = self.windows.apply(header, columns, source=key)
        self.metrics.records.labels(result.outcome).inc()
        if result.outcome == "stale":
            self.stats.records_stale += 1
        else:
            self.stats.records_revised += result.outcome == "revision"
            exported = result.points - result.filtered - result.refused
            self.metrics.points.labels("exported").inc(exported)
            self.metrics.points.labels("filtered").inc(result.filtered)
            self.metrics.points.labels("refused").inc(result.refused)
            self.stats.points_filtered += result.filtered
            self.stats.points_refused += result.refused
        self.stats.points += result.points
        self._done[key] = message.offset() + 1

    def refused(self, message: Message, error: SchemaDecodeError) -> None:
        """A record that does not decode: dead-lettered with the reason and counted."""
        reason = getattr(error, "reason", "undecodable")
        self.dead_letters.send(
            message.value() or b"", message.key(), str(error), SourceRef.of(message)
        )
        self.metrics.records.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(reason).inc()
        self.stats.records_dead_lettered += 1
        self._done[(message.topic(), message.partition())] = message.offset() + 1

    def poll(self, idle: bool) -> None:
        now = time.time()
        if now >= self._next_expiry:
            expired = self.windows.expire(now)
            if expired:
                log.info("prometheus sink: expired %d agents: %s", len(expired), expired[:10])
                self.metrics.agents_expired.inc(len(expired))
                self.stats.agents_expired += len(expired)
            self._next_expiry = now + 1.0

    def committable(self) -> Mapping[TopicPartitionKey, int]:
        done, self._done = self._done, {}
        return done

    def start_offsets(
        self, consumer: Consumer, partitions: Collection[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """Where to start each assigned partition: ``lookback_seconds`` ago (the end when
        nothing is that recent), whatever was committed."""
        since_ms = int((time.time() - self.config.lookback_seconds) * 1000)
        asked = [TopicPartition(t, p, since_ms) for t, p in partitions]
        starts: dict[TopicPartitionKey, int] = {}
        for tp in consumer.offsets_for_times(asked, timeout=30):
            offset = tp.offset
            if offset < 0:  # no message that recent: start at the end
                offset = OFFSET_END
            starts[(tp.topic, tp.partition)] = offset
        return starts

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        """Revoked partitions: their agents are served by the next owner."""
        gone = self.windows.drop_sources(partitions)
        if gone:
            log.info("prometheus sink: %d agents moved to another sink process", len(gone))
        for key in partitions:
            self._done.pop(key, None)

    # -- the consumer loop -----------------------------------------------------------------

    def run(self, shutdown: Shutdown | None = None) -> PrometheusSinkStats:
        """Serve /metrics and consume until ``shutdown.stopping`` is set."""
        stopping = (shutdown or Shutdown()).stopping
        config = self.config
        consumer = make_consumer(config.bootstrap_servers, config.group_id, config.kafka_options)
        callback_errors: list[BaseException] = []

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                starts = self.start_offsets(
                    consumer, [(tp.topic, tp.partition) for tp in partitions]
                )
                for tp in partitions:
                    tp.offset = starts[(tp.topic, tp.partition)]
                consumer.assign(partitions)
            except BaseException as error:
                callback_errors.append(error)

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                self._commit(consumer)
            finally:
                self.forget([(tp.topic, tp.partition) for tp in partitions])

        self.serve()
        consumer.subscribe([config.metrics_topic], on_assign=on_assign, on_revoke=on_revoke)
        next_progress = time.monotonic() + config.progress_interval
        try:
            while not stopping.is_set():
                messages = consumer.consume(self.max_poll_records, 0.2)
                if callback_errors:
                    raise callback_errors.pop()
                for message in messages:
                    self._handle(message)
                self.poll(idle=not messages)
                self._commit(consumer)
                if time.monotonic() >= next_progress:
                    self._log_progress()
                    next_progress = time.monotonic() + config.progress_interval
            self._commit(consumer)
        finally:
            try:
                consumer.close()
            finally:
                self.dead_letters.flush()
                self.close()
                if shutdown is not None:
                    shutdown.cancel_timer()
        self._log_progress()
        return self.stats

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {error}")
            log.warning("consumer error: %s", error)
            return
        self.stats.records += 1
        try:
            record = self.decode(message.value() or b"")
        except SchemaDecodeError as refused:
            self.refused(message, refused)
        else:
            self.add(record, message)

    def _commit(self, consumer: Consumer) -> None:
        offsets = self.committable()
        if offsets:
            self.dead_letters.flush()
            commit_offsets(consumer, offsets, asynchronous=True)

    def _log_progress(self) -> None:
        log.info(
            "prometheus sink: %s, agents=%d, series=%d",
            ", ".join(f"{k}={v}" for k, v in asdict(self.stats).items()),
            len(self.windows.agents()),
            self.windows.series,
        )
