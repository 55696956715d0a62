"""Exact counters over every row of a window (as opposed to the sampled reservoir)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwatcher.metrics import kernels
from mlwatcher.metrics.calibration import N_BINS

#: the calibration and estimation counters, serialised under their own names
_SUMMED_ARRAYS = (
    "expected_confusion",
    "confidence_rows",
    "reliability_rows",
    "reliability_confidence_sum",
    "reliability_correct",
)
#: what the labels alone decide: the counters a delayed label adds to its window
_LABEL_ARRAYS = (
    "confusion",
    "reliability_rows",
    "reliability_confidence_sum",
    "reliability_correct",
)
_LABEL_SUMS = ("log_loss_sum", "brier_sum")

#: arrays holding counts: int64 in memory, any integer type in bytes (deltas use int32)
_COUNT_ARRAYS = frozenset(
    (
        "pred_counts",
        "confusion",
        "nan_counts",
        "inf_counts",
        "cat_count",
        "confidence_rows",
        "reliability_rows",
        "reliability_correct",
    )
)


def _empty_categories() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.int64)


def _group_categories(
    feat: np.ndarray, value: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum counts of equal (feature, value) pairs; output sorted by feature then value."""
    if feat.size == 0:
        return _empty_categories()
    order = np.lexsort((value, feat))
    feat, value, count = feat[order], value[order], count[order]
    starts = np.flatnonzero(
        np.concatenate(([True], (feat[1:] != feat[:-1]) | (value[1:] != value[:-1])))
    )
    return feat[starts], value[starts], np.add.reduceat(count, starts)


@dataclass(slots=True)
class ExactCounters:
    """Counters that are summed over all rows; adding two of them merges their windows.

    ``confusion[i, j]`` counts rows whose label is class ``i`` and prediction class ``j``.
    Categorical value counts are kept as three parallel arrays sorted by (feature, value).
    ``expected_confusion[c, j]`` sums ``p_c`` over every row predicted ``j`` (labels or not);
    the ``confidence_*``, ``reliability_*`` and Brier counters are described in
    :mod:`mlwatcher.metrics.calibration`.
    """

    n_classes: int
    n_features: int
    rows_seen: int = 0
    rows_without_features: int = 0
    log_loss_sum: float = 0.0
    pred_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]
    nan_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    inf_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    cat_feature: np.ndarray = field(default=None)  # type: ignore[assignment]
    cat_value: np.ndarray = field(default=None)  # type: ignore[assignment]
    cat_count: np.ndarray = field(default=None)  # type: ignore[assignment]
    brier_sum: float = 0.0
    expected_confusion: np.ndarray = field(default=None)  # type: ignore[assignment]
    confidence_rows: np.ndarray = field(default=None)  # type: ignore[assignment]
    confidence_sq_sum: float = 0.0
    reliability_rows: np.ndarray = field(default=None)  # type: ignore[assignment]
    reliability_confidence_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    reliability_correct: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.pred_counts is None:
            self.pred_counts = np.zeros(self.n_classes, np.int64)
        if self.confusion is None:
            self.confusion = np.zeros((self.n_classes, self.n_classes), np.int64)
        if self.nan_counts is None:
            self.nan_counts = np.zeros(self.n_features, np.int64)
        if self.inf_counts is None:
            self.inf_counts = np.zeros(self.n_features, np.int64)
        if self.cat_feature is None:
            self.cat_feature, self.cat_value, self.cat_count = _empty_categories()
        per_class_bin = (self.n_classes, N_BINS)
        if self.expected_confusion is None:
            self.expected_confusion = np.zeros((self.n_classes, self.n_classes))
        if self.confidence_rows is None:
            self.confidence_rows = np.zeros(per_class_bin, np.int64)
        if self.reliability_rows is None:
            self.reliability_rows = np.zeros(N_BINS, np.int64)
        if self.reliability_confidence_sum is None:
            self.reliability_confidence_sum = np.zeros(N_BINS)
        if self.reliability_correct is None:
            self.reliability_correct = np.zeros(N_BINS, np.int64)

    @property
    def labelled_rows(self) -> int:
        return int(self.confusion.sum())

    @classmethod
    def from_batch(
        cls,
        probs: np.ndarray,
        predicted: np.ndarray,
        labels: np.ndarray | None,
        features: np.ndarray | None,
        n_features: int,
        categorical: tuple[int, ...],
    ) -> ExactCounters:
        """Counters of one batch (``features`` row-major ``(n, n_features)`` or None)."""
        n_rows, n_classes = probs.shape
        counts = kernels.batch_counts(probs, predicted, labels, N_BINS)
        # every array given (the label ones are zeros without labels): no default to build
        out = cls(
            n_classes=n_classes,
            n_features=n_features,
            rows_seen=n_rows,
            pred_counts=counts.pred_counts,
            expected_confusion=counts.expected_confusion,
            confidence_rows=counts.confidence_rows,
            confidence_sq_sum=counts.confidence_sq_sum,
            confusion=counts.confusion,
            reliability_rows=counts.reliability_rows,
            reliability_confidence_sum=counts.reliability_confidence_sum,
            reliability_correct=counts.reliability_correct,
        )
        if labels is not None:
            out.log_loss_sum = counts.log_loss_sum
            out.brier_sum = counts.brier_sum
        if n_features:
            if features is None:
                out.rows_without_features = n_rows
            else:
                # usually every value is finite, and then so is their sum (NaN and inf
                # propagate; an overflow only sends us to the exact count): one pass
                if not np.isfinite(features.sum()):
                    out.nan_counts = np.isnan(features).sum(axis=0, dtype=np.int64)
                    out.inf_counts = np.isinf(features).sum(axis=0, dtype=np.int64)
                if categorical:
                    cats = features[:, categorical]
                    finite = np.isfinite(cats)
                    feat = np.broadcast_to(np.asarray(categorical, np.int32), cats.shape)[finite]
                    value = cats[finite]
                    out.cat_feature, out.cat_value, out.cat_count = _group_categories(
                        feat, value, np.ones(value.size, np.int64)
                    )
        return out

    def add(self, other: ExactCounters) -> None:
        """Add ``other``'s counts into this object (in place)."""
        if (other.n_classes, other.n_features) != (self.n_classes, self.n_features):
            raise ValueError(
                f"counters: cannot add counters of shape ({other.n_classes} classes,"
                f" {other.n_features} features) to ({self.n_classes}, {self.n_features})"
            )
        self.rows_seen += other.rows_seen
        self.rows_without_features += other.rows_without_features
        self.log_loss_sum += other.log_loss_sum
        self.pred_counts += other.pred_counts
        self.confusion += other.confusion
        self.nan_counts += other.nan_counts
        self.inf_counts += other.inf_counts
        self.brier_sum += other.brier_sum
        self.expected_confusion += other.expected_confusion
        self.confidence_rows += other.confidence_rows
        self.confidence_sq_sum += other.confidence_sq_sum
        self.reliability_rows += other.reliability_rows
        self.reliability_confidence_sum += other.reliability_confidence_sum
        self.reliability_correct += other.reliability_correct
        if other.cat_feature.size:
            self.cat_feature, self.cat_value, self.cat_count = _group_categories(
                np.concatenate((self.cat_feature, other.cat_feature)),
                np.concatenate((self.cat_value, other.cat_value)),
                np.concatenate((self.cat_count, other.cat_count)),
            )

    @classmethod
    def of_labels(
        cls, probs: np.ndarray, predicted: np.ndarray, labels: np.ndarray
    ) -> ExactCounters:
        """Only the label-dependent counters of labelled rows (every ``labels[i] >= 0``).

        What delayed labels add to a window: the rows themselves were counted when their
        predictions arrived, so ``rows_seen``, the prediction counts and the estimation and
        confidence counters stay zero here.
        """
        full = cls.from_batch(probs, predicted, labels, None, 0, ())
        out = cls(n_classes=full.n_classes, n_features=0)
        out.add_labels(full)
        return out

    def add_labels(self, other: ExactCounters) -> None:
        """Add only ``other``'s label-dependent counters (any feature count)."""
        if other.n_classes != self.n_classes:
            raise ValueError(
                f"counters: cannot add labels of {other.n_classes} classes to {self.n_classes}"
            )
        for name in _LABEL_ARRAYS:
            getattr(self, name).__iadd__(getattr(other, name))
        for name in _LABEL_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def labels_only(self) -> ExactCounters:
        """A copy holding just the label-dependent counters."""
        out = ExactCounters(self.n_classes, 0)
        out.add_labels(self)
        return out

    def category_counts(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) of one categorical feature, values ascending."""
        sel = self.cat_feature == feature
        return self.cat_value[sel], self.cat_count[sel]

    def copy(self) -> ExactCounters:
        out = ExactCounters(self.n_classes, self.n_features)
        out.add(self)
        return out

    def to_parts(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "rows_seen": self.rows_seen,
            "rows_without_features": self.rows_without_features,
            "log_loss_sum": self.log_loss_sum,
            "brier_sum": self.brier_sum,
            "confidence_sq_sum": self.confidence_sq_sum,
        }
        arrays = {
            f"{prefix}pred_counts": self.pred_counts,
            f"{prefix}confusion": self.confusion,
            f"{prefix}nan_counts": self.nan_counts,
            f"{prefix}inf_counts": self.inf_counts,
            f"{prefix}cat_feature": self.cat_feature,
            f"{prefix}cat_value": self.cat_value,
            f"{prefix}cat_count": self.cat_count,
            **{f"{prefix}{name}": getattr(self, name) for name in _SUMMED_ARRAYS},
        }
        return meta, arrays

    @classmethod
    def from_parts(
        cls,
        n_classes: int,
        n_features: int,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        prefix: str,
    ) -> ExactCounters:
        arrays = {
            name: value.astype(np.int64)
            if name.removeprefix(prefix) in _COUNT_ARRAYS and value.dtype != np.int64
            else value
            for name, value in arrays.items()
        }
        return cls(
            n_classes=n_classes,
            n_features=n_features,
            rows_seen=int(meta["rows_seen"]),
            rows_without_features=int(meta["rows_without_features"]),
            log_loss_sum=float(meta["log_loss_sum"]),
            pred_counts=arrays[f"{prefix}pred_counts"],
            confusion=arrays[f"{prefix}confusion"],
            nan_counts=arrays[f"{prefix}nan_counts"],
            inf_counts=arrays[f"{prefix}inf_counts"],
            cat_feature=arrays[f"{prefix}cat_feature"],
            cat_value=arrays[f"{prefix}cat_value"],
            cat_count=arrays[f"{prefix}cat_count"],
            brier_sum=float(meta["brier_sum"]),
            confidence_sq_sum=float(meta["confidence_sq_sum"]),
            **{name: arrays[f"{prefix}{name}"] for name in _SUMMED_ARRAYS},
        )
