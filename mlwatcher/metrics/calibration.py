"""Calibration: is the model's confidence a probability? Counters, metrics and the map.

The *confidence* of a row is the probability the model gives to the class it predicts,
``p[pred]`` (the top-label probability; for a binary model with a threshold other than 0.5
the predicted class need not be the larger one). Confidences fall into ``N_BINS`` equal-width
bins: bin ``k`` holds ``k/15 <= p < (k+1)/15``, the last bin includes 1.

Every counter here is a sum over rows, so a window's counters are the sums of its batches'
(exact and mergeable, like the confusion matrix). Three kinds:

* over *every* row, rows per predicted class ``j`` and bin ``b``, and Σ p² — what
  performance estimation needs to apply a :class:`CalibrationMap` at window close, and
  the standard error of the raw estimate;
* per bin, over *labelled* rows: rows, Σ p and correct predictions — the reliability
  diagram and the expected calibration error;
* the Brier sum over labelled rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlwatcher.metrics.inputs import MetricInputError, predicted_classes
from mlwatcher.point import COUNTER, GAUGE, PointBlock

N_BINS = 15
#: reference rows a bin needs before its accuracy outweighs the raw probability (see the map)
PRIOR_ROWS = 10.0


# per bin in turn: its rows, its mean confidence and its accuracy
_BIN_POINTS = PointBlock.of(
    ["calibration_bin_rows", "calibration_bin_confidence", "calibration_bin_accuracy"] * N_BINS,
    [COUNTER, GAUGE, GAUGE] * N_BINS,
    extra=[{"bin": str(b)} for b in range(N_BINS) for _ in range(3)],
)


class PointAdder(Protocol):
    """Where the metric functions put their points (``compute``'s collector, which drops
    non-finite values)."""

    def add(self, what: str, target_type: str, value: float, **props: Any) -> None: ...

    def add_rows(self, block: PointBlock, values: Sequence[float] | np.ndarray) -> None: ...


class LabelledCounters(Protocol):
    """The counters :func:`add_points` reads (an ``ExactCounters``)."""

    n_classes: int
    brier_sum: float
    reliability_rows: np.ndarray
    reliability_confidence_sum: np.ndarray
    reliability_correct: np.ndarray

    @property
    def labelled_rows(self) -> int: ...


def confidence_bins(confidence: np.ndarray) -> np.ndarray:
    """Bin index ``floor(15 p)`` of each confidence in [0, 1] (validated), 1.0 → bin 14."""
    bins = (confidence * N_BINS).astype(np.intp)
    np.minimum(bins, N_BINS - 1, out=bins)
    return bins


def confidence_of(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The probability of the predicted class of each row."""
    n_rows, n_classes = probs.shape
    return probs.ravel().take(np.arange(0, n_rows * n_classes, n_classes) + predicted)


def confidence_counts(
    confidence: np.ndarray, bins: np.ndarray, predicted: np.ndarray, n_classes: int
) -> tuple[np.ndarray, float]:
    """Rows per (predicted class, bin), shape ``(C, N_BINS)``, and Σ p² over the rows."""
    index = predicted * N_BINS + bins
    rows = np.bincount(index, minlength=n_classes * N_BINS).reshape(n_classes, N_BINS)
    return rows.astype(np.int64, copy=False), float(np.dot(confidence, confidence))


def brier_score(total: float, labelled_rows: int, n_classes: int) -> float:
    """Mean Brier score, as ``sklearn.metrics.brier_score_loss(scale_by_half="auto")``.

    Multi-class: ``mean Σ_c (p_c − 1[y = c])²`` in [0, 2]. Binary: half of it, which is the
    customary ``mean (p_1 − y)²`` in [0, 1].
    """
    mean = total / labelled_rows
    return mean / 2 if n_classes == 2 else mean


def expected_calibration_error(rows: np.ndarray, total: np.ndarray, hits: np.ndarray) -> float:
    """Top-label ECE: ``Σ_b (n_b / N) · |accuracy_b − mean confidence_b|`` over the 15 bins."""
    n = rows.sum()
    return float(np.abs(hits - total).sum() / n)


def add_points(out: PointAdder, counters: LabelledCounters) -> None:
    """``brier_score``, ``expected_calibration_error`` and the reliability-diagram points."""
    n = counters.labelled_rows
    if n == 0:
        return
    out.add("brier_score", GAUGE, brier_score(counters.brier_sum, n, counters.n_classes))
    rows, total, hits = (
        counters.reliability_rows,
        counters.reliability_confidence_sum,
        counters.reliability_correct,
    )
    out.add("expected_calibration_error", GAUGE, expected_calibration_error(rows, total, hits))
    # An empty bin's mean confidence and accuracy are 0/0: not finite, so dropped.
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = np.column_stack((rows, total / rows, hits / rows))
    out.add_rows(_BIN_POINTS, per_bin)


@dataclass(slots=True)
class CalibrationMap:
    """Histogram binning of the top-label probability, per predicted class, with shrinkage.

    Fitted on labelled reference rows. In confidence bin ``b``, let ``N`` be the reference
    rows (of any predicted class), ``A`` the share of them that were right and ``m`` their
    mean confidence (the bin's centre when ``N = 0``), and ``n``, ``a`` the rows predicted
    ``j`` and their share right. Every row predicted ``j`` with its confidence in bin ``b``
    is then right with probability

        q[j, b] = w · a + (1 − w) · (W · A + (1 − W) · m),
        w = n / (n + PRIOR_ROWS),  W = N / (N + PRIOR_ROWS)

    Well-populated bins give classic histogram binning (``q = a``, Zadrozny & Elkan 2001);
    a class with few reference rows in the bin borrows the bin's accuracy over all classes,
    and a bin with few rows of any class keeps the model's own (mean) probability. The map
    is constant within each fixed bin, so Σ q and Σ q(1 − q) over a window follow exactly
    from the rows per (class, bin), without keeping the rows.
    """

    rows: np.ndarray  # (C, N_BINS) int64
    confidence_sum: np.ndarray  # (C, N_BINS) float64
    correct: np.ndarray  # (C, N_BINS) int64
    prior_rows: float = PRIOR_ROWS

    @property
    def n_classes(self) -> int:
        return int(self.rows.shape[0])

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> CalibrationMap:
        """The map of labelled rows (``labels`` ``-1`` = no label, such rows are ignored)."""
        has = labels >= 0
        if not has.any():
            raise MetricInputError("labels: the reference has no labelled row to calibrate on")
        probs, labels = probs[has], labels[has]
        predicted = predicted_classes(probs, threshold)
        confidence = confidence_of(probs, predicted)
        bins = confidence_bins(confidence)
        rows, _ = confidence_counts(confidence, bins, predicted, probs.shape[1])
        index = predicted * N_BINS + bins
        total = np.bincount(index, weights=confidence, minlength=rows.size)
        hits = np.bincount(index, weights=predicted == labels, minlength=rows.size)
        return cls(rows, total.reshape(rows.shape), hits.reshape(rows.shape).astype(np.int64))

    def probabilities(self) -> np.ndarray:
        """``q[j, b]``: the probability that a row predicted ``j`` in bin ``b`` is right."""
        rows, correct = self.rows, self.correct
        pooled_rows, pooled_correct = rows.sum(axis=0), correct.sum(axis=0)
        centre = (np.arange(N_BINS) + 0.5) / N_BINS
        pooled_confidence = np.divide(
            self.confidence_sum.sum(axis=0), pooled_rows, out=centre, where=pooled_rows > 0
        )
        pooled_a = np.divide(
            pooled_correct, pooled_rows, out=np.zeros(N_BINS), where=pooled_rows > 0
        )
        a = np.divide(correct, rows, out=np.zeros(rows.shape), where=rows > 0)
        w = rows / (rows + self.prior_rows)
        pooled_w = pooled_rows / (pooled_rows + self.prior_rows)
        pooled = pooled_w * pooled_a + (1 - pooled_w) * pooled_confidence
        return w * a + (1 - w) * pooled

    def expected_correct(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """Per predicted class Σ q over a window whose rows per (predicted class, bin) are
        ``rows``, and Σ q(1 − q) over all of them."""
        if self.n_classes != rows.shape[0]:
            raise MetricInputError(
                f"reference: calibration map has {self.n_classes} classes,"
                f" the window has {rows.shape[0]}"
            )
        q = self.probabilities()
        return (rows * q).sum(axis=1), float((rows * q * (1 - q)).sum())

    def reliability(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The reference's reliability diagram: rows, Σ confidence, correct per bin."""
        return self.rows.sum(axis=0), self.confidence_sum.sum(axis=0), self.correct.sum(axis=0)

    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"calibration_prior_rows": self.prior_rows}
        arrays = {
            "calibration_rows": self.rows,
            "calibration_confidence_sum": self.confidence_sum,
            "calibration_correct": self.correct,
        }
        return meta, arrays

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> CalibrationMap:
        return cls(
            arrays["calibration_rows"].astype(np.int64),
            arrays["calibration_confidence_sum"].astype(np.float64),
            arrays["calibration_correct"].astype(np.int64),
            float(meta["calibration_prior_rows"]),
        )
