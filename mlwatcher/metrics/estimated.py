"""Performance without labels: confidence-based estimates of the label metrics (CBPE).

If a row's probabilities are calibrated, its true class is ``c`` with probability ``p_c``.
Summed over a window, the *expected confusion matrix* is

    E[c, j] = Σ over rows predicted j of p_c

and every label metric has an estimate: the same formula applied to ``E`` instead of the
realised confusion (per-class one-vs-rest accuracy, precision, recall, F1 and their macro,
micro and weighted averages, see :func:`scores`). This is NannyML's confidence-based
performance estimation, computed exactly over every row of the window from exact counters.

With a :class:`~mlwatcher.metrics.calibration.CalibrationMap` (from a reference profile
built with labels) the diagonal uses the calibrated probability ``q`` of each row's
predicted class; the rest of each column, ``pred_j − E[j, j]``, is shared among the other
classes in proportion to their raw expected counts, so every column still sums to the rows
predicted ``j``.

Accuracy is a mean of independent Bernoulli(``q_i``) outcomes, so its estimate
``Σ q_i / N`` comes with the standard error ``√(Σ q_i (1 − q_i)) / N``: the spread of the
realised accuracy around the estimate when the probabilities are calibrated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mlwatcher.metrics import blocks, kernels
from mlwatcher.metrics.calibration import CalibrationMap, PointAdder
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.point import GAUGE

PREFIX = "estimated_"


class Scores(NamedTuple):
    """The label metrics of one confusion matrix (see :func:`scores`)."""

    #: per class (rows): accuracy, precision, recall, f1 (the order of ``SCORES``)
    per_class: np.ndarray
    #: precision, recall, f1, each macro, micro, weighted (the order of ``blocks.averages``)
    averaged: np.ndarray
    overall_accuracy: float


def scores(confusion: np.ndarray) -> Scores:
    """Label metrics of a confusion matrix (``[true, predicted]``, counts or expectations).

    Per class (one-vs-rest, scikit-learn's ``zero_division=0``): ``accuracy = (TP+TN)/N``,
    ``precision = TP/(TP+FP)``, ``recall = TP/(TP+FN)``, ``f1 = 2TP/(2TP+FP+FN)``;
    ``overall_accuracy = trace/N``; averages ``macro`` (mean over classes), ``micro`` (from
    summed TP, FP, FN) and ``weighted`` (by support, the row sums).
    """
    # one compiled call: as ~25 NumPy calls on a 10 x 10 matrix it was a tenth of a close
    return Scores(*kernels.confusion_scores(confusion))


def expected_confusion(
    counters: ExactCounters, calibration: CalibrationMap | None = None
) -> tuple[np.ndarray, float]:
    """The expected confusion matrix and ``Σ q_i (1 − q_i)`` (the accuracy's variance × N²)."""
    if calibration is None:
        confusion = counters.expected_confusion.copy()
        variance = float(np.trace(confusion) - counters.confidence_sq_sum)
        return confusion, max(variance, 0.0)
    diagonal, variance = calibration.expected_correct(counters.confidence_rows)
    confusion = counters.expected_confusion.copy()
    np.fill_diagonal(confusion, 0.0)
    wrong = counters.pred_counts - diagonal  # expected wrong rows of each predicted class
    raw_wrong = confusion.sum(axis=0)
    others = counters.n_classes - 1
    share = np.where(
        raw_wrong > 0, confusion / np.where(raw_wrong > 0, raw_wrong, 1.0), 1.0 / others
    )
    np.fill_diagonal(share, 0.0)
    confusion = share * wrong
    np.fill_diagonal(confusion, diagonal)
    return confusion, max(variance, 0.0)


#: the per-class scores of :func:`scores`, in the order the records carry them
SCORES = ("accuracy", "precision", "recall", "f1")


def accuracy_stderr(accuracy: float, rows: int) -> float:
    """Binomial standard error of a realised accuracy: ``√(acc (1 − acc) / N)``."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / rows)


def add_points(
    out: PointAdder,
    counters: ExactCounters,
    classes: list[str],
    calibration: CalibrationMap | None,
) -> None:
    """The ``estimated_*`` points of a non-empty window, and ``overall_accuracy_stderr``."""
    labelled = counters.labelled_rows
    if labelled:
        accuracy = np.trace(counters.confusion) / labelled
        out.add("overall_accuracy_stderr", GAUGE, accuracy_stderr(accuracy, labelled))
    rows = counters.rows_seen
    if rows == 0:
        return
    confusion, variance = expected_confusion(counters, calibration)
    values = scores(confusion)
    out.add(PREFIX + "overall_accuracy", GAUGE, values.overall_accuracy)
    out.add(PREFIX + "overall_accuracy_stderr", GAUGE, math.sqrt(variance) / rows)
    # Per class in turn: its four scores, then its row of the expected confusion matrix.
    names = tuple(classes)
    whats = tuple(PREFIX + what for what in SCORES)
    per_class = blocks.per_class(names, whats, (GAUGE,) * 4, (PREFIX + "confusion_count", GAUGE))
    out.add_rows(per_class, np.column_stack((values.per_class, confusion)))
    out.add_rows(blocks.averages(PREFIX), values.averaged)
