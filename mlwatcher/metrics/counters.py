"""Exact counters over every row of a window (as opposed to the sampled reservoir)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from mlwatcher.metrics import kernels
from mlwatcher.metrics.calibration import N_BINS
from mlwatcher.metrics.inputs import FAST_SUM_TOLERANCE


def _field_shapes(n_classes: int, n_features: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """The counters' fields and shapes: first those of the int64 ``counts`` buffer, then
    those of the float64 ``totals`` buffer, each stored in this order."""
    c, f, b = n_classes, n_features, N_BINS
    counts = {
        "rows_seen": (),  # first: ExactCounters.rows_seen reads counts[0]
        "rows_without_features": (),
        "pred_counts": (c,),
        "confusion": (c, c),  # [label, predicted]
        "nan_counts": (f,),
        "inf_counts": (f,),
        "confidence_rows": (c, b),
        "reliability_rows": (b,),
        "reliability_correct": (b,),  # right after reliability_rows: the loop writes both
    }
    totals = {
        "log_loss_sum": (),
        "brier_sum": (),
        "confidence_sq_sum": (),
        "expected_by_predicted": (c, c),  # [predicted, class]: rows stay contiguous
        "reliability_confidence_sum": (b,),
    }
    return {"counts": tuple(counts.items()), "totals": tuple(totals.items())}  # type: ignore[dict-item]


class _Place(NamedTuple):
    buffer: str
    start: int
    stop: int
    shape: tuple[int, ...]


class _Layout(NamedTuple):
    sizes: dict[str, int]
    places: dict[str, _Place]
    #: where each field :func:`kernels.count_batch` writes starts (its ``starts`` argument)
    kernel_starts: np.ndarray
    #: the positions of the label-dependent counters (what a delayed label adds)
    label_positions: dict[str, np.ndarray]


@lru_cache(maxsize=256)
def _layout(n_classes: int, n_features: int) -> _Layout:
    sizes: dict[str, int] = {}
    places: dict[str, _Place] = {}
    for buffer, fields in _field_shapes(n_classes, n_features).items():
        start = 0
        for name, shape in fields:
            stop = start + int(np.prod(shape, dtype=np.int64))
            places[name] = _Place(buffer, start, stop, shape)
            start = stop
        sizes[buffer] = start
    starts = np.array([places[name].start for name in kernels.COUNT_BATCH_FIELDS], np.int64)
    label_positions = {
        buffer: np.concatenate(
            [
                np.arange(places[name].start, places[name].stop)
                for name in _LABEL_FIELDS
                if places[name].buffer == buffer
            ]
        )
        for buffer in sizes
    }
    return _Layout(sizes, places, starts, label_positions)


#: what the labels alone decide: the counters a delayed label adds to its window
_LABEL_FIELDS = (
    "confusion",
    "reliability_rows",
    "reliability_correct",
    "log_loss_sum",
    "brier_sum",
    "reliability_confidence_sum",
)
#: fields serialised as scalars in the metadata (the rest as arrays)
_SCALARS = ("rows_seen", "rows_without_features", "log_loss_sum", "brier_sum", "confidence_sq_sum")
#: arrays serialised under their own names, in this order (``expected_confusion`` is the
#: transposed view; the categorical arrays, of any size, are not in the buffers)
_ARRAYS = (
    "pred_counts",
    "confusion",
    "nan_counts",
    "inf_counts",
    "cat_feature",
    "cat_value",
    "cat_count",
    "expected_confusion",
    "confidence_rows",
    "reliability_rows",
    "reliability_confidence_sum",
    "reliability_correct",
)
_CATEGORIES = ("cat_feature", "cat_value", "cat_count")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# Shared by every counter without categories (the arrays are replaced, never written).
_NO_CATEGORIES = (
    _read_only(np.empty(0, np.int32)),
    _read_only(np.empty(0, np.float64)),
    _read_only(np.empty(0, np.int64)),
)


def _empty_categories() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _NO_CATEGORIES


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


def categories_of(
    features: np.ndarray, categorical: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, value, count) of the finite values of the ``categorical`` columns of the
    row-major ``features``, sorted by feature then value."""
    cats = features[:, categorical]
    finite = np.isfinite(cats)
    feat = np.broadcast_to(np.asarray(categorical, np.int32), cats.shape)[finite]
    value = cats[finite]
    return _group_categories(feat, value, np.ones(value.size, np.int64))


def _field(name: str, doc: str) -> property:
    def get(self: ExactCounters) -> Any:
        place = self._layout.places[name]
        values = getattr(self, place.buffer)[place.start : place.stop]
        if not place.shape:
            return values[0].item()
        return values.reshape(place.shape)

    def put(self: ExactCounters, value: Any) -> None:
        place = self._layout.places[name]
        target = getattr(self, place.buffer)[place.start : place.stop]
        target[...] = np.reshape(value, -1) if place.shape else value

    return property(get, put, doc=doc)


class ExactCounters:
    """Counters that are summed over all rows; adding two of them merges their windows.

    ``confusion[i, j]`` counts rows whose label is class ``i`` and prediction class ``j``.
    Categorical value counts are kept as three parallel arrays sorted by (feature, value).
    ``expected_confusion[c, j]`` sums ``p_c`` over every row predicted ``j`` (labels or not);
    the ``confidence_*``, ``reliability_*`` and Brier counters are described in
    :mod:`mlwatcher.metrics.calibration`.

    Every counter but the categorical ones lives in one of two flat buffers, ``counts``
    (int64) and ``totals`` (float64), laid out by :func:`_field_shapes`; the named
    attributes are views. Adding counters adds the two buffers, and the update's compiled
    loop (:func:`kernels.count_batch`) writes a batch's counters into them.
    """

    __slots__ = (
        "_layout",
        "cat_count",
        "cat_feature",
        "cat_value",
        "counts",
        "n_classes",
        "n_features",
        "totals",
    )

    def __init__(self, n_classes: int, n_features: int, **fields: Any) -> None:
        self.n_classes = n_classes
        self.n_features = n_features
        self._layout = layout = _layout(n_classes, n_features)
        self.counts = np.zeros(layout.sizes["counts"], np.int64)
        self.totals = np.zeros(layout.sizes["totals"], np.float64)
        self.cat_feature, self.cat_value, self.cat_count = _empty_categories()
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def rows_seen(self) -> int:
        """Rows counted (read on every update: the first count, not a generic field)."""
        return int(self.counts[0])

    @rows_seen.setter
    def rows_seen(self, value: int) -> None:
        self.counts[0] = value

    rows_without_features = _field("rows_without_features", "rows of batches without features")
    pred_counts = _field("pred_counts", "(C,) rows per predicted class")
    confusion = _field("confusion", "(C, C) labelled rows per [label, predicted]")
    nan_counts = _field("nan_counts", "(F,) NaN values per feature")
    inf_counts = _field("inf_counts", "(F,) ±inf values per feature")
    confidence_rows = _field("confidence_rows", "(C, N_BINS) rows per predicted class and bin")
    reliability_rows = _field("reliability_rows", "(N_BINS,) labelled rows per bin")
    reliability_correct = _field("reliability_correct", "(N_BINS,) correct predictions per bin")
    log_loss_sum = _field("log_loss_sum", "Σ -log(clip(p_label)) over labelled rows")
    brier_sum = _field("brier_sum", "Σ Σ_c (p_c - 1[label = c])² over labelled rows")
    confidence_sq_sum = _field("confidence_sq_sum", "Σ confidence² over every row")
    expected_by_predicted = _field("expected_by_predicted", "expected_confusion transposed")
    reliability_confidence_sum = _field("reliability_confidence_sum", "(N_BINS,) Σ confidence")

    @property
    def expected_confusion(self) -> np.ndarray:
        """(C, C): ``[c, j]`` = Σ p_c over the rows predicted ``j`` (a view)."""
        return self.expected_by_predicted.T  # type: ignore[no-any-return]

    @expected_confusion.setter
    def expected_confusion(self, value: np.ndarray) -> None:
        self.expected_by_predicted = np.asarray(value).T

    def set_categories(self, categories: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Set the (feature, value, count) arrays, sorted by feature then value."""
        self.cat_feature, self.cat_value, self.cat_count = categories

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
        out = cls(
            n_classes,
            n_features,
            rows_seen=n_rows,
            pred_counts=counts.pred_counts,
            expected_confusion=counts.expected_confusion,
            confidence_rows=counts.confidence_rows,
            confidence_sq_sum=counts.confidence_sq_sum,
        )
        if labels is not None:
            out.confusion = counts.confusion
            out.reliability_rows = counts.reliability_rows
            out.reliability_confidence_sum = counts.reliability_confidence_sum
            out.reliability_correct = counts.reliability_correct
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
                    out.set_categories(categories_of(features, categorical))
        return out

    @classmethod
    def from_plain_batch(
        cls,
        probs: np.ndarray,
        threshold: float,
        labels: np.ndarray,
        features: np.ndarray,
        n_features: int,
        categorical: tuple[int, ...],
    ) -> ExactCounters | None:
        """:meth:`from_batch` of a batch ``inputs.plain_batch`` gave, checked and counted in
        one compiled call (:func:`kernels.count_batch`), with its predicted classes at
        ``threshold``; None when the fast check refuses it (the contract then decides)."""
        out = cls(probs.shape[1], n_features)
        status = kernels.count_batch(
            probs,
            threshold,
            labels,
            features,
            FAST_SUM_TOLERANCE,
            N_BINS,
            out._layout.kernel_starts,
            out.counts,
            out.totals,
        )
        if status != 0:
            return None
        if categorical and features.shape[0]:
            out.set_categories(categories_of(features, categorical))
        return out

    def add(self, other: ExactCounters) -> None:
        """Add ``other``'s counts into this object (in place)."""
        if (other.n_classes, other.n_features) != (self.n_classes, self.n_features):
            raise ValueError(
                f"counters: cannot add counters of shape ({other.n_classes} classes,"
                f" {other.n_features} features) to ({self.n_classes}, {self.n_features})"
            )
        self.counts += other.counts
        self.totals += other.totals
        self.add_categories(other)

    def add_categories(self, other: ExactCounters) -> None:
        """Add ``other``'s category counts (the part of :meth:`add` outside the two buffers)."""
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
        out = cls(full.n_classes, 0)
        out.add_labels(full)
        return out

    def add_labels(self, other: ExactCounters) -> None:
        """Add only ``other``'s label-dependent counters (any feature count)."""
        if other.n_classes != self.n_classes:
            raise ValueError(
                f"counters: cannot add labels of {other.n_classes} classes to {self.n_classes}"
            )
        # where the label fields sit depends on the feature count (the per-feature counts
        # come first): each side's own layout says
        for buffer in ("counts", "totals"):
            mine = self._layout.label_positions[buffer]
            theirs = other._layout.label_positions[buffer]
            getattr(self, buffer)[mine] += getattr(other, buffer)[theirs]

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
        meta = {name: getattr(self, name) for name in _SCALARS}
        arrays = {f"{prefix}{name}": getattr(self, name) for name in _ARRAYS}
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
        """The counters :meth:`to_parts` gave (counts of any integer type, e.g. a delta's
        int32)."""
        out = cls(
            n_classes,
            n_features,
            **{name: meta[name] for name in _SCALARS},
            **{name: arrays[f"{prefix}{name}"] for name in _ARRAYS if name not in _CATEGORIES},
        )
        out.cat_feature = arrays[f"{prefix}cat_feature"]
        out.cat_value = arrays[f"{prefix}cat_value"]
        out.cat_count = arrays[f"{prefix}cat_count"].astype(np.int64, copy=False)
        return out
