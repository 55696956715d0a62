"""The window update's compiled path (``kernels.count_batch`` and ``apply_batch``) against
its checked path (the validation contract, then ``ExactCounters.from_batch`` and
``choose_slots``, then ``apply``): the same delta and the same state, byte for byte, for
every input the compiled path takes, and the contract's verdict for every input it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlwatcher.metrics import kernels
from mlwatcher.metrics.inputs import MetricInputError
from mlwatcher.metrics.state import StateDelta, WindowState

pytestmark = pytest.mark.skipif(not kernels.ENABLED, reason="the compiled path needs numba")

Batch = tuple[Any, Any, Any]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _batches(n_classes: int, n_features: int, labels: str, features: str, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    for rows in (70, 50, 200, 1, 300):  # fill, fill, fill then replace, replace...
        probs = rng.dirichlet(np.ones(n_classes) * 0.5, size=rows)
        label_vec = {
            "none": None,
            "all": rng.integers(0, n_classes, rows),
            "some": np.where(rng.random(rows) < 0.4, rng.integers(0, n_classes, rows), -1),
            "int32 read-only": _read_only(rng.integers(-1, n_classes, rows).astype(np.int32)),
        }[labels]
        feats: np.ndarray | None = None
        if features != "none":
            feats = rng.normal(size=(rows, n_features))
            feats[:, 0] = rng.integers(0, 4, rows)  # the categorical column
            if features == "missing values":
                feats[rng.random((rows, n_features)) < 0.05] = np.nan
                feats[rng.random((rows, n_features)) < 0.02] = -np.inf
            if features == "float32":
                feats = feats.astype(np.float32)
            if features == "read-only":
                feats = _read_only(feats)
        out.append((probs, label_vec, feats))
    return out


def _states(n_classes: int, n_features: int) -> tuple[WindowState, WindowState]:
    def make() -> WindowState:
        return WindowState(n_classes, 256, n_features, categorical_features=(0,), seed=3)

    return make(), make()


def _checked_update(
    state: WindowState, probs: Any, labels: Any, features: Any, rng: np.random.Generator
) -> StateDelta:
    delta = state._checked_delta(probs, labels, features, rng)
    state.apply(delta)
    return delta


def _feed(
    state: WindowState, path: Callable[..., StateDelta | None], batches: list[Batch]
) -> list[bytes]:
    deltas = []
    for probs, labels, features in batches:
        delta = path(state, probs, labels, features, state.rng)
        assert delta is not None
        deltas.append(delta.to_bytes())
    return deltas


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("labels", ["none", "all", "some", "int32 read-only"])
@pytest.mark.parametrize("features", ["none", "float64", "missing values", "float32", "read-only"])
def test_the_compiled_update_gives_the_checked_delta(
    n_classes: int, labels: str, features: str
) -> None:
    compiled, checked = _states(n_classes, 5)
    compiled.threshold = checked.threshold = 0.3  # binary: p[1] > 0.3, not the argmax
    batches = _batches(n_classes, 5, labels, features, seed=n_classes)
    fast = _feed(compiled, WindowState._compiled_update, batches)
    slow = _feed(checked, _checked_update, batches)
    assert fast == slow  # every delta, counters, slots and sampled rows, the same bytes
    assert compiled.to_bytes() == checked.to_bytes()
    replayed = WindowState(n_classes, 256, 5, categorical_features=(0,), threshold=0.3)
    for delta in fast:
        replayed.apply(StateDelta.from_bytes(delta))
    replayed.rng.bit_generator.state = compiled.rng.bit_generator.state  # replays draw nothing
    assert replayed.to_bytes() == compiled.to_bytes()
    assert compiled.rows_seen == 621 and compiled.rows_sampled == 256
    if features == "missing values":
        assert compiled.counters.nan_counts.sum() > 0 and compiled.counters.inf_counts.sum() > 0
    if features != "none":
        finite = sum(int(np.isfinite(feats[:, 0]).sum()) for _, _, feats in batches)
        assert compiled.counters.cat_count.sum() == finite > 0


def test_update_takes_the_compiled_path_for_plain_arrays_and_the_checked_one_otherwise() -> None:
    rng = np.random.default_rng(1)
    probs, labels, feats = (
        rng.dirichlet(np.ones(3), 40),
        rng.integers(0, 3, 40),
        rng.random((40, 2)),
    )
    state = WindowState(3, 100, 2, seed=0)
    assert state._compiled_update(probs, labels, feats, state.rng) is not None
    assert state._compiled_update(_read_only(probs.astype(np.float32)), None, None, state.rng)
    assert state._compiled_update(np.asfortranarray(probs), labels, feats, state.rng)
    for other in (
        (probs.tolist(), labels, feats),  # lists: the contract reads them
        (probs, labels.astype(float), feats),  # float labels: must be whole numbers
        (probs, np.eye(3, dtype=int)[labels], feats),  # one-hot labels
        (probs, labels, feats.astype(int)),  # integer features
    ):
        assert state._compiled_update(*other, state.rng) is None
        twin = WindowState(3, 100, 2, seed=0)
        state_bytes = WindowState(3, 100, 2, seed=0)
        state_bytes.update(*other)  # accepted by the contract all the same
        twin.apply(twin._checked_delta(*other, twin.rng))
        assert state_bytes.to_bytes() == twin.to_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        "nan probability",
        "negative probability",
        "row sum",
        "label too large",
        "label below -1",
        "wrong class count",
        "wrong feature count",
        "features on a state without features",
    ],
)
def test_a_refused_batch_gets_the_contracts_error_and_changes_nothing(damage: str) -> None:
    rng = np.random.default_rng(2)
    probs, labels, feats = (
        rng.dirichlet(np.ones(4), 60),
        rng.integers(0, 4, 60),
        rng.random((60, 3)),
    )
    n_features = 0 if damage == "features on a state without features" else 3
    if damage == "nan probability":
        probs[5, 1] = np.nan
    elif damage == "negative probability":
        probs[7, 0] = -0.01
    elif damage == "row sum":
        probs[9] *= 1.01
    elif damage == "label too large":
        labels[3] = 4
    elif damage == "label below -1":
        labels[3] = -2
    elif damage == "wrong class count":
        probs = probs[:, :3] / probs[:, :3].sum(axis=1, keepdims=True)
    elif damage == "wrong feature count":
        feats = feats[:, :2]
    state = WindowState(4, 50, n_features, seed=5)
    state.update(rng.dirichlet(np.ones(4), 80), rng.integers(0, 4, 80))  # past the fill
    before = state.to_bytes()
    with pytest.raises(MetricInputError) as compiled_error:
        state.update(probs, labels, feats)
    assert state.to_bytes() == before  # counters, reservoir and the generator's state
    with pytest.raises(MetricInputError) as checked_error:
        state._checked_delta(probs, labels, feats, state.rng)
    assert str(compiled_error.value) == str(checked_error.value)


def test_a_sum_the_fast_check_doubts_is_decided_by_the_contract() -> None:
    # The compiled check's tolerance is a hair stricter than the contract's: a row summing
    # to 1 + 1e-3 - 5e-10 is refused by it and accepted by the contract.
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), 30)
    probs[0] *= 1 + 1e-3 - 5e-10
    state, twin = WindowState(3, 10, seed=1), WindowState(3, 10, seed=1)
    assert state._compiled_update(probs, None, None, state.rng) is None
    state.update(probs)
    twin.apply(twin._checked_delta(probs, None, None, twin.rng))
    assert state.to_bytes() == twin.to_bytes()
