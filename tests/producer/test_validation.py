"""Each bad input to collect_data gets its specific error, and nothing is queued."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlwatcher.producer import InvalidBatchError, MonitoringAgent

# Nothing listens here: validation must not need a broker, and refused batches are never queued.
UNREACHABLE = "127.0.0.1:9"


@pytest.fixture
def agent() -> MonitoringAgent:
    agent = MonitoringAgent(
        frequency=1,
        max_buffer_size=100,
        n_classes=3,
        agent_id="validation",
        bootstrap_servers=UNREACHABLE,
    )
    yield agent
    agent.close(timeout=0)


def probabilities(n: int = 4, k: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.random((n, k))
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("proba", "features", "labels", "argument", "fragment"),
    [
        (np.full(3, 1 / 3), None, None, "predict_proba_matrix", "2-D"),
        (np.full((2, 2, 3), 1 / 3), None, None, "predict_proba_matrix", "2-D"),
        (probabilities(k=4), None, None, "predict_proba_matrix", "expected n_classes=3"),
        (np.empty((0, 3)), None, None, "predict_proba_matrix", "empty"),
        (np.array([[np.nan, 0.5, 0.5]]), None, None, "predict_proba_matrix", "NaN/inf"),
        (np.array([[np.inf, 0.0, 0.0]]), None, None, "predict_proba_matrix", "NaN/inf"),
        (np.array([[1.2, -0.2, 0.0]]), None, None, "predict_proba_matrix", "[0, 1]"),
        (np.array([[0.2, 0.2, 0.2]]), None, None, "predict_proba_matrix", "sum to 1"),
        (np.array([["a", "b", "c"]]), None, None, "predict_proba_matrix", "numeric"),
        (probabilities(), np.ones((3, 2)), None, "input_matrix", "4 rows" if False else "3 rows"),
        (probabilities(), np.array([["x"]] * 4), None, "input_matrix", "numeric"),
        (probabilities(), np.ones(4), None, "input_matrix", "2-D"),
        (probabilities(), None, np.array([0, 1, 3, 0]), "label_matrix", "[0, 2]"),
        (probabilities(), None, np.array([0, 1, -2, 0]), "label_matrix", "[0, 2]"),
        (probabilities(), None, np.array([0, 1, 2]), "label_matrix", "3 rows"),
        (probabilities(), None, np.ones((4, 2)), "label_matrix", "one-hot"),
        (probabilities(), None, np.ones((4, 3)), "label_matrix", "exactly one 1"),
        (probabilities(), None, np.array([0.5, 1, 2, 0]), "label_matrix", "whole numbers"),
        (probabilities(), None, np.array(["a", "b", "c", "d"]), "label_matrix", "integer"),
    ],
)
def test_bad_input_is_refused_with_a_specific_error(
    agent: MonitoringAgent, proba, features, labels, argument: str, fragment: str
) -> None:
    with pytest.raises(InvalidBatchError) as caught:
        agent.collect_data(proba, features, labels)
    assert caught.value.argument == argument
    assert str(caught.value).startswith(argument + ":")
    assert fragment in str(caught.value)
    stats = agent.stats()
    assert stats["batches_rejected"] == 1
    assert stats["messages_sent"] == 0 and stats["queued"] == 0


def test_threshold_outside_unit_interval_is_refused(agent: MonitoringAgent) -> None:
    with pytest.raises(InvalidBatchError, match="threshold: must be a number in"):
        agent.collect_data(probabilities(), threshold=1.5)


def test_feature_count_may_not_change_between_batches(agent: MonitoringAgent) -> None:
    agent.collect_data(probabilities(), np.zeros((4, 5)))
    with pytest.raises(InvalidBatchError, match="has 6 columns, earlier batches"):
        agent.collect_data(probabilities(), np.zeros((4, 6)))
    assert agent.stats()["messages_sent"] == 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_classes": 3, "frequency": 0}, "frequency"),
        ({"n_classes": 3, "max_buffer_size": 0}, "max_buffer_size"),
        ({"n_classes": 3, "agent_id": ""}, "agent_id"),
        ({"n_classes": 3, "class_names": ["a"]}, "class_names"),
    ],
)
def test_bad_agent_settings_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MonitoringAgent(bootstrap_servers=UNREACHABLE, **kwargs)


def test_accepted_forms(agent: MonitoringAgent) -> None:
    proba = probabilities()
    agent.collect_data(proba.tolist())  # nested lists
    agent.collect_data(np.eye(3, dtype=int)[[0, 1, 2, 0]])  # integer 0/1 probabilities
    agent.collect_data(proba, label_matrix=np.array([[0], [1], [2], [0]]))  # (n, 1)
    agent.collect_data(proba, label_matrix=np.eye(3)[[2, 1, 0, 0]])  # one-hot
    agent.collect_data(proba, label_matrix=[0, -1, 2, -1])  # -1: row without label
    frame = pd.DataFrame({"age": [1.0, 2, 3, 4], "colour": pd.Categorical(list("rgbr"))})
    agent.collect_data(proba, frame, [0, 1, 2, 2])
    assert agent.feature_names == ["age", "colour"]
    stats = agent.stats()
    assert stats["batches_accepted"] == 6 and stats["batches_rejected"] == 0


def test_collect_data_returns_promptly_without_a_broker(agent: MonitoringAgent) -> None:
    import time

    start = time.perf_counter()
    for _ in range(50):
        agent.collect_data(probabilities(1000))
    elapsed = time.perf_counter() - start
    # 50 batches queued locally with nothing listening: no network wait may leak into the call.
    assert elapsed < 2.0, elapsed
    assert agent.stats()["queued"] == 50
