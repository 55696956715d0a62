"""Label metrics (from exact counters) against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import find, random_batch, value
from sklearn import metrics as skm

from mlwatcher.metrics import MetricInputError, WindowState, compute_metrics


def _check_against_sklearn(points, labels, predicted, probs, n_classes):
    classes = list(range(n_classes))
    assert value(points, "overall_accuracy") == pytest.approx(skm.accuracy_score(labels, predicted))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    for i in classes:
        name = f"class_{i}"
        assert value(points, "precision", class_name=name) == pytest.approx(precision[i])
        assert value(points, "recall", class_name=name) == pytest.approx(recall[i])
        assert value(points, "f1", class_name=name) == pytest.approx(f1[i])
        one_vs_rest = skm.accuracy_score(labels == i, predicted == i)
        assert value(points, "accuracy", class_name=name) == pytest.approx(one_vs_rest)
        assert value(points, "label_count", class_name=name) == support[i]
        assert value(points, "label_freq", class_name=name) == pytest.approx(
            support[i] / len(labels)
        )
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        assert value(points, "precision", average=average) == pytest.approx(p)
        assert value(points, "recall", average=average) == pytest.approx(r)
        assert value(points, "f1", average=average) == pytest.approx(f)
    matrix = skm.confusion_matrix(labels, predicted, labels=classes)
    for i in classes:
        for j in classes:
            got = value(points, "confusion_count", class_name=f"class_{i}", pred_class=f"class_{j}")
            assert got == matrix[i, j]
    assert value(points, "log_loss") == pytest.approx(
        skm.log_loss(labels, probs, labels=classes), rel=1e-9
    )


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_label_metrics_match_sklearn_on_random_data(n_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs, labels, _ = random_batch(rng, 300, n_classes)
    predicted = (probs[:, 1] > 0.5).astype(int) if n_classes == 2 else probs.argmax(axis=1)
    points = compute_metrics(probs, labels)
    _check_against_sklearn(points, labels, predicted, probs, n_classes)


def test_window_state_label_metrics_cover_all_rows_not_only_the_sample() -> None:
    rng = np.random.default_rng(5)
    state = WindowState(4, max_buffer_size=50, seed=3)
    all_probs, all_labels = [], []
    for _ in range(12):
        probs, labels, _ = random_batch(rng, 40, 4)
        state.update(probs, labels)
        all_probs.append(probs)
        all_labels.append(labels)
    probs, labels = np.concatenate(all_probs), np.concatenate(all_labels)
    points = state.metrics()
    assert value(points, "rows_seen") == 480
    assert value(points, "buffer_count") == 50
    _check_against_sklearn(points, labels, probs.argmax(axis=1), probs, 4)


def test_binary_threshold_is_strictly_greater() -> None:
    probs = np.array([[0.5, 0.5], [0.4, 0.6], [0.7, 0.3], [0.3, 0.7]])
    points = compute_metrics(probs, threshold=0.5)
    assert value(points, "prediction_count", class_name="class_1") == 2
    assert value(points, "prediction_count", class_name="class_0") == 2
    points = compute_metrics(probs, threshold=0.65)
    assert value(points, "prediction_count", class_name="class_1") == 1


def test_multiclass_tie_goes_to_first_maximum() -> None:
    probs = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]])
    points = compute_metrics(probs)
    counts = [value(points, "prediction_count", class_name=f"class_{i}") for i in range(3)]
    assert counts == [1, 1, 0]


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 2, 1]),
        np.array([[0], [2], [1]]),
        np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]),
        np.array([0.0, 2.0, 1.0]),
    ],
)
def test_label_formats_are_equivalent(labels: np.ndarray) -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    points = compute_metrics(probs, labels)
    assert value(points, "overall_accuracy") == pytest.approx(2 / 3)
    assert value(points, "label_count", class_name="class_2") == 1


def test_multi_hot_label_row_is_refused_as_by_the_producer() -> None:
    # Issue 11: one validation contract. A multi-hot row used to be taken as its first maximum
    # here while the producer refused it; both refuse it now (which class is meant is unknown).
    probs = np.array([[0.8, 0.1, 0.1]])
    with pytest.raises(MetricInputError, match="labels: one-hot rows must contain exactly one 1"):
        compute_metrics(probs, np.array([[0, 1, 1]]))


def test_one_class_only_and_one_row_give_finite_values() -> None:
    probs = np.array([[0.9, 0.05, 0.05]])
    points = compute_metrics(probs, np.array([0]))
    assert all(np.isfinite(p.value) for p in points)
    assert value(points, "overall_accuracy") == 1.0
    assert value(points, "precision", class_name="class_1") == 0.0
    assert value(points, "f1", average="macro") == pytest.approx(1 / 3)


def test_no_label_metrics_without_labels() -> None:
    rng = np.random.default_rng(0)
    probs, _, _ = random_batch(rng, 20, 3)
    points = compute_metrics(probs)
    assert value(points, "labelled_rows") == 0
    for what in ("accuracy", "precision", "overall_accuracy", "log_loss", "confusion_count"):
        assert find(points, what) == []


def test_rows_marked_minus_one_are_unlabelled() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    points = compute_metrics(probs, np.array([0, -1, 1]))
    assert value(points, "labelled_rows") == 2
    assert value(points, "overall_accuracy") == 0.5


def test_log_loss_of_a_certain_mistake_is_finite() -> None:
    points = compute_metrics(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 1]))
    assert value(points, "log_loss") == pytest.approx(
        skm.log_loss([1, 1], [[1.0, 0.0], [0.0, 1.0]], labels=[0, 1])
    )
