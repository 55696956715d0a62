"""The worker's state topic: created with the right layout, and read back on takeover.

The worker owns its state instead of using a Faust table (see docs/stream_app.md, "Why the
worker owns its state"). Writing goes through :class:`~mlwatcher.stream_app.outputs.KafkaOutputs`;
this module creates the compacted topic and reads partitions back to their high watermark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from mlwatcher.kafka_admin import broker_count, create_topics, topic_partition_counts
from mlwatcher.stream_app.outputs import MAX_MESSAGE_BYTES
from mlwatcher.stream_app.state_codec import StateCodecError, cursor_key, unpack_cursor

log = logging.getLogger(__name__)


class RecoveryError(RuntimeError):
    """A changelog partition could not be read to its end."""


def changelog_topic_name(app_id: str) -> str:
    # The name the Faust table had, so state written by earlier versions is read back.
    return f"{app_id}-window-state-changelog"


def ensure_changelog_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    kafka_options: Mapping[str, str],
    replication_factor: int | None = None,
) -> None:
    """Create the compacted state topic if missing; refuse one with another partition count."""
    options = dict(kafka_options)
    counts = topic_partition_counts(bootstrap_servers, client_config=options)
    if topic in counts:
        if counts[topic] != partitions:
            raise RuntimeError(
                f"state topic {topic!r} has {counts[topic]} partitions but the predictions "
                f"topic has {partitions}: they must match (partition p of one holds the state "
                "of partition p of the other)"
            )
        return
    if replication_factor is None:
        replication_factor = min(3, broker_count(bootstrap_servers, client_config=options))
    create_topics(
        bootstrap_servers,
        {topic: partitions},
        config={
            "cleanup.policy": "compact",
            "max.message.bytes": str(MAX_MESSAGE_BYTES + 100_000),
        },
        replication_factor=replication_factor,
        client_config=options,
    )


@dataclass
class RecoveredPartition:
    partition: int
    entries: dict[bytes, bytes] = field(default_factory=dict)
    applied_offset: int | None = None  # the cursor: last predictions offset fully applied
    end_offset: int = 0  # the changelog partition's high watermark when read
    bytes_read: int = 0


def read_partitions(
    bootstrap_servers: str,
    topic: str,
    partitions: Iterable[int],
    kafka_options: Mapping[str, str],
    timeout_s: float = 120.0,
) -> dict[int, RecoveredPartition]:
    """Read changelog partitions from the start to their current high watermark.

    Later values of a key replace earlier ones, tombstones delete (what compaction would
    leave). Raises RecoveryError if a partition cannot be read to its end in ``timeout_s``.
    """
    wanted = sorted(set(partitions))
    result = {p: RecoveredPartition(p) for p in wanted}
    if not wanted:
        return result
    consumer = _reader(bootstrap_servers, topic, kafka_options)
    deadline = time.monotonic() + timeout_s
    try:
        remaining: dict[int, int] = {}
        for p in wanted:
            low, high = _watermarks(consumer, topic, p, deadline)
            result[p].end_offset = high
            if high > low:
                remaining[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        while remaining:
            if time.monotonic() > deadline:
                raise RecoveryError(
                    f"changelog {topic}: partitions {sorted(remaining)} not read to their end "
                    f"within {timeout_s:.0f} s"
                )
            messages = consumer.consume(num_messages=10_000, timeout=0.5)
            if not messages:
                # Compaction may have removed the last offsets (old tombstones): the position,
                # not the last message seen, says whether a partition is read to its end.
                positions = consumer.position([TopicPartition(topic, p) for p in remaining])
                for tp in positions:
                    if tp.offset >= remaining[tp.partition]:
                        del remaining[tp.partition]
            for message in messages:
                error = message.error()
                if error is not None:
                    raise RecoveryError(f"changelog {topic}: {error.str()}")
                p = message.partition()
                if p not in remaining:
                    continue
                recovered = result[p]
                key, value = message.key(), message.value()
                if key is not None:
                    recovered.bytes_read += len(key) + (len(value) if value else 0)
                    if value is None:
                        recovered.entries.pop(key, None)
                    else:
                        recovered.entries[key] = value
                if message.offset() + 1 >= remaining[p]:
                    del remaining[p]
    finally:
        consumer.close()
    for recovered in result.values():
        cursor = recovered.entries.pop(cursor_key(recovered.partition), None)
        if cursor is not None:
            try:
                recovered.applied_offset = unpack_cursor(cursor)
            except StateCodecError as exc:
                log.error(
                    "partition %d: unreadable cursor (%s); resuming from the group offset",
                    recovered.partition,
                    exc,
                )
    return result


def changelog_end_offsets(
    bootstrap_servers: str,
    topic: str,
    partitions: Iterable[int],
    kafka_options: Mapping[str, str],
    timeout_s: float = 30.0,
) -> dict[int, int]:
    """High watermarks of changelog partitions (to tell whether state held in memory is
    still the latest)."""
    consumer = _reader(bootstrap_servers, topic, kafka_options)
    deadline = time.monotonic() + timeout_s
    try:
        return {p: _watermarks(consumer, topic, p, deadline)[1] for p in partitions}
    finally:
        consumer.close()


def _reader(bootstrap_servers: str, topic: str, kafka_options: Mapping[str, str]) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"{topic}-reader",  # never joins: partitions are assigned directly
            "enable.auto.commit": False,
            "fetch.max.bytes": 64_000_000,
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES + 100_000,
            "log_level": 3,
            **kafka_options,
        }
    )


def _watermarks(consumer: Consumer, topic: str, partition: int, deadline: float) -> tuple[int, int]:
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=5.0, cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RecoveryError(
                    f"changelog {topic}[{partition}]: no watermarks: {exc}"
                ) from exc
            time.sleep(0.5)
