"""Property-based tests: any valid batch sequence gives consistent, finite output."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlwatcher.metrics import StateDelta, WindowState, compute_metrics


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, int, int, list[tuple]]:
    n_classes = draw(st.integers(2, 5))
    n_features = draw(st.integers(0, 3))
    capacity = draw(st.integers(1, 20))
    out = []
    for _ in range(draw(st.integers(0, 5))):
        n = draw(st.integers(1, 15))
        raw = draw(
            hnp.arrays(np.float64, (n, n_classes), elements=st.floats(0, 1, allow_subnormal=False))
        )
        probs = (raw + 1e-9) / (raw + 1e-9).sum(axis=1, keepdims=True)
        labels = draw(st.none() | hnp.arrays(np.int64, n, elements=st.integers(-1, n_classes - 1)))
        feats = None
        if n_features:
            feats = draw(
                st.none()
                | hnp.arrays(
                    np.float64,
                    (n, n_features),
                    elements=st.floats(allow_nan=True, allow_infinity=True, width=32),
                )
            )
        out.append((probs, labels, feats))
    return n_classes, n_features, capacity, out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.integers(0, 2**32 - 1))
def test_any_batches_give_finite_points_exact_counts_and_replayable_deltas(case, seed) -> None:
    n_classes, n_features, capacity, items = case
    state = WindowState(n_classes, capacity, n_features, seed=seed)
    replica = WindowState(n_classes, capacity, n_features, seed=seed)
    total = 0
    for i, (probs, labels, feats) in enumerate(items):
        # A per-batch rng (as the stream app uses) leaves the state's own generator untouched,
        # so the replica built from deltas alone must be byte-identical.
        delta = state.update(probs, labels, feats, rng=np.random.default_rng([seed, i]))
        replica.apply(StateDelta.from_bytes(delta.to_bytes()))
        total += probs.shape[0]
    assert state.rows_seen == total
    assert state.rows_sampled == min(total, capacity)
    assert replica.to_bytes() == state.to_bytes()
    assert WindowState.from_bytes(state.to_bytes()).to_bytes() == state.to_bytes()
    points = state.metrics()
    assert all(np.isfinite(p.value) for p in points)
    counts = sum(p.value for p in points if p.what == "prediction_count")
    assert counts == total
    for p in points:
        if p.what.endswith("_freq") or p.what in ("accuracy", "precision", "recall", "f1"):
            assert 0.0 <= p.value <= 1.0
        if p.what in ("spread12_prediction_proba", "max_prediction_proba") and p.stat != "std":
            assert -1e-12 <= p.value <= 1.0 + 1e-12


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)), elements=st.floats(-1e6, 1e6)
    )
)
def test_feature_statistics_are_ordered(feats: np.ndarray) -> None:
    probs = np.full((feats.shape[0], 2), 0.5)
    points = compute_metrics(probs, features=feats)
    for j in range(feats.shape[1]):
        got = {
            p.stat: p.value
            for p in points
            if p.what == "feature_value" and p.feat_name == f"feat_{j}"
        }
        tol = 1e-9 * max(1.0, np.abs(feats[:, j]).max())
        assert got["q25"] <= got["median"] + tol <= got["q75"] + 2 * tol
        assert got["iqr"] >= -tol and got["range"] >= -tol and got["std"] >= 0
        assert feats[:, j].min() - tol <= got["mean"] <= feats[:, j].max() + tol
