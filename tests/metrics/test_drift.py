"""Drift statistics against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import find, value
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from mlwatcher.metrics import ReferenceProfile, WindowState, compute_metrics, drift


@pytest.mark.parametrize(
    ("n", "m", "shift"), [(50, 80, 0.0), (500, 300, 0.3), (13, 7, 1.0), (40, 120, 0.5)]
)
def test_ks_and_wasserstein_match_scipy(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n)
    cur = np.sort(rng.normal(shift, 1, n))
    ref = np.sort(rng.normal(0, 1, m))
    d = drift.ks_statistic(cur, ref)
    expected = sps.ks_2samp(cur, ref, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    # Exactly SciPy's kstwo, except in its slow far tail (here p ~ 1e-3: Stephens, 2.5 %).
    assert drift.ks_pvalues(np.array([d]), np.array([n]), np.array([m]))[0] == pytest.approx(
        expected.pvalue, rel=1e-9 if expected.pvalue > 0.02 else 0.025
    )
    assert drift.wasserstein(cur, ref) == pytest.approx(sps.wasserstein_distance(cur, ref))
    rows = drift.numeric_drift([cur], [drift.NumericReference.from_values(ref, ref)])
    assert rows["ks_stat"][0] == pytest.approx(expected.statistic, abs=1e-12)
    assert rows["wasserstein_norm"][0] * np.std(ref) == pytest.approx(
        sps.wasserstein_distance(cur, ref)
    )


def test_kstwo_sf_is_scipys_kstwo() -> None:
    rng = np.random.default_rng(7)
    n = np.concatenate([rng.integers(1, 3000, 3000), np.full(200, 667)]).astype(float)
    d = np.concatenate([rng.random(3000) ** 3, np.linspace(0.0, 0.3, 200)])
    assert np.allclose(drift.kstwo_sf(d, n), sps.kstwo.sf(d, n), rtol=1e-12, atol=0)


@pytest.mark.parametrize("en", [150, 300, 667, 999, 5000])
def test_ks_pvalues_stay_within_the_documented_accuracy(en: int) -> None:
    # Sizes n = m = 2 en give that effective size; p from 0.999 to 1e-6.
    for p in (0.999, 0.95, 0.5, 0.05, 0.02, 1e-3, 1e-6):
        d = sps.kstwo.isf(p, en)
        got = drift.ks_pvalues(np.array([d]), np.array([2 * en]), np.array([2 * en]))[0]
        if p > 0.9:
            assert abs(got - p) < 0.01
        elif en < 1000 and p > 0.02:
            assert got == pytest.approx(p, rel=1e-9)  # SciPy's own series
        else:
            assert got == pytest.approx(
                p, rel={0.5: 0.007, 0.05: 0.001, 0.02: 0.006, 1e-3: 0.025}.get(p, 0.04)
            )


@pytest.mark.parametrize(("n", "m"), [(10000, 2000), (3000, 3000), (5000, 1200)])
def test_ks_pvalue_of_large_samples_stays_close_to_scipy(n: int, m: int) -> None:
    rng = np.random.default_rng(m)
    for shift in (0.0, 0.03, 0.06):
        cur, ref = rng.normal(shift, 1, n), rng.normal(0, 1, m)
        expected = sps.ks_2samp(cur, ref, method="asymp")
        got = drift.ks_pvalues(np.array([expected.statistic]), np.array([n]), np.array([m]))[0]
        assert got == pytest.approx(expected.pvalue, rel=0.04)


def test_ks_statistic_handles_ties_between_samples() -> None:
    rng = np.random.default_rng(0)
    cur = np.sort(rng.integers(0, 5, 200).astype(float))
    ref = np.sort(rng.integers(1, 6, 150).astype(float))
    assert drift.ks_statistic(cur, ref) == pytest.approx(sps.ks_2samp(cur, ref).statistic)


def test_feature_drift_points_match_scipy_and_psi_formula() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, size=(3000, 2))
    reference = ReferenceProfile.from_data(train, max_sample=800)
    current = rng.normal(0.5, 1, size=(400, 2))
    points = compute_metrics(np.full((400, 2), 0.5), features=current, reference=reference)
    for j in range(2):
        ref = reference.numeric[j]
        col = current[:, j]
        name = f"feat_{j}"
        ks = sps.ks_2samp(col, ref.sample, method="asymp")
        assert value(points, "feature_drift", feat_name=name, stat="ks_stat") == pytest.approx(
            ks.statistic
        )
        # p ~ 1e-10, SciPy's slow far tail: Stephens' limit (documented accuracy there).
        assert value(points, "feature_drift", feat_name=name, stat="ks_pvalue") == pytest.approx(
            ks.pvalue, rel=0.2
        )
        w = sps.wasserstein_distance(col, ref.sample) / np.std(train[:, j])
        assert value(
            points, "feature_drift", feat_name=name, stat="wasserstein_norm"
        ) == pytest.approx(w)
        edges = np.unique(np.quantile(train[:, j], np.arange(1, 10) / 10))
        cur_share = np.bincount(np.searchsorted(edges, col), minlength=edges.size + 1) / 400
        ref_share = np.bincount(np.searchsorted(edges, train[:, j]), minlength=edges.size + 1)
        ref_share = ref_share / 3000
        c, r = np.maximum(cur_share, 1e-4), np.maximum(ref_share, 1e-4)
        assert value(points, "feature_drift", feat_name=name, stat="psi") == pytest.approx(
            np.sum((c - r) * np.log(c / r))
        )
        assert value(points, "feature_drift", feat_name=name, stat="js_distance") == pytest.approx(
            jensenshannon(cur_share, ref_share)
        )
        assert value(points, "feature_drift", feat_name=name, stat="drifted") == 1.0
    assert value(points, "dataset_drift", stat="share") == 1.0
    assert value(points, "dataset_drift", stat="drifted") == 1.0


def test_same_distribution_is_not_flagged() -> None:
    rng = np.random.default_rng(2)
    reference = ReferenceProfile.from_data(rng.normal(size=(5000, 5)))
    points = compute_metrics(
        np.full((2000, 2), 0.5), features=rng.normal(size=(2000, 5)), reference=reference
    )
    assert value(points, "dataset_drift", stat="share") == 0.0


def test_large_samples_with_negligible_shift_are_not_flagged() -> None:
    # KS alone would call a 0.05-sigma shift significant with 20k rows; the PSI floor does not.
    rng = np.random.default_rng(3)
    reference = ReferenceProfile.from_data(rng.normal(size=(20000, 1)), max_sample=20000)
    current = np.sort(rng.normal(0.05, 1, size=20000))
    values = drift.numeric_drift([current], [reference.numeric[0]])
    assert values["ks_pvalue"][0] < 0.05
    assert values["drifted"][0] == 0.0


def test_categorical_drift_matches_scipy_chisquare() -> None:
    rng = np.random.default_rng(4)
    train = rng.choice([0.0, 1.0, 2.0], p=[0.5, 0.3, 0.2], size=(2000, 1))
    reference = ReferenceProfile.from_data(train, categorical_features=[0])
    current = rng.choice([0.0, 1.0, 2.0, 3.0], p=[0.2, 0.3, 0.4, 0.1], size=(500, 1))
    points = compute_metrics(
        np.full((500, 2), 0.5), features=current, categorical_features=[0], reference=reference
    )
    ref_counts = np.array([np.sum(train == v) for v in range(4)], dtype=float)
    observed = np.array([np.sum(current == v) for v in range(4)], dtype=float)
    expected = (ref_counts + 0.5) / (ref_counts.sum() + 2.0) * 500
    chi = sps.chisquare(observed, f_exp=expected)
    assert value(points, "feature_drift", feat_name="feat_0", stat="chi2_stat") == pytest.approx(
        chi.statistic
    )
    assert value(points, "feature_drift", feat_name="feat_0", stat="chi2_pvalue") == pytest.approx(
        chi.pvalue, abs=1e-300
    )
    assert value(points, "feature_drift", feat_name="feat_0", stat="js_distance") == pytest.approx(
        jensenshannon(observed, ref_counts)
    )
    assert value(points, "feature_drift", feat_name="feat_0", stat="drifted") == 1.0


def test_prediction_drift_against_previous_window() -> None:
    rng = np.random.default_rng(5)
    previous = WindowState(3, max_buffer_size=500, seed=1)
    previous.update(rng.dirichlet([5, 1, 1], size=1000))
    current = WindowState(3, max_buffer_size=500, seed=2)
    current.update(rng.dirichlet([1, 1, 5], size=1000))
    points = current.metrics(reference=ReferenceProfile.from_window(previous))
    assert value(points, "predicted_class_drift", stat="drifted") == 1.0
    assert value(points, "pred1_drift", stat="ks_stat") >= 0
    stable = WindowState(3, max_buffer_size=500, seed=3)
    stable.update(rng.dirichlet([5, 1, 1], size=1000))
    points = stable.metrics(reference=ReferenceProfile.from_window(previous))
    assert value(points, "predicted_class_drift", stat="drifted") == 0.0
    assert value(points, "pred1_drift", stat="drifted") == 0.0


def test_constant_reference_and_one_row_window_give_finite_points() -> None:
    reference = ReferenceProfile.from_data(np.zeros((100, 2)), np.full((100, 2), 0.5))
    points = compute_metrics(
        np.array([[0.2, 0.8]]), features=np.array([[0.0, 1.0]]), reference=reference
    )
    assert all(np.isfinite(p.value) for p in points)
    # Wasserstein is normalised by the reference std, which is 0 here: no point.
    assert find(points, "feature_drift", stat="wasserstein_norm") == []
    assert value(points, "feature_drift", feat_name="feat_0", stat="ks_stat") == 0.0
    assert value(points, "feature_drift", feat_name="feat_1", stat="ks_stat") == 1.0


def test_reference_with_other_feature_count_is_refused() -> None:
    reference = ReferenceProfile.from_data(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="reference: profile has 3 features"):
        compute_metrics(np.full((2, 2), 0.5), features=np.zeros((2, 2)), reference=reference)
