"""The worker's state topic on the real broker: written by KafkaOutputs, read back to its end."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from mlwatcher.stream_app.changelog import (
    changelog_end_offsets,
    ensure_changelog_topic,
    read_partitions,
)
from mlwatcher.stream_app.outputs import KafkaOutputs
from mlwatcher.stream_app.state_codec import cursor_key, pack_cursor


def _outputs(bootstrap: str, changelog: str) -> KafkaOutputs:
    return KafkaOutputs(
        bootstrap,
        changelog_topic=changelog,
        metrics_topic="unused-metrics",
        dead_letter_topic="unused-dead",
        predictions_topic="unused-predictions",
    )


def test_state_written_is_read_back_compacted_with_its_cursor(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    changelog = topic_factory(partitions=3, base="changelog")
    outputs = _outputs(kafka_bootstrap, changelog)
    for i in range(200):
        outputs.put_state(1, f"key-{i % 7}".encode(), f"value-{i}".encode())
    outputs.put_state(1, b"key-3", None)  # tombstone
    outputs.put_state(1, cursor_key(1), pack_cursor(41))
    outputs.put_state(2, b"big", b"x" * 3_000_000)  # larger than Kafka's 1 MB default
    outputs.flush()
    assert outputs.last_state_offset == {1: 201, 2: 0}

    recovered = read_partitions(kafka_bootstrap, changelog, [0, 1, 2], {})
    assert recovered[0].entries == {} and recovered[0].applied_offset is None
    assert recovered[0].end_offset == 0
    expected = {f"key-{i % 7}".encode(): f"value-{i}".encode() for i in range(200)}
    del expected[b"key-3"]
    assert recovered[1].entries == expected
    assert recovered[1].applied_offset == 41
    assert recovered[1].end_offset == 202
    assert recovered[2].entries == {b"big": b"x" * 3_000_000}
    assert changelog_end_offsets(kafka_bootstrap, changelog, [0, 1, 2], {}) == {0: 0, 1: 202, 2: 1}
    outputs.close()


def test_state_topic_is_created_compacted_and_a_mismatch_is_refused(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    name = f"state-{uuid.uuid4().hex[:8]}"
    ensure_changelog_topic(kafka_bootstrap, name, 4, {})
    try:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        [future] = admin.describe_configs([ConfigResource("topic", name)]).values()
        configs = future.result(timeout=30)
        assert configs["cleanup.policy"].value == "compact"
        ensure_changelog_topic(kafka_bootstrap, name, 4, {})  # idempotent
        with pytest.raises(RuntimeError, match="has 4 partitions but the predictions topic has 6"):
            ensure_changelog_topic(kafka_bootstrap, name, 6, {})
    finally:
        from mlwatcher.kafka_admin import delete_topics

        delete_topics(kafka_bootstrap, [name])
