"""Turn a window's exact counters and reservoir sample into metric points."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from mlwatcher.metrics import blocks, calibration, columns, drift, estimated
from mlwatcher.metrics.calibration import PointAdder
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.metrics.inputs import (
    MetricInputError,
    as_features,
    as_probabilities,
    categorical_indices,
    check_categorical,
    normalise_labels,
    predicted_classes,
)
from mlwatcher.metrics.reference import ReferenceProfile
from mlwatcher.metrics.stats import STATS, row_summaries
from mlwatcher.point import COUNTER, GAUGE, Point, PointBlock
from mlwatcher.validation import check_threshold


class PointSink(PointAdder, Protocol):
    """Where the close puts its points: a list of ``Point`` objects (:class:`PointList`) or
    columns (:class:`PointColumnsBuilder`); both drop non-finite values."""

    def add_per_feature(
        self, what: str, values: np.ndarray, names: list[str], stat: str | None = None
    ) -> None: ...

    def add_interleaved(
        self,
        whats: Sequence[str],
        columns: Sequence[np.ndarray],
        names: list[str],
        target_type: str,
    ) -> None: ...


class PointList:
    """Collects points, silently dropping any value that is not finite."""

    def __init__(self) -> None:
        self.items: list[Point] = []

    def add(self, what: str, target_type: str, value: float, **props: Any) -> None:
        value = float(value)
        if math.isfinite(value):
            self.items.append(Point(what, target_type, value, **props))

    def add_rows(self, block: PointBlock, values: Sequence[float] | np.ndarray) -> None:
        """The block's points with these values (one per point), non-finite values dropped."""
        self.items.extend(block.points(np.asarray(values, dtype=np.float64).ravel().tolist()))

    def add_per_feature(
        self, what: str, values: np.ndarray, names: list[str], stat: str | None = None
    ) -> None:
        """One gauge per feature (``values[k]`` for ``names[k]``), non-finite values skipped."""
        keep = np.flatnonzero(np.isfinite(values)).tolist()
        as_list = values.tolist()
        self.items.extend([Point(what, GAUGE, as_list[k], None, names[k], stat) for k in keep])

    def add_interleaved(
        self,
        whats: Sequence[str],
        columns: Sequence[np.ndarray],
        names: list[str],
        target_type: str,
    ) -> None:
        """For each feature ``k`` in turn, one point per ``what`` (``columns[i][k]``)."""
        for k, name in enumerate(names):
            for what, values in zip(whats, columns, strict=True):
                self.add(what, target_type, values[k], feat_name=name)


def _names(given: Sequence[str] | None, count: int, prefix: str, field: str) -> list[str]:
    if given is None:
        return [f"{prefix}_{i}" for i in range(count)]
    names = [str(n) for n in given]
    if len(names) != count:
        raise MetricInputError(f"{field}: expected {count} names, got {len(names)}")
    return names


def category_label(value: float) -> str:
    """How a categorical value is written as a property: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_LABEL_WHATS = ("label_count", "label_freq", *estimated.SCORES)
_LABEL_TYPES = (COUNTER, GAUGE, GAUGE, GAUGE, GAUGE, GAUGE)


def _label_points(out: PointSink, counters: ExactCounters, classes: list[str]) -> None:
    confusion = counters.confusion.astype(np.float64)
    total = confusion.sum()
    out.add("labelled_rows", COUNTER, total)
    if total == 0:
        return
    # the realised scores: estimation's formulas applied to the label counts (integer counts
    # sum exactly, so per class the same bits as scikit-learn's zero_division=0 definitions;
    # the averages to an ulp)
    scores = estimated.scores(confusion)
    support = confusion.sum(axis=1)
    # Per class in turn: its count and share, its four scores, its row of the confusion matrix.
    per_class_values = np.column_stack((support, support / total, scores.per_class, confusion))
    layout = blocks.per_class(
        tuple(classes), _LABEL_WHATS, _LABEL_TYPES, ("confusion_count", COUNTER)
    )
    out.add_rows(layout, per_class_values)
    out.add("overall_accuracy", GAUGE, scores.overall_accuracy)
    out.add_rows(blocks.averages(""), scores.averaged)
    out.add("log_loss", GAUGE, counters.log_loss_sum / total)


def label_points(counters: ExactCounters, class_names: Sequence[str] | None = None) -> list[Point]:
    """The label-dependent points of a window: what a label revision carries.

    ``labelled_rows``, ``label_count``, ``label_freq``, ``accuracy``, ``precision``,
    ``recall``, ``f1`` (per class and averaged), ``overall_accuracy``, ``confusion_count``,
    ``log_loss``, ``overall_accuracy_stderr``, and the calibration points that need labels
    (Brier, ECE, reliability bins).
    """
    out = PointList()
    _label_points(out, counters, _names(class_names, counters.n_classes, "class", "class_names"))
    labelled = counters.labelled_rows
    if labelled:
        accuracy = np.trace(counters.confusion) / labelled
        out.add("overall_accuracy_stderr", GAUGE, estimated.accuracy_stderr(accuracy, labelled))
    calibration.add_points(out, counters)
    return out.items


def _stat_points(out: PointSink, what: str, stats: dict[str, np.ndarray], row: int) -> None:
    out.add_rows(blocks.stat_series(what), [stats[stat][row] for stat in STATS])


def _drift_points(out: PointSink, what: str, values: dict[str, float], **props: Any) -> None:
    for stat, value in values.items():
        out.add(what, GAUGE, value, stat=stat, **props)


def collect_from_parts(
    out: PointSink,
    *,
    counters: ExactCounters,
    probs: np.ndarray,
    labels: np.ndarray,
    features_t: np.ndarray,
    threshold: float,
    categorical: tuple[int, ...],
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    reference: ReferenceProfile | None,
) -> None:
    """Put the points of one window into ``out`` (features column-major), in record order.

    :func:`compute_from_parts` collects them as ``Point`` objects; a
    :class:`~mlwatcher.schemas.point_columns.PointColumnsBuilder` as the record's columns,
    without one object per point (``WindowState.metric_columns``).
    """
    n_classes, n_features = counters.n_classes, counters.n_features
    classes = _names(class_names, n_classes, "class", "class_names")
    features = _names(feature_names, n_features, "feat", "feature_names")
    rows, n_sample = counters.rows_seen, probs.shape[0]
    numeric = [j for j in range(n_features) if j not in categorical]
    summary = None  # the features' stats and drift: the longest part, started first
    if n_features and n_sample and numeric:
        numeric_matrix = features_t if len(numeric) == n_features else features_t[numeric]
        refs = None if reference is None else reference.numeric_rows(numeric)
        summary = columns.start_summary(numeric_matrix, refs)

    out.add("rows_seen", COUNTER, rows)
    out.add("buffer_count", COUNTER, n_sample)
    counts = counters.pred_counts.astype(np.float64)
    per_class = blocks.prediction_counts(tuple(classes), with_share=rows > 0)
    out.add_rows(per_class, np.column_stack((counts, counts / rows)) if rows else counts)

    summaries: dict[str, np.ndarray] = {}
    if n_sample:
        summaries = row_summaries(probs)
        matrix = np.stack([summaries["pred1"], summaries["spread12"], summaries["entropy"]])
        pred_stats = columns.summarise(matrix, threads=1).stats
        for row, what in enumerate(
            ("max_prediction_proba", "spread12_prediction_proba", "prediction_entropy")
        ):
            _stat_points(out, what, pred_stats, row)

    numeric_drift: dict[str, np.ndarray] | None = None
    if n_features:
        out.add("rows_without_features", COUNTER, counters.rows_without_features)
        out.add_interleaved(
            ("missing_value_count", "infinite_value_count"),
            (counters.nan_counts, counters.inf_counts),
            features,
            COUNTER,
        )
        if summary is not None:
            summarised = summary()
            numeric_drift = summarised.drift
            numeric_names = [features[j] for j in numeric]
            for stat in STATS:
                out.add_per_feature("feature_value", summarised.stats[stat], numeric_names, stat)
        for j in categorical:
            values, counts = counters.category_counts(j)
            total = counts.sum()
            for value, count in zip(values, counts, strict=True):
                extra = {"value": category_label(value)}
                out.add(
                    "categorical_value_count", COUNTER, count, feat_name=features[j], extra=extra
                )
                out.add(
                    "categorical_value_freq",
                    GAUGE,
                    count / total,
                    feat_name=features[j],
                    extra=extra,
                )

    _label_points(out, counters, classes)
    calibration.add_points(out, counters)
    estimated.add_points(out, counters, classes, reference and reference.calibration)

    if reference is not None and rows:
        _reference_drift(
            out, reference, counters, summaries, numeric_drift, numeric, categorical, features
        )


def compute_from_parts(
    *,
    counters: ExactCounters,
    probs: np.ndarray,
    labels: np.ndarray,
    features_t: np.ndarray,
    threshold: float,
    categorical: tuple[int, ...],
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    reference: ReferenceProfile | None,
) -> list[Point]:
    """Points of one window from its exact counters and its sample (features column-major)."""
    out = PointList()
    collect_from_parts(
        out,
        counters=counters,
        probs=probs,
        labels=labels,
        features_t=features_t,
        threshold=threshold,
        categorical=categorical,
        class_names=class_names,
        feature_names=feature_names,
        reference=reference,
    )
    return out.items


def _reference_drift(
    out: PointSink,
    reference: ReferenceProfile,
    counters: ExactCounters,
    summaries: dict[str, np.ndarray],
    numeric_drift: dict[str, np.ndarray] | None,
    numeric: list[int],
    categorical: tuple[int, ...],
    features: list[str],
) -> None:
    if reference.n_features and reference.n_features != counters.n_features:
        raise MetricInputError(
            f"reference: profile has {reference.n_features} features,"
            f" the window has {counters.n_features}"
        )
    if reference.n_classes is not None and reference.n_classes != counters.n_classes:
        raise MetricInputError(
            f"reference: profile has {reference.n_classes} classes,"
            f" the window has {counters.n_classes}"
        )
    if reference.pred1 is not None and "pred1" in summaries:
        pred1 = np.sort(summaries["pred1"])
        values = drift.numeric_drift([pred1], [reference.pred1])
        _drift_points(out, "pred1_drift", {k: v[0] for k, v in values.items()})
    if reference.pred_class_counts is not None:
        classes = np.arange(counters.n_classes, dtype=np.float64)
        values = drift.categorical_drift(
            classes, counters.pred_counts, classes, reference.pred_class_counts
        )
        _drift_points(out, "predicted_class_drift", values)

    flags: list[float] = []
    if numeric_drift is not None:
        rows = [r for r, j in enumerate(numeric) if j in reference.numeric]
        names = [features[numeric[r]] for r in rows]
        for stat, per_feature in numeric_drift.items():
            out.add_per_feature("feature_drift", per_feature[rows], names, stat)
        drifted = numeric_drift["drifted"][rows]
        flags.extend(drifted[np.isfinite(drifted)].tolist())
    for j in categorical:
        if j not in reference.categories:
            continue
        cur_values, cur_counts = counters.category_counts(j)
        ref_values, ref_counts = reference.categories[j]
        values = drift.categorical_drift(cur_values, cur_counts, ref_values, ref_counts)
        _drift_points(out, "feature_drift", values, feat_name=features[j])
        if "drifted" in values:
            flags.append(values["drifted"])
    if flags:
        share = float(np.mean(flags))
        out.add("dataset_drift", GAUGE, share, stat="share")
        out.add("dataset_drift", GAUGE, float(np.sum(flags)), stat="drifted_count")
        out.add("dataset_drift", GAUGE, float(len(flags)), stat="evaluated_count")
        out.add("dataset_drift", GAUGE, float(share >= drift.DATASET_DRIFT_SHARE), stat="drifted")


def compute_metrics(
    predict_proba: Any,
    labels: Any = None,
    features: Any = None,
    *,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    categorical_features: Sequence[int | str] = (),
    reference: ReferenceProfile | None = None,
    counters: ExactCounters | None = None,
) -> list[Point]:
    """Metric points of the given rows (offline use; a DataFrame is fine for ``features``).

    Every row is both counted and used as the sample. ``counters`` is internal: the exact
    counters of a :class:`WindowState` whose reservoir these rows are.
    """
    threshold = check_threshold(threshold)
    probs = as_probabilities(predict_proba)
    n_rows, n_classes = probs.shape
    label_vec = normalise_labels(labels, n_rows, n_classes)
    feats: np.ndarray | None = None
    frame_categorical: list[int] = []
    if features is not None:
        feats, frame_names, frame_categorical = as_features(features, n_rows)
        if feature_names is None:
            feature_names = frame_names
    n_features = 0 if feats is None else feats.shape[1]
    names = None if feature_names is None else list(feature_names)
    categorical = tuple(
        sorted(
            set(categorical_indices(categorical_features, names, n_features))
            | set(frame_categorical)
        )
    )
    if feats is not None:
        check_categorical(feats, categorical)
    if counters is None:
        counters = ExactCounters.from_batch(
            probs, predicted_classes(probs, threshold), label_vec, feats, n_features, categorical
        )
    features_t = (
        np.ascontiguousarray(feats.T) if feats is not None else np.empty((n_features, n_rows))
    )
    return compute_from_parts(
        counters=counters,
        probs=probs,
        labels=np.full(n_rows, -1) if label_vec is None else label_vec,
        features_t=features_t,
        threshold=threshold,
        categorical=categorical,
        class_names=class_names,
        feature_names=names,
        reference=reference,
    )
