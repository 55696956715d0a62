"""Calibration of labelled rows: Brier score, ECE and reliability bins vs direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from metrics_helpers import find, value
from sklearn.metrics import brier_score_loss

from mlwatcher.cli import main
from mlwatcher.metrics import ReferenceProfile, WindowState, compute_metrics
from mlwatcher.metrics.state import StateDelta


def _batches(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> WindowState:
    state = WindowState(probs.shape[1], 20, threshold=threshold, seed=0)
    for part in np.array_split(np.arange(probs.shape[0]), 7):
        delta = state.update(probs[part], labels[part])
        assert StateDelta.from_bytes(delta.to_bytes()).to_bytes() == delta.to_bytes()
    return state


def _binary(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p1 = rng.beta(0.7, 0.9, size=n)
    labels = (rng.random(n) < p1**1.3).astype(np.int64)
    return np.column_stack([1 - p1, p1]), labels


def test_binary_brier_score_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    probs, labels = _binary(rng, 3000)
    labels[::10] = -1  # unlabelled rows do not count
    points = _batches(probs, labels).metrics()
    has = labels >= 0
    expected = brier_score_loss(labels[has], probs[has, 1])
    assert value(points, "brier_score") == pytest.approx(expected, rel=1e-12)


def test_multiclass_brier_score_is_the_mean_squared_distance_to_the_one_hot_label() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6) * 0.5, size=2500)
    labels = rng.integers(0, 6, size=2500)
    points = _batches(probs, labels).metrics()
    one_hot = np.eye(6)[labels]
    expected = ((probs - one_hot) ** 2).sum(axis=1).mean()
    assert value(points, "brier_score") == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(
        brier_score_loss(labels, probs, labels=np.arange(6), scale_by_half=False)
    )


def _numpy_reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15):
    """Equal-width bins [k/B, (k+1)/B), the last one closed, computed bin by bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows, conf, acc = [], [], []
    for k in range(n_bins):
        upper = confidence <= edges[k + 1] if k == n_bins - 1 else confidence < edges[k + 1]
        inside = (confidence >= edges[k]) & upper
        rows.append(int(inside.sum()))
        conf.append(confidence[inside].mean() if inside.any() else np.nan)
        acc.append(correct[inside].mean() if inside.any() else np.nan)
    rows, conf, acc = np.array(rows), np.array(conf), np.array(acc)
    filled = rows > 0
    ece = float((rows[filled] / rows.sum() * np.abs(acc[filled] - conf[filled])).sum())
    return rows, conf, acc, ece


@pytest.mark.parametrize("case", ["multiclass", "binary-threshold-0.3"])
def test_ece_and_reliability_bins_match_a_separate_binned_computation(case: str) -> None:
    rng = np.random.default_rng(2)
    if case == "multiclass":
        probs = rng.dirichlet(np.ones(5) * 0.3, size=4000)
        labels = rng.integers(0, 5, size=4000)
        threshold, predicted = 0.5, probs.argmax(axis=1)
        confidence = probs.max(axis=1)
    else:
        probs, labels = _binary(rng, 4000)
        threshold = 0.3
        predicted = (probs[:, 1] > threshold).astype(int)
        confidence = probs[np.arange(4000), predicted]  # the predicted class's probability
    points = _batches(probs, labels, threshold).metrics()
    rows, conf, acc, ece = _numpy_reliability(confidence, predicted == labels)
    assert value(points, "expected_calibration_error") == pytest.approx(ece, rel=1e-9)
    for k in range(15):
        assert value(points, "calibration_bin_rows", bin=str(k)) == rows[k]
        if rows[k]:
            assert value(points, "calibration_bin_confidence", bin=str(k)) == pytest.approx(
                conf[k], rel=1e-12
            )
            assert value(points, "calibration_bin_accuracy", bin=str(k)) == pytest.approx(acc[k])
        else:
            assert not find(points, "calibration_bin_accuracy", bin=str(k))


def test_a_calibrated_model_has_a_small_ece_and_an_overconfident_one_does_not() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=20_000)
    cdf = np.cumsum(probs, axis=1)
    labels = np.minimum((cdf < rng.random(20_000)[:, None]).sum(axis=1), 3)
    sharpened = probs**3 / (probs**3).sum(axis=1, keepdims=True)
    calibrated = value(compute_metrics(probs, labels), "expected_calibration_error")
    over = value(compute_metrics(sharpened, labels), "expected_calibration_error")
    assert calibrated < 0.02 < 0.1 < over


def test_windows_without_labels_have_no_calibration_points() -> None:
    state = WindowState(3, 10)
    state.update(np.full((4, 3), 1 / 3))
    whats = {p.what for p in state.metrics()}
    assert not whats & {"brier_score", "expected_calibration_error", "calibration_bin_rows"}
    assert "estimated_overall_accuracy" in whats
    assert "overall_accuracy_stderr" not in whats


def test_reference_with_labels_round_trips_its_calibration_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), size=500)
    labels = rng.integers(-1, 3, size=500)
    profile = ReferenceProfile.from_data(predict_proba=probs, labels=labels)
    assert profile.calibration is not None
    assert profile.calibration.rows.sum() == (labels >= 0).sum()
    profile.save(tmp_path / "ref.npz")
    loaded = ReferenceProfile.load(tmp_path / "ref.npz")
    assert loaded.to_bytes() == profile.to_bytes()
    np.testing.assert_array_equal(loaded.calibration.correct, profile.calibration.correct)
    with pytest.raises(ValueError, match="predict_proba"):
        ReferenceProfile.from_data(rng.normal(size=(10, 2)), labels=np.zeros(10, int))


def test_cli_labels_column_fits_the_calibration_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(3), size=300)
    labels = rng.integers(0, 3, size=300)
    frame = pd.DataFrame(probs, columns=["proba_0", "proba_1", "proba_2"])
    frame["x"] = rng.normal(size=300)
    frame["y_true"] = labels
    frame.to_csv(tmp_path / "train.csv", index=False)
    runner = CliRunner()
    args = ["reference", "build", str(tmp_path / "train.csv"), "--proba-columns", "proba_"]
    result = runner.invoke(
        main, [*args, "--labels-column", "y_true", "-o", str(tmp_path / "r.npz")]
    )
    assert result.exit_code == 0, result.output
    assert "calibration map from 300 labelled rows" in result.output
    profile = ReferenceProfile.load(tmp_path / "r.npz")
    assert profile.n_features == 1  # the label column is not a feature
    expected = ReferenceProfile.from_data(frame[["x"]], probs, labels=labels)
    np.testing.assert_array_equal(profile.calibration.rows, expected.calibration.rows)
    np.testing.assert_array_equal(profile.calibration.correct, expected.calibration.correct)

    missing = runner.invoke(main, [*args, "--labels-column", "nope", "-o", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "nope" in missing.output
    no_proba = runner.invoke(
        main,
        ["reference", "build", str(tmp_path / "train.csv"), "--labels-column", "y_true", "-o", "y"],
    )
    assert no_proba.exit_code != 0 and "--proba-columns" in no_proba.output
