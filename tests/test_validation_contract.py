"""One validation contract: the producer and the offline engine give the same verdict, with the
same message, on arbitrary inputs (they run the same code: mlwatcher/validation.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatcher.metrics import compute_metrics
from mlwatcher.producer import InvalidBatchError, MonitoringAgent

UNREACHABLE = "127.0.0.1:9"  # nothing listens: validation needs no broker
#: collect_data's argument -> compute_metrics's argument
ENGINE_NAME = {
    "predict_proba_matrix": "predict_proba",
    "label_matrix": "labels",
    "input_matrix": "features",
    "threshold": "threshold",
}


@st.composite
def probabilities(draw: st.DrawFn) -> tuple[Any, int]:
    """A probability matrix, valid or broken in one of the ways users break it; and n_classes."""
    rows = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6]))
    cols = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
    raw = np.array(
        draw(st.lists(st.floats(0.01, 10.0), min_size=rows * cols, max_size=rows * cols)),
        dtype=np.float64,
    ).reshape(rows, cols)
    proba: Any = raw / raw.sum(axis=1, keepdims=True) if rows else raw
    flaw = draw(
        st.sampled_from(
            ["none"] * 12
            + ["nan", "inf", "negative", "unnormalised", "1-D", "3-D", "strings", "float32",
               "int one-hot", "bool", "list", "ragged", "dataframe"]
        )
    )  # fmt: skip
    if flaw in ("nan", "inf", "negative") and proba.size:
        proba = proba.copy()
        proba[draw(st.integers(0, rows - 1)), 0] = {"nan": np.nan, "inf": np.inf}.get(flaw, -0.1)
    elif flaw == "unnormalised":
        proba = proba * draw(st.sampled_from([0.5, 0.999, 1.0005, 2.0]))
    elif flaw == "1-D":
        proba = proba.ravel()
    elif flaw == "3-D":
        proba = proba[None]
    elif flaw == "strings":
        proba = proba.astype(str)
    elif flaw == "float32":
        proba = proba.astype(np.float32)
    elif flaw in ("int one-hot", "bool") and rows:
        proba = np.eye(cols, dtype=int)[np.argmax(proba, axis=1)]
        proba = proba.astype(bool) if flaw == "bool" else proba
    elif flaw == "list":
        proba = proba.tolist()
    elif flaw == "ragged" and rows > 1 and cols > 1:
        proba = [list(proba[0]), list(proba[1][:-1])]
    elif flaw == "dataframe":
        proba = pd.DataFrame(proba)
    n_classes = cols if cols >= 2 else 2
    if draw(st.integers(0, 9)) == 0:
        n_classes += 1  # the agent expects another class count
    return proba, n_classes


@st.composite
def labels(draw: st.DrawFn, rows: int, n_classes: int) -> Any:
    kind = draw(
        st.sampled_from(
            ["none", "none", "vector", "vector", "vector", "column", "one-hot", "one-hot",
             "float", "strings", "series", "wrong length", "3-D"]
        )
    )  # fmt: skip
    if kind == "none":
        return None
    n = rows + (draw(st.sampled_from([-1, 1])) if kind == "wrong length" else 0)
    n = max(n, 0)
    values = np.array(draw(st.lists(st.integers(-1, n_classes - 1), min_size=n, max_size=n)))
    if n and draw(st.integers(0, 5)) == 0:
        values[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-2, n_classes]))
    if kind == "column":
        return values.reshape(-1, 1)
    if kind == "one-hot":
        one_hot = (values[:, None] == np.arange(n_classes)).astype(int)
        if n and draw(st.booleans()):
            one_hot[draw(st.integers(0, n - 1)), draw(st.integers(0, n_classes - 1))] = 1
        return one_hot
    if kind == "float":
        floats = values.astype(float)
        if n and draw(st.booleans()):
            floats[0] += draw(st.sampled_from([0.5, np.nan]))
        return floats
    if kind == "strings":
        return values.astype(str)
    if kind == "series":
        return pd.Series(values)
    if kind == "3-D":
        return values.reshape(1, 1, -1)
    return values


@st.composite
def features(draw: st.DrawFn, rows: int) -> Any:
    kind = draw(
        st.sampled_from(
            ["none", "none", "matrix", "matrix", "float32", "dataframe", "dataframe",
             "dataframe", "wrong rows", "1-D", "no columns", "strings"]
        )
    )  # fmt: skip
    if kind == "none":
        return None
    n = max(rows + (1 if kind == "wrong rows" else 0), 0)
    cols = 0 if kind == "no columns" else draw(st.integers(1, 3))
    values = np.array(
        draw(
            st.lists(
                st.one_of(st.floats(-5, 5), st.just(np.nan), st.just(np.inf)),
                min_size=n * cols,
                max_size=n * cols,
            )
        ),
        dtype=np.float64,
    ).reshape(n, cols)
    if kind == "float32":
        return values.astype(np.float32)
    if kind == "1-D":
        return values.ravel()
    if kind == "strings":
        return values.astype(str)
    if kind == "dataframe":
        frame = pd.DataFrame({f"f{j}": values[:, j] for j in range(cols)})
        extra = draw(st.sampled_from(["none", "category", "bool", "object", "int"]))
        if extra == "category":
            frame["colour"] = pd.Categorical(
                draw(st.lists(st.sampled_from(["r", "g", None]), min_size=n, max_size=n))
            )
        elif extra == "bool":
            frame["flag"] = np.arange(n) % 2 == 0
        elif extra == "object":
            frame["name"] = ["x"] * n
        elif extra == "int":
            frame["count"] = np.arange(n, dtype=np.int64)
        return frame
    return values


def _rows_of(proba: Any) -> int:
    try:
        return int(np.asarray(proba, dtype=object).shape[0]) if np.ndim(proba) >= 1 else 0
    except (ValueError, TypeError):
        return 2


def _verdict(call: Any) -> tuple[str, str] | None:
    try:
        call()
    except InvalidBatchError as refused:
        return refused.argument, refused.problem
    return None


@st.composite
def batches(draw: st.DrawFn) -> tuple[Any, Any, Any, float, int]:
    proba, n_classes = draw(probabilities())
    rows = _rows_of(proba)
    threshold = draw(st.sampled_from([0.5] * 6 + [0.0, 1.0, 0.3, 1.5, -0.1]))
    return proba, draw(features(rows)), draw(labels(rows, n_classes)), threshold, n_classes


@pytest.fixture(scope="module")
def agents() -> Any:
    made: list[MonitoringAgent] = []

    def agent(n_classes: int) -> MonitoringAgent:
        # A fresh agent per batch: an agent remembers its feature layout between batches,
        # which is the agent's contract, not the batch's.
        created = MonitoringAgent(
            n_classes=n_classes, agent_id="contract", bootstrap_servers=UNREACHABLE
        )
        made.append(created)
        return created

    yield agent
    for created in made:
        created.close(timeout=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_producer_and_engine_give_the_same_verdict(agents: Any, batch: tuple) -> None:
    proba, feats, labs, threshold, n_classes = batch
    producer = _verdict(
        lambda: agents(n_classes).collect_data(proba, feats, labs, threshold=threshold)
    )
    engine = _verdict(lambda: compute_metrics(proba, labs, feats, threshold=threshold))
    if producer is not None and producer[1].startswith(f"expected {n_classes} class columns"):
        # The one rule the engine cannot apply: it is not told how many classes to expect.
        assert np.shape(np.asarray(proba))[1] != n_classes
        return
    if producer is None or engine is None:
        assert producer == engine, (producer, engine)
        return
    argument, problem = producer
    assert (ENGINE_NAME[argument], problem) == engine


def test_both_refuse_a_multi_hot_label_with_the_same_message() -> None:
    proba = np.array([[0.7, 0.2, 0.1]])
    multi_hot = np.array([[1, 1, 0]])
    with MonitoringAgent(n_classes=3, bootstrap_servers=UNREACHABLE) as agent:
        with pytest.raises(InvalidBatchError) as by_producer:
            agent.collect_data(proba, label_matrix=multi_hot)
        agent.close(timeout=0)
    with pytest.raises(InvalidBatchError) as by_engine:
        compute_metrics(proba, multi_hot)
    assert by_producer.value.problem == by_engine.value.problem
    assert "exactly one 1" in by_engine.value.problem


def test_both_take_a_pandas_category_column_as_a_categorical_feature() -> None:
    proba = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    frame = pd.DataFrame({"age": [1.0, 2.0, 3.0], "colour": pd.Categorical(["r", "g", "r"])})
    points = compute_metrics(proba, features=frame)
    counts = {
        p.extra["value"]: p.value
        for p in points
        if p.what == "categorical_value_count" and p.feat_name == "colour"
    }
    assert counts == {"0": 1.0, "1": 2.0}  # codes: g=0, r=1
    with MonitoringAgent(n_classes=2, bootstrap_servers=UNREACHABLE) as agent:
        agent.collect_data(proba, frame)
        assert agent.feature_names == ["age", "colour"]
        agent.close(timeout=0)
