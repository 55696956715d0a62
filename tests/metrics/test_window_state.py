"""WindowState: reservoir uniformity, merge, serialisation and delta replay."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import random_batch, value
from scipy import stats as sps

from mlwatcher.metrics import MetricInputError, StateDelta, WindowState, compute_metrics


def _stream(n_rows: int, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose feature 0 is their stream index, so sampled rows can be identified."""
    rng = np.random.default_rng(1234)
    probs = rng.dirichlet(np.ones(n_classes), size=n_rows)
    labels = rng.integers(0, n_classes, n_rows)
    feats = np.column_stack([np.arange(n_rows, dtype=float), rng.normal(size=n_rows)])
    return probs, labels, feats


def _feed(state: WindowState, probs, labels, feats, batch: int) -> list[StateDelta]:
    return [
        state.update(probs[i : i + batch], labels[i : i + batch], feats[i : i + batch])
        for i in range(0, probs.shape[0], batch)
    ]


def _sampled_ids(state: WindowState) -> np.ndarray:
    return state.reservoir()[2][:, 0].astype(int)


def test_reservoir_is_uniform_over_many_seeded_runs() -> None:
    n_rows, capacity, runs = 60, 10, 3000
    probs, labels, feats = _stream(n_rows)
    hits = np.zeros(n_rows)
    for seed in range(runs):
        state = WindowState(3, capacity, n_features=2, seed=seed)
        _feed(state, probs, labels, feats, batch=7)
        ids = _sampled_ids(state)
        assert len(set(ids)) == capacity
        hits[ids] += 1
    result = sps.chisquare(hits)  # uniform expectation runs * capacity / n_rows
    assert result.pvalue > 1e-3, result


def test_reservoir_keeps_each_rows_values_together() -> None:
    probs, labels, feats = _stream(500)
    state = WindowState(3, 40, n_features=2, seed=9)
    _feed(state, probs, labels, feats, batch=33)
    res_probs, res_labels, res_feats = state.reservoir()
    ids = res_feats[:, 0].astype(int)
    np.testing.assert_array_equal(res_probs, probs[ids])
    np.testing.assert_array_equal(res_labels, labels[ids])
    np.testing.assert_array_equal(res_feats, feats[ids])


def test_merge_gives_exact_counts_and_a_uniform_sample_of_the_union() -> None:
    n_a, n_b, capacity, runs = 40, 20, 12, 3000
    probs, labels, feats = _stream(n_a + n_b)
    hits = np.zeros(n_a + n_b)
    for seed in range(runs):
        left = WindowState(3, capacity, n_features=2, seed=seed)
        right = WindowState(3, capacity, n_features=2, seed=seed + 10**6)
        _feed(left, probs[:n_a], labels[:n_a], feats[:n_a], batch=9)
        _feed(right, probs[n_a:], labels[n_a:], feats[n_a:], batch=9)
        merged = left.merge(right)
        hits[_sampled_ids(merged)] += 1
    assert merged.rows_seen == n_a + n_b
    assert merged.rows_sampled == capacity
    assert sps.chisquare(hits).pvalue > 1e-3
    whole = compute_metrics(probs, labels)
    for what in ("prediction_count", "label_count", "confusion_count"):
        got = sorted(p.value for p in merged.metrics() if p.what == what)
        assert got == sorted(p.value for p in whole if p.what == what)
    assert value(merged.metrics(), "log_loss") == pytest.approx(value(whole, "log_loss"))


def test_merge_of_small_states_keeps_every_row() -> None:
    probs, labels, feats = _stream(10)
    left, right = WindowState(3, 50, 2, seed=1), WindowState(3, 50, 2, seed=2)
    left.update(probs[:4], labels[:4], feats[:4])
    right.update(probs[4:], labels[4:], feats[4:])
    merged = left.merge(right)
    assert sorted(_sampled_ids(merged)) == list(range(10))


def test_to_bytes_round_trips_exactly_and_continues_identically() -> None:
    rng = np.random.default_rng(0)
    state = WindowState(4, 30, n_features=3, categorical_features=[2], seed=5)
    for _ in range(5):
        probs, labels, feats = random_batch(rng, 17, 4, 3)
        feats[:, 2] = rng.integers(0, 4, 17)
        feats[0, 1] = np.nan
        state.update(probs, labels, feats)
    data = state.to_bytes()
    copy = WindowState.from_bytes(data)
    assert copy.to_bytes() == data
    probs, labels, feats = random_batch(rng, 25, 4, 3)
    state.update(probs, labels, feats)
    copy.update(probs, labels, feats)
    assert copy.to_bytes() == state.to_bytes()
    assert copy.metrics() == state.metrics()


def test_replaying_deltas_on_a_fresh_state_gives_the_same_state() -> None:
    rng = np.random.default_rng(1)
    state = WindowState(3, 25, n_features=2, categorical_features=[1], seed=7)
    deltas = []
    for i in range(12):
        probs, labels, feats = random_batch(rng, 11, 3, 2)
        feats[:, 1] = rng.integers(0, 3, 11)
        batch_rng = np.random.default_rng([7, i])  # per-batch rng, as the stream app does
        deltas.append(
            state.update(
                probs,
                labels if i % 3 else None,
                feats if i % 4 else None,
                rng=batch_rng,
            ).to_bytes()
        )
    replica = WindowState(3, 25, n_features=2, categorical_features=[1], seed=7)
    for data in deltas:
        replica.apply(StateDelta.from_bytes(data))
    assert replica.to_bytes() == state.to_bytes()


def test_delta_size_does_not_grow_with_the_buffer() -> None:
    rng = np.random.default_rng(2)
    state = WindowState(10, 100_000, n_features=20, seed=1)
    probs, labels, feats = random_batch(rng, 500, 10, 20)
    first = len(state.update(probs, labels, feats).to_bytes())
    for _ in range(400):
        state.update(probs, labels, feats)
    late = state.update(probs, labels, feats)
    # 200k rows seen, buffer 100k: about half the batch enters; later far fewer.
    assert late.slots.size < 300
    assert len(late.to_bytes()) < first
    # fixed part: confusion (int32) and expected confusion (C² each), rows per (class, bin)
    # (int32), the reliability counters per bin, plus the header
    fixed = 100 * 4 + 100 * 8 + 10 * 15 * 4 + 15 * (4 + 8 + 4)
    assert len(late.to_bytes()) < 2500 + late.slots.size * (10 + 20 + 1) * 8 + fixed


def test_out_of_order_delta_is_refused() -> None:
    rng = np.random.default_rng(3)
    state = WindowState(2, 10)
    probs, _, _ = random_batch(rng, 5, 2)
    first = state.update(probs)
    second = state.update(probs)
    replica = WindowState(2, 10)
    with pytest.raises(ValueError, match="deltas must be applied in order"):
        replica.apply(second)
    replica.apply(first)
    replica.apply(second)
    assert replica.rows_seen == 10


def test_batches_without_labels_or_features_are_stored_as_missing() -> None:
    state = WindowState(2, 10, n_features=1, seed=0)
    state.update(np.array([[0.9, 0.1]]), np.array([0]), np.array([[1.0]]))
    state.update(np.array([[0.2, 0.8]]))
    _, labels, feats = state.reservoir()
    assert labels.tolist() == [0, -1]
    assert feats[0, 0] == 1.0 and np.isnan(feats[1, 0])
    points = state.metrics()
    assert value(points, "rows_without_features") == 1
    assert value(points, "missing_value_count", feat_name="feat_0") == 0
    assert value(points, "labelled_rows") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predict_proba": np.ones((2, 3)) / 3}, "predict_proba: expected 2 class columns"),
        ({"predict_proba": np.ones(4)}, "predict_proba: expected a 2-D array"),
        ({"predict_proba": [[0.5, np.nan]]}, "predict_proba: NaN"),
        ({"predict_proba": [[0.5, 0.5], [1.5, -0.5]]}, r"predict_proba: .* in \[-0.5, 1.5\]"),
        ({"predict_proba": [[0.5, 0.5], [0.5, 0.502]]}, "predict_proba: .* row 1 sums to 1.002"),
        ({"predict_proba": [[0.5, 0.5]], "labels": [2]}, r"labels: class indices must be in"),
        ({"predict_proba": [[0.5, 0.5]], "labels": [0, 1]}, "labels: expected 1 rows"),
        ({"predict_proba": [[0.5, 0.5]], "labels": [0.5]}, "labels: expected integer"),
        ({"predict_proba": [[0.5, 0.5]], "features": [[1.0]]}, "features: expected 2 columns"),
        ({"predict_proba": [[0.5, 0.5]], "features": [[1.0, 2.0]] * 2}, "features: expected 1"),
    ],
)
def test_bad_batches_get_specific_errors(kwargs: dict, message: str) -> None:
    state = WindowState(2, 10, n_features=2)
    with pytest.raises(MetricInputError, match=message):
        state.update(**kwargs)
    assert state.rows_seen == 0


def test_rows_at_the_sum_tolerance_are_judged_by_the_contract_check() -> None:
    # The compiled fast path is stricter than the tolerance; a row just inside it is
    # accepted (by the contract's check), one just outside refused, with or without numba.
    state = WindowState(2, 10)
    state.update([[0.5, 0.5], [0.5, 0.5 + 0.999e-3]])
    with pytest.raises(MetricInputError, match="row 0 sums to"):
        state.update([[0.5, 0.5 + 1.001e-3], [0.5, 0.5]])
    assert state.rows_seen == 2


def test_corrupt_bytes_are_refused() -> None:
    data = WindowState(2, 10).to_bytes()
    with pytest.raises(ValueError, match=r"truncated|corrupt|unexpected"):
        WindowState.from_bytes(data[:-3] if len(data) > 40 else data + b"x")
    with pytest.raises(ValueError, match="magic"):
        StateDelta.from_bytes(data)
