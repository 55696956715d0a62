"""Predictions with ids, then their labels, on a real multi-partition topic: every label batch
lands on its agent's partition, after the agent's predictions, and carries the right hashes."""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from mlwatcher.prediction_ids import hash_prediction_ids
from mlwatcher.producer import MonitoringAgent
from mlwatcher.schemas import LabelBatch, PredictionBatch, load_schema
from tests.helpers import read_topic

N_CLASSES = 4


def test_labels_follow_their_predictions_on_the_same_partition(
    kafka_bootstrap: str, topic_factory
) -> None:
    topic = topic_factory(partitions=4)
    rng = np.random.default_rng(11)
    agent_ids = [f"model-{k}" for k in range(6)]
    sent_ids: dict[str, list] = {}
    sent_labels: dict[str, tuple[list, np.ndarray]] = {}
    messages_sent = 0
    for k, agent_id in enumerate(agent_ids):
        # model-0 sends its labels in small messages (several per collect_labels call)
        limit = 4096 + 240 if k == 0 else 900_000
        with MonitoringAgent(
            n_classes=N_CLASSES,
            agent_id=agent_id,
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            max_message_bytes=limit,
        ) as predictor:
            ids: list = [f"{agent_id}/req-{i}" for i in range(60)] + list(range(1000, 1040))
            for part in (ids[:60], ids[60:]):
                proba = rng.dirichlet(np.ones(N_CLASSES), size=len(part))
                predictor.collect_data(proba, prediction_ids=part)
            chosen = sorted(rng.choice(len(ids), size=70, replace=False))
            labelled = [ids[i] for i in chosen]
            labels = rng.integers(0, N_CLASSES, size=len(labelled))
            sent_ids[agent_id], sent_labels[agent_id] = ids, (labelled, labels)
            if k % 2 == 0:  # the model process itself sends the labels, right after
                predictor.collect_labels(labelled[:30], labels[:30])
                predictor.collect_labels(labelled[30:], np.eye(N_CLASSES, dtype=int)[labels[30:]])
            assert predictor.flush(30) == 0
            messages_sent += predictor.stats()["messages_sent"]
        if k % 2 == 1:  # a separate label service with the same agent_id, after delivery
            with MonitoringAgent(
                n_classes=N_CLASSES,
                agent_id=agent_id,
                bootstrap_servers=kafka_bootstrap,
                topic=topic,
            ) as label_service:
                label_service.collect_labels(labelled, labels)
                assert label_service.flush(30) == 0
                stats = label_service.stats()
                assert stats["labels_accepted"] == 70 and stats["messages_delivered"] == 1
                messages_sent += stats["messages_sent"]

    messages = read_topic(kafka_bootstrap, topic, messages_sent, timeout=60, linger=1.0)
    assert len(messages) == messages_sent
    label_fingerprint = load_schema("label_batch").fingerprint
    by_agent: dict[bytes, list] = defaultdict(list)
    for message in messages:
        by_agent[message.key()].append(message)

    partitions = set()
    for agent_id in agent_ids:
        agent_messages = sorted(by_agent[agent_id.encode()], key=lambda m: m.offset())
        assert {m.partition() for m in agent_messages} == {agent_messages[0].partition()}
        # librdkafka's default partitioner, consistent_random: CRC32 of the key (docs say so)
        assert agent_messages[0].partition() == zlib.crc32(agent_id.encode()) % 4
        partitions.add(agent_messages[0].partition())
        is_label = [m.value()[2:10] == label_fingerprint for m in agent_messages]
        # every prediction batch first, then every label batch, in offset order
        assert is_label == sorted(is_label), agent_id
        split = is_label.index(True)
        predictions = [PredictionBatch.decode(m.value()) for m in agent_messages[:split]]
        label_batches = [LabelBatch.decode(m.value()) for m in agent_messages[split:]]
        if agent_id == "model-0":
            assert len(label_batches) > 2
            assert max(len(m.value()) for m in agent_messages) <= 4096 + 240

        prediction_hashes = np.concatenate([b.prediction_ids for b in predictions])
        np.testing.assert_array_equal(prediction_hashes, hash_prediction_ids(sent_ids[agent_id]))
        labelled, labels = sent_labels[agent_id]
        label_hashes = np.concatenate([b.prediction_ids for b in label_batches])
        np.testing.assert_array_equal(label_hashes, hash_prediction_ids(labelled))
        np.testing.assert_array_equal(np.concatenate([b.labels for b in label_batches]), labels)
        assert np.isin(label_hashes, prediction_hashes).all()
        assert all(b.agent_id == agent_id and b.n_classes == N_CLASSES for b in label_batches)
    assert len(partitions) > 1  # the agents really are spread over several partitions


def test_batches_with_ids_are_split_under_the_message_limit(
    kafka_bootstrap: str, topic_factory
) -> None:
    # 12 bytes per row without ids, 20 with: 16 000 rows fit one 200 kB message only without.
    topic = topic_factory(partitions=1)
    rows, limit = 16_000, 200_000
    ids = [f"r{i}" for i in range(rows)]
    with MonitoringAgent(
        n_classes=2,
        agent_id="wide",
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        max_message_bytes=limit,
    ) as agent:
        agent.collect_data(np.full((rows, 2), 0.5), prediction_ids=ids)
        agent.collect_labels(ids, np.ones(rows, dtype=int))
        assert agent.flush(30) == 0
        sent = agent.stats()["messages_sent"]
    messages = read_topic(kafka_bootstrap, topic, sent, timeout=60)
    assert len(messages) == sent >= 3
    assert max(len(m.value()) for m in messages) <= limit
    label_fingerprint = load_schema("label_batch").fingerprint
    predictions = [
        PredictionBatch.decode(m.value()) for m in messages if m.value()[2:10] != label_fingerprint
    ]
    assert len(predictions) >= 2
    np.testing.assert_array_equal(
        np.concatenate([b.prediction_ids for b in predictions]), hash_prediction_ids(ids)
    )
