"""Sample statistics (pred1, spread12, entropy, feature values) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import find, value
from scipy import stats as sps

from mlwatcher.metrics import compute_metrics

STAT_FUNCS = {
    "range": lambda x: np.ptp(x),
    "mean": np.mean,
    "std": np.std,
    "median": np.median,
    "q25": lambda x: np.percentile(x, 25),
    "q50": lambda x: np.percentile(x, 50),
    "q75": lambda x: np.percentile(x, 75),
    "iqr": lambda x: np.percentile(x, 75) - np.percentile(x, 25),
}


def _assert_stats(points, what, values, **props):
    for stat, func in STAT_FUNCS.items():
        got = value(points, what, stat=stat, **props)
        assert got == pytest.approx(func(values), rel=1e-9, abs=1e-12), stat


@pytest.mark.parametrize("n_rows", [1, 2, 7, 500])
def test_prediction_and_feature_stats_match_numpy(n_rows: int) -> None:
    rng = np.random.default_rng(n_rows)
    probs = rng.dirichlet(np.ones(5), size=n_rows)
    feats = rng.normal(3, 2, size=(n_rows, 4))
    points = compute_metrics(probs, features=feats)
    ordered = np.sort(probs, axis=1)
    _assert_stats(points, "max_prediction_proba", ordered[:, -1])
    _assert_stats(points, "spread12_prediction_proba", ordered[:, -1] - ordered[:, -2])
    entropy = sps.entropy(probs, axis=1) / np.log(5)
    _assert_stats(points, "prediction_entropy", entropy)
    for j in range(4):
        _assert_stats(points, "feature_value", feats[:, j], feat_name=f"feat_{j}")


def test_spread12_is_zero_on_ties_and_all_equal_rows() -> None:
    probs = np.array([[0.4, 0.4, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2]])
    points = compute_metrics(probs)
    assert value(points, "spread12_prediction_proba", stat="range") == pytest.approx(0.2)
    assert value(points, "spread12_prediction_proba", stat="median") == 0.0
    assert value(points, "prediction_entropy", stat="range") > 0
    assert value(points, "prediction_entropy", stat="std") >= 0


def test_nan_and_inf_feature_values_are_counted_and_excluded_from_stats() -> None:
    feats = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.inf], [5.0, np.nan]])
    probs = np.full((4, 2), 0.5)
    points = compute_metrics(probs, features=feats)
    assert value(points, "missing_value_count", feat_name="feat_0") == 1
    assert value(points, "missing_value_count", feat_name="feat_1") == 3
    assert value(points, "infinite_value_count", feat_name="feat_1") == 1
    _assert_stats(points, "feature_value", np.array([1.0, 3.0, 5.0]), feat_name="feat_0")
    # feat_1 has no finite value: no statistic at all rather than NaN.
    assert find(points, "feature_value", feat_name="feat_1") == []
    assert all(np.isfinite(p.value) for p in points)


def test_constant_feature_gives_zero_spread() -> None:
    feats = np.full((10, 1), 7.0)
    points = compute_metrics(np.full((10, 2), 0.5), features=feats)
    assert value(points, "feature_value", feat_name="feat_0", stat="std") == 0.0
    assert value(points, "feature_value", feat_name="feat_0", stat="median") == 7.0


def test_dataframe_column_names_become_feature_names() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"age": [20.0, 30.0, 40.0], "colour": [1, 2, 2]})
    points = compute_metrics(np.full((3, 2), 0.5), features=frame, categorical_features=["colour"])
    assert value(points, "feature_value", feat_name="age", stat="mean") == 30.0
    assert value(points, "categorical_value_count", feat_name="colour", value="2") == 2
    assert value(points, "categorical_value_freq", feat_name="colour", value="1") == pytest.approx(
        1 / 3
    )
    assert find(points, "feature_value", feat_name="colour") == []


def test_categorical_counts_match_numpy_unique() -> None:
    rng = np.random.default_rng(3)
    feats = rng.integers(0, 6, size=(400, 2)).astype(float)
    feats[rng.random(400) < 0.1, 1] = np.nan
    points = compute_metrics(np.full((400, 2), 0.5), features=feats, categorical_features=[1])
    values, counts = np.unique(feats[:, 1][~np.isnan(feats[:, 1])], return_counts=True)
    for v, c in zip(values, counts, strict=True):
        got = value(points, "categorical_value_count", feat_name="feat_1", value=str(int(v)))
        assert got == c


def test_empty_window_has_zero_counts_and_no_statistics() -> None:
    from mlwatcher.metrics import WindowState

    state = WindowState(3, max_buffer_size=10, n_features=2)
    points = state.metrics()
    assert value(points, "rows_seen") == 0
    assert value(points, "buffer_count") == 0
    assert [p.value for p in find(points, "prediction_count")] == [0, 0, 0]
    assert find(points, "prediction_freq") == []
    assert find(points, "max_prediction_proba") == []
    assert find(points, "feature_value") == []
    assert all(np.isfinite(p.value) for p in points)


def test_float32_valued_features_take_the_fast_sort_and_stay_exact() -> None:
    rng = np.random.default_rng(11)
    feats = rng.normal(size=(3000, 3)).astype(np.float32).astype(np.float64)
    feats[::7, 1] = np.nan
    feats[0, 2] = 1e30  # not representable in float32: that matrix takes the float64 sort
    for matrix in (feats[:, :2], feats):
        points = compute_metrics(np.full((3000, 2), 0.5), features=matrix)
        for j in range(matrix.shape[1]):
            column = matrix[:, j][np.isfinite(matrix[:, j])]
            _assert_stats(points, "feature_value", column, feat_name=f"feat_{j}")
