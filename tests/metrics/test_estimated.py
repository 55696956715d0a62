"""Performance estimation without labels (CBPE), checked against simulation.

With calibrated probabilities, a row's label is a draw from its probability vector. So the
references are (a) the realised accuracy of labels drawn that way, window after window, and
(b) a Monte-Carlo average of the realised metrics over many such draws of one window.
"""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import value

from mlwatcher.metrics import ReferenceProfile, WindowState
from mlwatcher.metrics.estimated import PREFIX


def draw_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row, drawn from the row's probabilities (inverse-CDF, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


def window_points(probs, labels, *, threshold=0.5, reference=None, batch=100):
    state = WindowState(probs.shape[1], 50, threshold=threshold, seed=0)
    for start in range(0, probs.shape[0], batch):  # several batches: counters are summed
        state.update(probs[start : start + batch], labels[start : start + batch])
    return state.metrics(reference=reference)


@pytest.mark.parametrize(
    ("n_classes", "threshold", "concentration"),
    [(5, 0.5, 0.4), (2, 0.3, 1.0)],
    ids=["5-class", "binary-threshold-0.3"],
)
def test_estimate_covers_the_realised_accuracy_at_the_nominal_rate(
    n_classes: int, threshold: float, concentration: float
) -> None:
    """200 windows of calibrated data: |estimated - realised| / stderr behaves like N(0, 1).

    Over 200 windows a 3-stderr band misses with probability 0.27 %: 0.54 windows expected,
    more than 3 misses has probability 0.2 %. The 1- and 2-stderr rates (68.3 %, 95.4 %) must
    be within 3 binomial standard deviations of nominal. The seed is fixed.
    """
    rng = np.random.default_rng(12)
    z = []
    for _ in range(200):
        probs = rng.dirichlet(np.ones(n_classes) * concentration, size=500)
        labels = draw_labels(rng, probs)
        points = window_points(probs, labels, threshold=threshold)
        estimate = value(points, PREFIX + "overall_accuracy")
        stderr = value(points, PREFIX + "overall_accuracy_stderr")
        realised = value(points, "overall_accuracy")
        assert 0 < stderr < 0.05
        z.append((realised - estimate) / stderr)
    z = np.abs(np.array(z))
    assert (z > 3).sum() <= 3
    for k, nominal in ((1, 0.6827), (2, 0.9545)):
        tolerance = 3 * np.sqrt(nominal * (1 - nominal) / z.size)
        assert abs((z <= k).mean() - nominal) < tolerance, (k, (z <= k).mean())


def _realised(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Label metrics of a stack of confusion matrices ``(draws, true, predicted)``."""
    n = confusion.sum(axis=(1, 2))[:, None]
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.nan_to_num(tp / support)
        f1 = np.nan_to_num(2 * tp / (predicted + support))
    return {
        "tp": tp,
        "support": support,
        "predicted": predicted,
        "accuracy": (n - (predicted - tp) - (support - tp)) / n,
        "precision": tp / predicted,
        "recall": recall,
        "f1": f1,
        "weight": support / n,
    }


def test_estimates_agree_with_a_monte_carlo_average_of_the_realised_metrics() -> None:
    """Labels drawn 4000 times from the (calibrated) probabilities of one 2000-row window.

    Tolerance per metric: 4 Monte-Carlo standard errors, plus the exact gap between the mean
    of a ratio and the ratio of the means that the estimate computes (E[X]/E[Y]). For a ratio
    R = X/Y, ``E[R] − E[X]/E[Y] = −Cov(R, Y)/E[Y]``, so ``|gap| <= sd(R)·sd(Y)/E[Y]``
    (Hartley–Ross). Precision and accuracy have fixed denominators (rows predicted, rows),
    so no gap; recall has Y = support, F1 Y = predicted + support. A weighted average
    ``Σ w_c R_c`` with random weights w_c = support_c/N adds ``|Cov(w_c, R_c)| <= sd·sd``.
    These bounds come out below 2e-3 here (per-class ones below 1e-3): the estimate is the
    expected metric to that accuracy.
    """
    rng = np.random.default_rng(7)
    n_classes, n_rows, draws = 4, 2000, 4000
    probs = rng.dirichlet(np.ones(n_classes) * 0.6, size=n_rows)
    probs[:, 0] *= 3  # unequal class sizes make the averages differ from each other
    probs /= probs.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    points = window_points(probs, draw_labels(rng, probs))

    confusion = np.zeros((draws, n_classes, n_classes), np.int64)
    for chunk in np.array_split(np.arange(draws), 8):
        labels = np.stack([draw_labels(rng, probs) for _ in chunk])
        index = (np.arange(len(chunk))[:, None] * n_classes + labels) * n_classes + predicted
        confusion[chunk] = np.bincount(index.ravel(), minlength=len(chunk) * n_classes**2).reshape(
            len(chunk), n_classes, n_classes
        )
    mc = _realised(confusion)
    denominators = {"recall": mc["support"], "f1": mc["predicted"] + mc["support"]}
    gaps, class_gaps = [], []

    def check(estimate: float, samples: np.ndarray, gap: float, label: str) -> None:
        tolerance = 4 * samples.std() / np.sqrt(draws) + gap
        assert abs(estimate - samples.mean()) <= tolerance, (label, estimate, samples.mean())

    for what in ("accuracy", "precision", "recall", "f1"):
        hr = np.zeros(n_classes)
        if what in denominators:
            y = denominators[what]
            hr = mc[what].std(axis=0) * y.std(axis=0) / y.mean(axis=0)
        class_gaps.extend(hr)
        for c in range(n_classes):
            estimate = value(points, PREFIX + what, class_name=f"class_{c}")
            check(estimate, mc[what][:, c], hr[c], f"{what} class {c}")
        if what == "accuracy":
            continue
        macro = value(points, PREFIX + what, average="macro")
        check(macro, mc[what].mean(axis=1), hr.mean(), f"{what} macro")
        weighted_gap = float(
            (mc["weight"].std(axis=0) * mc[what].std(axis=0) + mc["weight"].mean(axis=0) * hr).sum()
        )
        gaps.append(weighted_gap)
        weighted = value(points, PREFIX + what, average="weighted")
        check(weighted, (mc["weight"] * mc[what]).sum(axis=1), weighted_gap, f"{what} weighted")
        micro = value(points, PREFIX + what, average="micro")  # single-label: = accuracy
        check(micro, mc["tp"].sum(axis=1) / n_rows, 0.0, f"{what} micro")
    overall = value(points, PREFIX + "overall_accuracy")
    check(overall, mc["tp"].sum(axis=1) / n_rows, 0.0, "overall accuracy")
    assert max(class_gaps) < 1e-3
    assert max(gaps) < 2e-3


def test_expected_confusion_sums_probabilities_per_predicted_class() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=300)
    points = window_points(probs, np.full(300, -1))
    predicted = probs.argmax(axis=1)
    for c in range(3):
        for j in range(3):
            expected = probs[predicted == j, c].sum()
            got = value(
                points, PREFIX + "confusion_count", class_name=f"class_{c}", pred_class=f"class_{j}"
            )
            assert got == pytest.approx(expected, rel=1e-12)
    # no labels: estimates are there, realised metrics are not
    assert not [p for p in points if p.what in ("overall_accuracy", "brier_score")]


def _miscalibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An over-confident model: it reports softmax(2·z) while labels follow softmax(z)."""
    logits = rng.normal(size=(n, 4)) * 1.5
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    reported = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    return reported, draw_labels(rng, true)


def test_a_calibration_map_from_the_reference_corrects_an_over_confident_model() -> None:
    """Raw estimates of an over-confident model are far too high; calibrated ones are not."""
    rng = np.random.default_rng(5)
    ref_probs, ref_labels = _miscalibrated(rng, 20_000)
    reference = ReferenceProfile.from_data(predict_proba=ref_probs, labels=ref_labels)
    raw_z, calibrated_z = [], []
    for _ in range(40):
        probs, labels = _miscalibrated(rng, 1000)
        for profile, z in ((None, raw_z), (reference, calibrated_z)):
            points = window_points(probs, labels, reference=profile)
            gap = value(points, "overall_accuracy") - value(points, PREFIX + "overall_accuracy")
            z.append(gap / value(points, PREFIX + "overall_accuracy_stderr"))
    raw_z, calibrated_z = np.array(raw_z), np.array(calibrated_z)
    assert np.median(raw_z) < -5  # raw probabilities promise far more than is delivered
    assert abs(np.median(calibrated_z)) < 1
    assert (np.abs(calibrated_z) <= 3).mean() >= 0.9


def test_calibrated_estimate_and_stderr_are_the_map_applied_row_by_row() -> None:
    """With a map, the estimate is the mean of each row's q[predicted class, bin] and the
    stderr ``√(Σ q (1 − q)) / N``, computed here row by row from the fitted reference."""
    rng = np.random.default_rng(9)
    ref_probs, ref_labels = _miscalibrated(rng, 3000)
    reference = ReferenceProfile.from_data(predict_proba=ref_probs, labels=ref_labels)
    probs, labels = _miscalibrated(rng, 5000)
    points = window_points(probs, labels, reference=reference)
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    bins = np.minimum((confidence * 15).astype(int), 14)
    ref_predicted, ref_confidence = ref_probs.argmax(axis=1), ref_probs.max(axis=1)
    ref_bins = np.minimum((ref_confidence * 15).astype(int), 14)
    q = np.empty(probs.shape[0])
    for i, (j, b) in enumerate(zip(predicted, bins, strict=True)):
        in_bin = ref_bins == b
        mine = in_bin & (ref_predicted == j)
        n, big_n = mine.sum(), in_bin.sum()
        right = ref_predicted == ref_labels
        pooled_mean = ref_confidence[in_bin].mean() if big_n else (b + 0.5) / 15
        pooled = (right[in_bin].sum() + 10 * pooled_mean) / (big_n + 10)
        q[i] = (right[mine].sum() + 10 * pooled) / (n + 10)
    assert value(points, PREFIX + "overall_accuracy") == pytest.approx(q.mean(), rel=1e-12)
    stderr = np.sqrt((q * (1 - q)).sum()) / q.size
    assert value(points, PREFIX + "overall_accuracy_stderr") == pytest.approx(stderr, rel=1e-12)


def test_a_calibration_map_for_another_class_count_is_refused() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=200)
    reference = ReferenceProfile.from_data(predict_proba=probs, labels=draw_labels(rng, probs))
    state = WindowState(4, 10)
    state.update(rng.dirichlet(np.ones(4), size=10))
    with pytest.raises(ValueError, match="3 classes"):
        state.metrics(reference=reference)
