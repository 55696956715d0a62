"""The window close of numeric features (metrics.columns) against numpy and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from mlwatcher.metrics import ReferenceProfile, columns

NUMPY_STATS = {
    "range": np.ptp,
    "mean": np.mean,
    "std": np.std,
    "median": np.median,
    "q25": lambda x: np.quantile(x, 0.25),
    "q50": lambda x: np.quantile(x, 0.5),
    "q75": lambda x: np.quantile(x, 0.75),
    "iqr": lambda x: np.quantile(x, 0.75) - np.quantile(x, 0.25),
}


@pytest.mark.parametrize("n", [64, 65, 1001, 2500, 4003, 10_007])
@pytest.mark.parametrize("float32_valued", [False, True])
def test_quartiles_by_selection_equal_numpy(n: int, float32_valued: bool) -> None:
    rng = np.random.default_rng(n)
    matrix = rng.normal(3.0, 2.0, size=(7, n))
    matrix[3] = np.round(matrix[3])  # many ties
    matrix[4] = 5.0  # constant
    if float32_valued:
        matrix = matrix.astype(np.float32).astype(np.float64)
    got = columns.summarise(matrix, threads=1).stats
    for name, func in NUMPY_STATS.items():
        expected = np.array([func(row) for row in matrix])
        exact = name not in ("mean", "std")  # selection returns the very same values
        np.testing.assert_allclose(got[name], expected, rtol=0 if exact else 1e-12, atol=0)


@pytest.mark.parametrize("n", [64, 65, 999, 1000, 1001, 2500, 10_007])
@pytest.mark.parametrize("float32_valued", [False, True])
def test_quartiles_with_references_equal_numpy(n: int, float32_valued: bool) -> None:
    # With references, a window of at most DRIFT_SAMPLE_SIZE rows reads its quartiles off
    # the sorted drift sample (every value), a larger one selects them: the same values.
    rng = np.random.default_rng(n + 1)
    matrix = rng.normal(3.0, 2.0, size=(7, n))
    matrix[3] = np.round(matrix[3])  # many ties
    matrix[4] = 5.0  # constant
    matrix[5, : n // 2] = -0.0  # signed zeros among ties
    if float32_valued:
        matrix = matrix.astype(np.float32).astype(np.float64)
    profile = ReferenceProfile.from_data(rng.normal(3.0, 2.0, size=(5000, 7)))
    summary = columns.summarise(matrix, [profile.numeric[j] for j in range(7)], threads=1)
    assert summary.drift is not None and np.isfinite(summary.drift["ks_stat"]).all()
    for name, func in NUMPY_STATS.items():
        expected = np.array([func(row) for row in matrix])
        exact = name not in ("mean", "std")
        np.testing.assert_allclose(
            summary.stats[name], expected, rtol=0 if exact else 1e-12, atol=0
        )


def test_rows_with_missing_values_use_their_finite_values() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(3, 3000))
    matrix[1, ::5] = np.nan
    matrix[2, 7] = np.inf
    got = columns.summarise(matrix, threads=1).stats
    for j, row in enumerate(matrix):
        finite = row[np.isfinite(row)]
        for name, func in NUMPY_STATS.items():
            assert got[name][j] == pytest.approx(func(finite), rel=1e-12, abs=1e-12), name


def test_drift_scores_equal_scipy_on_the_drift_sample() -> None:
    # 5000 rows: KS, Wasserstein and PSI use the bounded sample at drift_sample_positions.
    rng = np.random.default_rng(2)
    train = rng.normal(size=(20_000, 4))
    profile = ReferenceProfile.from_data(train)
    window = rng.normal(0.5, 1.1, size=(4, 5000))
    refs = [profile.numeric[j] for j in range(4)]
    got = columns.summarise(window, refs, threads=1).drift
    assert got is not None
    positions = columns.drift_sample_positions(5000)
    assert positions.size == columns.DRIFT_SAMPLE_SIZE
    for j, ref in enumerate(refs):
        sample = window[j, positions]
        ks = sps.ks_2samp(sample, ref.sample, method="asymp")
        assert got["ks_stat"][j] == pytest.approx(ks.statistic, abs=1e-12)
        assert got["ks_pvalue"][j] == pytest.approx(ks.pvalue, rel=0.05)  # Stephens' tail
        w = sps.wasserstein_distance(sample, ref.sample) / np.std(train[:, j])
        assert got["wasserstein_norm"][j] == pytest.approx(w, rel=1e-9)
        cur = np.bincount(np.searchsorted(ref.edges, sample), minlength=ref.edges.size + 1)
        cur_share = cur / sample.size
        c, r = np.maximum(cur_share, 1e-4), np.maximum(ref.proportions, 1e-4)
        assert got["psi"][j] == pytest.approx(np.sum((c - r) * np.log(c / r)), rel=1e-9)
        assert got["js_distance"][j] == pytest.approx(
            jensenshannon(cur_share, ref.proportions), rel=1e-9
        )
        assert got["drifted"][j] == 1.0


def test_drift_sample_is_random_and_fixed_per_size() -> None:
    positions = columns.drift_sample_positions(10_000)
    assert np.array_equal(positions, columns.drift_sample_positions(10_000))
    assert np.all(np.diff(positions) > 0)
    # Not the first slots (they follow arrival order until the reservoir is full).
    assert positions.max() > 9_000 and positions.min() < 1_000
    assert np.array_equal(columns.drift_sample_positions(800), np.arange(800))


def test_threads_give_the_same_values_as_one_thread() -> None:
    rng = np.random.default_rng(3)
    profile = ReferenceProfile.from_data(rng.normal(size=(5000, 300)))
    window = rng.normal(0.1, 1.0, size=(300, 4000))
    window[5, :10] = np.nan
    refs = [profile.numeric[j] for j in range(300)]
    one = columns.summarise(window, refs, threads=1)
    two = columns.summarise(window, refs, threads=2)
    assert one.drift is not None and two.drift is not None
    for name in one.stats:
        assert np.array_equal(one.stats[name], two.stats[name], equal_nan=True)
    for name in one.drift:
        assert np.array_equal(one.drift[name], two.drift[name], equal_nan=True)


def test_features_without_a_reference_get_no_drift_scores() -> None:
    rng = np.random.default_rng(4)
    profile = ReferenceProfile.from_data(rng.normal(size=(1000, 1)))
    window = rng.normal(size=(2, 500))
    got = columns.summarise(window, [profile.numeric[0], None], threads=1).drift
    assert got is not None
    assert np.isfinite(got["ks_stat"][0]) and np.isnan(got["ks_stat"][1])
