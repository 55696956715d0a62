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
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mlwatcher.schemas import MetricRecord, SchemaDecodeError
from mlwatcher.schemas.codec import UNDECODABLE, UNKNOWN_SCHEMA
from mlwatcher.schemas.point_columns import PointColumns
from mlwatcher.sinks.base import Sink, SinkConfig, SinkStats, TopicPartitionKey
from mlwatcher.sinks.prometheus_format import (
    LABEL_REVISION,
    NEW,
    REPLAY,
    STALE,
    LatestWindows,
    SeriesFilter,
)

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "mlwatcher-sink-prometheus"
DEFAULT_PORT = 6070

#: reasons a metric record is refused with (the ``reason`` label of the dead-letter counter)
DEAD_LETTER_REASONS = (UNDECODABLE, UNKNOWN_SCHEMA)

#: a decoded record: its header fields and its points as columns
Columns = tuple[dict[str, Any], PointColumns]


@dataclass
class PrometheusSinkConfig(SinkConfig):
    group_id: str = field(default=DEFAULT_GROUP_ID, kw_only=True)
    #: address of the /metrics endpoint; loopback unless told otherwise
    web_host: str = field(default="127.0.0.1", kw_only=True)
    #: 0: any free port (see ``PrometheusSink.address``)
    web_port: int = field(default=DEFAULT_PORT, kw_only=True)
    series_filter: SeriesFilter = field(default_factory=SeriesFilter, kw_only=True)
    #: an agent's series go away once its latest window ended this many windows ago
    expire_after_windows: float = field(default=10.0, kw_only=True)
    #: on assignment, re-read this many seconds of the topic to rebuild the latest windows
    lookback_seconds: float = field(default=3600.0, kw_only=True)


@dataclass
class PrometheusSinkStats(SinkStats):
    records_stale: int = 0
    records_revised: int = 0  # label revisions of the held window
    records_replayed: int = 0  # the held window and revision again
    points: int = 0
    points_filtered: int = 0
    points_refused: int = 0
    agents_expired: int = 0


class _RunnerCounters(Collector):
    """The runner's own counts (``SinkStats``) as counters."""

    def __init__(self, stats: SinkStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "mlwatcher_sink_kafka_errors",
            "Kafka client errors seen while consuming (broker down, ...).",
            value=self.stats.kafka_errors,
        )
        yield CounterMetricFamily(
            "mlwatcher_sink_commits", "Offset commits sent.", value=self.stats.commits
        )


class SinkMetrics:
    """The sink's own series, next to the agents' (same registry, same /metrics)."""

    def __init__(
        self, registry: CollectorRegistry, windows: LatestWindows, stats: SinkStats
    ) -> None:
        ProcessCollector(registry=registry)
        registry.register(_RunnerCounters(stats))
        self.records = Counter(
            "mlwatcher_sink_records",
            "Metric records consumed, by outcome: new (a newer window), label_revision (a label "
            "revision of the held window: its label series replaced), replay (the held window "
            "and revision again), stale (an older window or revision, ignored), dead_letter.",
            ["outcome"],
            registry=registry,
        )
        for outcome in (NEW, LABEL_REVISION, REPLAY, STALE, "dead_letter"):
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


class PrometheusSink(Sink[Columns]):
    """Takes metric records into :class:`LatestWindows` and serves them over HTTP.

    A record is "durable" as soon as it is applied to the in-memory state: its offset is
    committed right away (so the group's lag is the sink's lag); the state itself is rebuilt
    from the topic on assignment (:meth:`start_time_ms`).
    """

    name = "prometheus"
    max_poll_records = 2000
    config: PrometheusSinkConfig
    stats: PrometheusSinkStats

    def __init__(self, config: PrometheusSinkConfig) -> None:
        if config.lookback_seconds < 0:
            raise ValueError(f"lookback_seconds must be >= 0, got {config.lookback_seconds}")
        self.windows = LatestWindows(config.series_filter, config.expire_after_windows)
        super().__init__(config, PrometheusSinkStats())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.windows)
        self.metrics = SinkMetrics(self.registry, self.windows, self.stats)
        self._done: dict[TopicPartitionKey, int] = {}
        self._refusal = UNDECODABLE
        self._next_expiry = 0.0
        self._server: Any = None

    # -- HTTP ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Start the /metrics endpoint (a daemon thread of prometheus_client)."""
        if self._server is None:
            self._server, _ = start_http_server(
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

    # -- the runner's hooks ----------------------------------------------------------------

    def run(self, shutdown: Any = None) -> PrometheusSinkStats:
        """Serve /metrics, then consume until ``shutdown.stopping`` is set."""
        self.serve()
        return super().run(shutdown)  # type: ignore[return-value]

    def start_time_ms(self) -> int:
        return int((time.time() - self.config.lookback_seconds) * 1000)

    def decode(self, value: bytes) -> Columns:
        try:
            return MetricRecord.decode_columns(value)
        except SchemaDecodeError as error:
            self._refusal = error.reason  # the runner dead-letters it, then calls skip()
            raise

    def add(self, record: Columns, message: Message) -> None:
        header, columns = record
        key = (message.topic(), message.partition())
        result = self.windows.apply(header, columns, source=key)
        self.metrics.records.labels(result.outcome).inc()
        self.stats.points += result.points
        if result.outcome == STALE:
            self.stats.records_stale += 1
        else:
            self.stats.records_revised += result.outcome == LABEL_REVISION
            self.stats.records_replayed += result.outcome == REPLAY
            exported = result.points - result.filtered - result.refused
            self.metrics.points.labels("exported").inc(exported)
            self.metrics.points.labels("filtered").inc(result.filtered)
            self.metrics.points.labels("refused").inc(result.refused)
            self.stats.points_filtered += result.filtered
            self.stats.points_refused += result.refused
        self._done[key] = message.offset() + 1

    def skip(self, message: Message) -> None:
        self.metrics.records.labels("dead_letter").inc()
        self.metrics.dead_letters.labels(self._refusal).inc()
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

    def forget(self, partitions: Collection[TopicPartitionKey]) -> None:
        """Revoked partitions: their agents are served by the next owner."""
        gone = self.windows.drop_sources(partitions)
        if gone:
            log.info("prometheus sink: %d agents moved to another sink process", len(gone))
        for key in partitions:
            self._done.pop(key, None)

    def buffered(self) -> int:
        return 0  # nothing waits for a destination; the state is the series themselves
