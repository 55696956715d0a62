"""collect_data → real Kafka broker → consumed back and decoded bit-exactly."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from mlwatcher.brokers import ApacheKafkaBroker
from mlwatcher.brokers._process import free_port
from mlwatcher.kafka_admin import create_topics
from mlwatcher.producer import MonitoringAgent
from mlwatcher.schemas import PredictionBatch
from tests.helpers import read_topic


def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list:
    messages = read_topic(bootstrap, topic, count, timeout=timeout)
    assert len(messages) == count, f"got {len(messages)} of {count} messages in {timeout}s"
    return messages


def test_round_trip_is_bit_exact(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory(partitions=3)
    rng = np.random.default_rng(7)
    raw = rng.random((50, 4))
    proba = raw / raw.sum(axis=1, keepdims=True)
    features = pd.DataFrame(
        {"height": rng.normal(size=50), "colour": pd.Categorical(rng.choice(["r", "g"], 50))}
    )
    labels = rng.integers(0, 4, 50)
    fake_now = 1_764_000_123.456
    with MonitoringAgent(
        frequency=2,
        max_buffer_size=30,
        n_classes=4,
        agent_id="roundtrip",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        model_version="v3",
        class_names=["a", "b", "c", "d"],
        clock=lambda: fake_now,
    ) as agent:
        agent.collect_data(proba, features, labels, threshold=0.3)
        assert agent.flush(30) == 0
        stats = agent.stats()
    assert stats["messages_delivered"] == 1 and stats["delivery_failures"] == 0

    (message,) = consume(kafka_bootstrap, topic, 1)
    assert message.key() == b"roundtrip"
    batch = PredictionBatch.decode(message.value())
    np.testing.assert_array_equal(batch.probabilities, proba.astype(np.float32))
    np.testing.assert_array_equal(batch.labels, labels)
    expected_features = np.column_stack(
        [features["height"].to_numpy(), features["colour"].cat.codes.to_numpy()]
    )
    np.testing.assert_array_equal(batch.features, expected_features)
    assert batch.feature_names == ["height", "colour"]
    assert batch.categorical_features == [1]
    assert batch.class_names == ["a", "b", "c", "d"]
    assert batch.threshold == 0.3
    assert batch.event_time_ms == int(fake_now * 1000)
    assert batch.window_ms == 120_000 and batch.max_buffer_size == 30
    assert batch.model_version == "v3" and batch.agent_id == "roundtrip"


def test_large_batches_are_split_under_the_message_limit(
    kafka_bootstrap: str, topic_factory
) -> None:
    topic = topic_factory(partitions=1)
    rows = 3000
    proba = np.full((rows, 10), 0.1)
    features = np.arange(rows * 50, dtype=np.float64).reshape(rows, 50)
    with MonitoringAgent(
        n_classes=10,
        agent_id="big",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        max_message_bytes=200_000,
    ) as agent:
        agent.collect_data(proba, features)
        assert agent.flush(30) == 0
        sent = agent.stats()["messages_sent"]
    assert sent > 1
    batches = [PredictionBatch.decode(m.value()) for m in consume(kafka_bootstrap, topic, sent)]
    assert all(len(m) <= 200_000 for m in (b.encode() for b in batches))
    assert sum(b.n_rows for b in batches) == rows
    np.testing.assert_array_equal(np.vstack([b.features for b in batches]), features)
    assert len({b.batch_id for b in batches}) == sent


def test_batches_wait_for_a_broker_that_starts_late(tmp_path) -> None:
    port = free_port()
    broker = ApacheKafkaBroker(port=port, log_dir=tmp_path / "kafka")
    topic = "late-broker"
    agent = MonitoringAgent(
        n_classes=2,
        agent_id="patient",
        bootstrap_servers=broker.bootstrap_servers,
        topic=topic,
    )
    try:
        started = time.perf_counter()
        for _ in range(5):
            agent.collect_data(np.array([[0.2, 0.8], [0.9, 0.1]]))
        assert time.perf_counter() - started < 0.5  # nothing waited for the network
        assert agent.stats()["queued"] == 5
        with broker:
            create_topics(broker.bootstrap_servers, {topic: 1})
            assert agent.flush(120) == 0
            assert agent.stats()["messages_delivered"] == 5
            messages = consume(broker.bootstrap_servers, topic, 5)
            assert {PredictionBatch.decode(m.value()).n_rows for m in messages} == {2}
    finally:
        agent.close(timeout=0)
