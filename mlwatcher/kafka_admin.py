"""Topic administration and broker liveness checks (confluent-kafka AdminClient only).

Every helper takes a bootstrap string and optional extra librdkafka settings (for
SASL/SSL clusters), so the same code serves the local test brokers and a production
cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = [
    "BrokerUnavailableError",
    "TopicAdminError",
    "create_topics",
    "delete_topics",
    "topic_partition_counts",
    "wait_for_broker",
]


class BrokerUnavailableError(RuntimeError):
    """No broker answered a metadata request in time."""


class TopicAdminError(RuntimeError):
    """A topic could not be created, deleted or seen in metadata."""


def _admin(bootstrap_servers: str, client_config: Mapping[str, str] | None) -> AdminClient:
    if not bootstrap_servers or not isinstance(bootstrap_servers, str):
        raise ValueError(
            f"bootstrap_servers must be a non-empty 'host:port[,host:port]' string, "
            f"got {bootstrap_servers!r}"
        )
    config: dict[str, str] = {"bootstrap.servers": bootstrap_servers}
    # Connection refusals are expected while waiting for a broker; don't spam stderr.
    config["log_level"] = "0"
    config.update(client_config or {})
    return AdminClient(config)


def wait_for_broker(
    bootstrap_servers: str,
    timeout: float = 30.0,
    *,
    client_config: Mapping[str, str] | None = None,
) -> None:
    """Return once a broker answers a metadata request; raise if none does in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(
                f"no Kafka broker answered on {bootstrap_servers} within {timeout:.1f} s"
                + (f" (last error: {last_error})" if last_error else "")
            )
        # A fresh client per attempt: librdkafka's reconnect backoff grows while a
        # port refuses connections, which would delay noticing a broker that just came up.
        admin = _admin(bootstrap_servers, client_config)
        try:
            metadata = admin.list_topics(timeout=max(0.2, min(remaining, 2.0)))
            if metadata.brokers:
                return
        except KafkaException as error:
            last_error = error
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def broker_count(
    bootstrap_servers: str,
    *,
    client_config: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> int:
    """Brokers the cluster metadata lists (at least 1)."""
    metadata = _admin(bootstrap_servers, client_config).list_topics(timeout=timeout)
    return max(1, len(metadata.brokers))


def topic_partition_counts(
    bootstrap_servers: str,
    *,
    client_config: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, int]:
    """Map of every visible topic name to its partition count."""
    metadata = _admin(bootstrap_servers, client_config).list_topics(timeout=timeout)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def create_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, str] | None = None,
    replication_factor: int = 1,
    client_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topics with explicit partition counts and wait until metadata shows them.

    Idempotent: a topic that already exists is accepted as is (its partition count is
    not changed). ``config`` holds topic-level settings (e.g. ``retention.ms``) applied
    to every new topic.
    """
    for name, partitions in topics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic names must be non-empty strings, got {name!r}")
        if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
            raise ValueError(
                f"partition count for topic {name!r} must be an int >= 1, got {partitions!r}"
            )
    if not topics:
        return
    admin = _admin(bootstrap_servers, client_config)
    new_topics = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        for name, partitions in topics.items()
    ]
    futures = admin.create_topics(new_topics, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicAdminError(f"could not create topic {name!r}: {error}") from error
    _wait_for_topics(admin, topics, present=True, timeout=timeout)


def delete_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    client_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    wait: bool = True,
) -> None:
    """Delete topics; missing topics are fine.

    With ``wait`` (the default) returns only once metadata no longer lists them, so the
    names can be reused at once.
    """
    names = list(names)
    if not names:
        return
    admin = _admin(bootstrap_servers, client_config)
    futures = admin.delete_topics(names, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicAdminError(f"could not delete topic {name!r}: {error}") from error
    if wait:
        _wait_for_topics(admin, dict.fromkeys(names, 0), present=False, timeout=timeout)


def _wait_for_topics(
    admin: AdminClient, topics: Mapping[str, int], *, present: bool, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        visible = {
            name
            for name, topic in metadata.topics.items()
            if topic.error is None and len(topic.partitions) > 0
        }
        pending = set(topics) - visible if present else set(topics) & visible
        if not pending:
            return
        if time.monotonic() >= deadline:
            state = "appear in" if present else "disappear from"
            raise TopicAdminError(
                f"topics {sorted(pending)} did not {state} metadata within {timeout:.0f} s"
            )
        time.sleep(0.05)
