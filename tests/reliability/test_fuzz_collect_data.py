"""Fuzzing collect_data: every input is accepted or refused with a specific error.

Never another exception, never a hang, and nothing queued for a refused batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlwatcher.producer import InvalidBatchError, MonitoringAgent

N_CLASSES = 3
ARGUMENTS = {"predict_proba_matrix", "input_matrix", "label_matrix", "threshold"}

dtypes = st.sampled_from(
    [
        np.float64,
        np.float32,
        np.float16,
        np.int64,
        np.int8,
        np.uint8,
        np.bool_,
        np.complex64,
        np.object_,
        np.str_,
    ]
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0.0, 1.0, 0.5, 1 / 3, -0.0, 1e300, -1e-300]),
)


@st.composite
def arrays(draw: st.DrawFn, max_side: int = 6) -> object:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    dtype = draw(dtypes)
    if dtype in (np.object_, np.str_):
        return np.full(shape, draw(st.sampled_from(["a", None, 1, 0.5])), dtype=dtype)
    raw = draw(hnp.arrays(np.float64, shape, elements=values))
    with np.errstate(all="ignore"):
        return raw.astype(dtype)


@st.composite
def probability_like(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["valid", "array", "list", "frame", "ragged", "scalar"]))
    rows = draw(st.integers(0, 5))
    if kind == "valid":
        raw = draw(hnp.arrays(np.float64, (max(rows, 1), N_CLASSES), elements=st.floats(0.01, 1.0)))
        return raw / raw.sum(axis=1, keepdims=True)
    if kind == "array":
        return draw(arrays())
    if kind == "list":
        return draw(st.lists(st.lists(values, max_size=4), max_size=4))
    if kind == "frame":
        data = draw(arrays())
        return pd.DataFrame(np.atleast_2d(data)) if np.ndim(data) <= 2 else data
    if kind == "ragged":
        return [[0.5, 0.5], [1.0]]
    return draw(st.one_of(st.none(), values, st.text(max_size=3)))


@st.composite
def features_like(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["none", "array", "frame_odd_columns", "frame_mixed"]))
    if kind == "none":
        return None
    if kind == "array":
        return draw(arrays())
    rows = draw(st.integers(0, 5))
    if kind == "frame_odd_columns":
        return pd.DataFrame({(1, "tuple"): np.arange(rows), None: np.ones(rows), 3.5: ["x"] * rows})
    return pd.DataFrame(
        {
            "a": np.arange(rows),
            "b": pd.Categorical(["u", "v", None, "u", "v"][:rows]),
            "c": [True, False, True, False, True][:rows],
        }
    )


@pytest.fixture(scope="module")
def agent() -> MonitoringAgent:
    agent = MonitoringAgent(
        n_classes=N_CLASSES,
        agent_id="fuzz",
        bootstrap_servers="127.0.0.1:9",
        queue_full_policy="drop",
    )
    yield agent
    agent.close(timeout=0)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    proba=probability_like(),
    features=features_like(),
    labels=st.one_of(st.none(), arrays(), st.lists(values, max_size=6)),
    threshold=st.one_of(st.none(), values, st.text(max_size=2)),
)
def test_any_input_is_accepted_or_refused_specifically(
    agent: MonitoringAgent, proba: object, features: object, labels: object, threshold: object
) -> None:
    # One agent learns its feature count from its first batch: fuzz a fresh layout each time.
    agent._n_features = None
    before = agent.stats()
    try:
        agent.collect_data(proba, features, labels, threshold=threshold)
    except InvalidBatchError as error:
        assert error.argument in ARGUMENTS
        assert str(error).startswith(error.argument + ": ")
        after = agent.stats()
        assert after["messages_sent"] == before["messages_sent"]
        assert after["batches_rejected"] == before["batches_rejected"] + 1
    else:
        after = agent.stats()
        assert after["batches_accepted"] == before["batches_accepted"] + 1
        assert after["messages_sent"] > before["messages_sent"]
