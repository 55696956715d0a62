"""collect_data(prediction_ids=...) and collect_labels: each bad input gets its specific error,
is counted, and nothing is queued for it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlwatcher.producer import InvalidBatchError, MonitoringAgent

UNREACHABLE = "127.0.0.1:9"  # validation needs no broker; accepted batches wait in the queue


@pytest.fixture
def agent() -> MonitoringAgent:
    agent = MonitoringAgent(n_classes=3, agent_id="labels", bootstrap_servers=UNREACHABLE)
    yield agent
    agent.close(timeout=0)


def probabilities(n: int = 4) -> np.ndarray:
    raw = np.random.default_rng(0).random((n, 3))
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        (["a", "b", "c"], "expected 4 ids (one per row of predict_proba_matrix), got 3"),
        (["a", "b", "c", "d", "e"], "expected 4 ids"),
        (["a", "b", "c", "a"], "duplicate id 'a' at positions 0 and 3"),
        (["a", "b", 2.0, "d"], "position 2: expected a str or an integer, got float"),
        (["a", "", "c", "d"], "position 1: an id may not be the empty string"),
        ("abcd", "expected a sequence of ids"),
    ],
)
def test_collect_data_refuses_bad_prediction_ids(
    agent: MonitoringAgent, ids: object, fragment: str
) -> None:
    with pytest.raises(InvalidBatchError) as caught:
        agent.collect_data(probabilities(), prediction_ids=ids)
    assert caught.value.argument == "prediction_ids"
    assert fragment in str(caught.value)
    stats = agent.stats()
    assert stats["batches_rejected"] == 1 and stats["messages_sent"] == 0


def test_the_2019_call_and_ids_side_by_side(agent: MonitoringAgent) -> None:
    proba = probabilities()
    agent.collect_data(proba, None, [0, 1, 2, -1])  # positional, as in 2019
    agent.collect_data(proba, None, None, 0.4, prediction_ids=[10, 11, 12, 13])
    agent.collect_data(proba, prediction_ids=pd.Series(["w", "x", "y", "z"]))
    stats = agent.stats()
    assert stats["batches_accepted"] == 3 and stats["messages_sent"] == 3


@pytest.mark.parametrize(
    ("ids", "labels", "argument", "fragment"),
    [
        (None, [0], "prediction_ids", "is required, got None"),
        ([], [], "prediction_ids", "is empty"),
        (np.array([], dtype=np.int64), np.array([]), "prediction_ids", "is empty"),
        (["a", "a"], [0, 1], "prediction_ids", "duplicate id 'a' at positions 0 and 1"),
        (["a", None], [0, 1], "prediction_ids", "position 1: expected a str or an integer"),
        ([1.5], [0], "prediction_ids", "position 0: expected a str or an integer, got float"),
        (["a"], None, "label_matrix", "is required, got None"),
        (["a", "b"], [0, -1], "label_matrix", "row 1 is -1 (no label)"),
        (["a", "b"], [2, None], "label_matrix", "row 1 has no label (missing value)"),
        (["a", "b", "c"], [0.0, 1.0, np.nan], "label_matrix", "row 2 has no label"),
        (["a", "b"], pd.Series([1, pd.NA], dtype="Int64"), "label_matrix", "row 1 has no label"),
        (["a", "b"], np.array([[0, 1, 0], [np.nan, 0, 1]]), "label_matrix", "row 1 has no label"),
        (["a", "b"], [0, 3], "label_matrix", "class indices must be in [0, 2], found"),
        (["a", "b"], [0], "label_matrix", "expected 2 rows"),
        (["a", "b"], [0, 1, 2], "label_matrix", "expected 2 rows"),
        (["a", "b"], np.ones((2, 2)), "label_matrix", "one-hot (2, 3)"),
        (["a", "b"], np.ones((2, 3)), "label_matrix", "exactly one 1"),
        (["a", "b"], [0.5, 1], "label_matrix", "whole numbers"),
        (["a", "b"], ["x", "y"], "label_matrix", "integer class indices"),
    ],
)
def test_collect_labels_refuses_bad_input(
    agent: MonitoringAgent, ids: object, labels: object, argument: str, fragment: str
) -> None:
    with pytest.raises(InvalidBatchError) as caught:
        agent.collect_labels(ids, labels)
    assert caught.value.argument == argument
    assert str(caught.value).startswith(f"{argument}: ")
    assert fragment in str(caught.value)
    assert "-1: row without label" not in str(caught.value)
    stats = agent.stats()
    assert stats["label_batches_rejected"] == 1
    assert stats["label_batches_accepted"] == 0 and stats["messages_sent"] == 0


def test_collect_labels_accepts_collect_datas_label_formats(agent: MonitoringAgent) -> None:
    agent.collect_labels(["a", "b", "c"], [0, 2, 1])
    agent.collect_labels([1, 2, 3], np.array([[0], [2], [1]]))
    agent.collect_labels(np.array([4, 5]), np.eye(3, dtype=int)[[2, 0]])  # one-hot
    agent.collect_labels(pd.Series(["x"]), pd.Series([1.0]))  # whole-number floats
    stats = agent.stats()
    assert stats["label_batches_accepted"] == 4 and stats["labels_accepted"] == 9
    assert stats["label_batches_rejected"] == 0 and stats["messages_sent"] == 4


def test_large_label_batches_are_split_under_the_message_limit() -> None:
    agent = MonitoringAgent(
        n_classes=3, bootstrap_servers=UNREACHABLE, max_message_bytes=4096 + 1200
    )
    try:
        agent.collect_labels(np.arange(1000), np.zeros(1000, dtype=int))
        assert agent.stats()["messages_sent"] == 10  # 1200 bytes at 12 bytes per label
    finally:
        agent.close(timeout=0)


def test_a_full_local_queue_drops_label_batches_and_counts_them() -> None:
    agent = MonitoringAgent(
        n_classes=3,
        bootstrap_servers=UNREACHABLE,
        kafka_config={"queue.buffering.max.messages": 2},
    )
    try:
        for start in range(0, 50, 10):
            agent.collect_labels(range(start, start + 10), np.zeros(10, dtype=int))  # no raise
        stats = agent.stats()
        assert stats["messages_sent"] == 2 and stats["dropped_queue_full"] == 3
        assert stats["labels_dropped"] == 30 and stats["rows_dropped"] == 0
        assert stats["labels_accepted"] == 50
    finally:
        agent.close(timeout=0)
