"""The one validation contract of a batch: what ``collect_data``, ``compute_metrics``,
``WindowState.update`` and ``ReferenceProfile.from_data`` accept and refuse.

The producer and the metric engine call these functions, so they give the same verdict and the
same message for the same arrays (``tests/test_validation_contract.py`` checks it on arbitrary
inputs). Only numpy is imported: DataFrames and Series are recognised by duck typing, so a model
service needs no pandas to use the producer.

Every refusal is an :class:`InvalidBatchError` whose message starts with the caller's argument
name and says what was expected: ``predict_proba_matrix: expected 3 class columns (expected
n_classes=3), got 4``. The rules:

* probabilities: a numeric (or bool) 2-D matrix, at least one row and two class columns (as many
  as ``n_classes`` when it is known), finite values in [0, 1], each row summing to 1 within
  ``sum_tolerance``;
* labels: class indices in ``[0, n_classes)``, or ``-1`` for a row without label (as in the
  wire format), as a vector, an ``(n, 1)`` matrix or a one-hot
  ``(n, n_classes)`` matrix with exactly one 1 per row (multi-hot rows are ambiguous and
  refused); float labels must be whole numbers; one per prediction row;
* features: a numeric 2-D matrix or DataFrame, one row per prediction, at least one column;
  NaN/inf are allowed (missing values are a metric, not an error); DataFrame columns may be
  bool, numeric or pandas ``category`` (sent as integer codes, NaN for missing, and treated as
  categorical);
* categorical feature columns hold whole numbers (category codes);
* threshold: a number in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: how far a probability row's sum may be from 1 (float32 rounding of 1000 classes stays well
#: inside; a model that forgot a softmax does not)
DEFAULT_SUM_TOLERANCE = 1e-3

#: the label of a row without label (also in the PredictionBatch wire format)
NO_LABEL = -1


class MetricInputError(ValueError):
    """Input refused by the producer or the metric engine (shape, type or values)."""


class InvalidBatchError(MetricInputError):
    """A batch argument was refused; ``argument`` names it, ``problem`` says what is wrong."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem


@dataclass(frozen=True)
class Features:
    values: np.ndarray  # (n_rows, n_features) float32 if given float32, else float64
    names: list[str] | None  # a DataFrame's column names
    categorical: list[int]  # DataFrame columns of pandas "category" dtype


def is_dataframe(value: Any) -> bool:
    return hasattr(value, "columns") and hasattr(value, "dtypes") and hasattr(value, "to_numpy")


def _is_series(value: Any) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "to_numpy") and hasattr(value, "index")


def _is_category(column: Any) -> bool:
    return str(getattr(column, "dtype", "")) == "category" and hasattr(column, "cat")


_REAL_KINDS = frozenset("iufm")


def _numeric(
    value: Any, argument: str, what: str, expected: str = "must be numeric (int or float)"
) -> np.ndarray:
    """``value`` as a numeric numpy array (bool as int8), or a clear refusal."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidBatchError(argument, f"cannot be read as {what} ({exc})") from exc
    if array.dtype == bool:
        array = array.astype(np.int8)
    # dtype kinds of np.number minus complex (signed, unsigned, float, timedelta): what
    # issubdtype answers, without its cost on every batch
    if array.dtype.kind not in _REAL_KINDS:
        raise InvalidBatchError(argument, f"{expected}, got dtype {array.dtype}")
    return array


def _rows_problem(expected: int, got: int) -> str:
    return f"expected {expected} rows (one per prediction), has {got} rows"


def check_probabilities(
    value: Any,
    n_classes: int | None = None,
    *,
    argument: str,
    sum_tolerance: float = DEFAULT_SUM_TOLERANCE,
    passes: Callable[[np.ndarray], bool] | None = None,
) -> np.ndarray:
    """The probability matrix as float64 ``(n_rows, n_classes)`` (no copy when it already is).

    ``passes``: a faster test of the values that is true only of valid ones (the worker's
    compiled check, stricter than ``sum_tolerance`` by more than any rounding); when it
    holds, the value checks below are skipped, and when not, they decide and explain.
    """
    if value is None:
        raise InvalidBatchError(argument, "is required, got None")
    if is_dataframe(value):
        value = value.to_numpy()
    array = _numeric(value, argument, "a matrix")
    if array.ndim != 2:
        raise InvalidBatchError(
            argument,
            f"expected a 2-D array (rows x classes), got {array.ndim}-D shape {array.shape}",
        )
    if array.shape[0] == 0:
        raise InvalidBatchError(argument, "is empty: a batch needs at least one row")
    columns = array.shape[1]
    if columns < 2:
        raise InvalidBatchError(argument, f"expected at least 2 class columns, got {columns}")
    if n_classes is not None and columns != n_classes:
        raise InvalidBatchError(
            argument,
            f"expected {n_classes} class columns (expected n_classes={n_classes}), got {columns}",
        )
    probabilities = array.astype(np.float64, copy=False)
    if passes is not None and passes(probabilities):
        return probabilities
    low, high = float(probabilities.min()), float(probabilities.max())
    # NaN makes min/max NaN and fails both comparisons, inf fails one: a valid matrix needs
    # no separate finiteness pass.
    if not (low >= 0.0 and high <= 1.0):
        finite = np.isfinite(probabilities)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise InvalidBatchError(
                argument,
                f"NaN/inf values are not allowed: {int((~finite).sum())} found"
                f" (first in row {row})",
            )
        raise InvalidBatchError(
            argument, f"probabilities must lie in [0, 1], found values in [{low:g}, {high:g}]"
        )
    # A matrix-vector product sums short rows several times faster than sum(axis=1).
    deviation = np.abs(probabilities @ np.ones(columns) - 1.0)
    if float(deviation.max()) > sum_tolerance:
        row = int(np.argmax(deviation))
        raise InvalidBatchError(
            argument,
            f"each row must sum to 1 (tolerance {sum_tolerance:g}); row {row} sums to "
            f"{float(probabilities[row].sum()):.6g}",
        )
    return probabilities


def check_labels(value: Any, n_rows: int, n_classes: int, *, argument: str) -> np.ndarray:
    """Class indices as an int64 vector of ``n_rows``, ``-1`` for a row without label."""
    if is_dataframe(value) or _is_series(value):
        value = value.to_numpy()
    array = _numeric(value, argument, "an array", "expected integer class indices")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        if array.shape[1] != n_classes:
            raise InvalidBatchError(
                argument,
                f"expected shape ({n_rows},), ({n_rows}, 1) or a one-hot ({n_rows}, {n_classes})"
                f" matrix, got {array.shape}",
            )
        if array.shape[0] != n_rows:
            raise InvalidBatchError(argument, _rows_problem(n_rows, array.shape[0]))
        ones = array == 1
        if not (np.isin(array, (0, 1)).all() and (ones.sum(axis=1) == 1).all()):
            raise InvalidBatchError(
                argument, "one-hot rows must contain exactly one 1 and zeros elsewhere"
            )
        return np.argmax(ones, axis=1).astype(np.int64)
    if array.ndim != 1:
        raise InvalidBatchError(
            argument,
            f"expected shape ({n_rows},), ({n_rows}, 1) or a one-hot ({n_rows}, {n_classes})"
            f" matrix, got {array.shape}",
        )
    if array.shape[0] != n_rows:
        raise InvalidBatchError(argument, _rows_problem(n_rows, array.shape[0]))
    if array.dtype.kind == "f" and not (
        np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise InvalidBatchError(
            argument, "expected integer class indices; float labels must be whole numbers"
        )
    labels = array.astype(np.int64)
    if labels.size and (labels.min() < NO_LABEL or labels.max() >= n_classes):
        raise InvalidBatchError(
            argument,
            f"class indices must be in [0, {n_classes - 1}] (or {NO_LABEL}: row without label),"
            f" found values in [{array.min():g}, {array.max():g}]",
        )
    return labels


def check_features(
    value: Any, n_rows: int, n_features: int | None = None, *, argument: str
) -> Features:
    """Features may hold NaN/inf: missing values are a monitored metric, not an error."""
    names: list[str] | None = None
    categorical: list[int] = []
    if is_dataframe(value):
        names = [str(column) for column in value.columns]
        columns = []
        for index, column in enumerate(value.columns):
            series = value[column]
            if _is_category(series):
                categorical.append(index)
                codes = np.asarray(series.cat.codes.to_numpy(), dtype=np.float64)
                codes[codes < 0] = np.nan
                columns.append(codes)
                continue
            column_values = np.asarray(series.to_numpy())
            if column_values.dtype == bool:
                column_values = column_values.astype(np.int8)
            if not np.issubdtype(column_values.dtype, np.number) or np.issubdtype(
                column_values.dtype, np.complexfloating
            ):
                raise InvalidBatchError(
                    argument,
                    f"column {column!r} must be numeric (or pandas 'category'), "
                    f"got dtype {series.dtype}",
                )
            columns.append(column_values.astype(np.float64, copy=False))
        if not columns:
            raise InvalidBatchError(argument, "has no columns")
        value = np.column_stack(columns)
    if value is None:
        raise InvalidBatchError(argument, "is required, got None")
    array = _numeric(value, argument, "a matrix")
    if array.ndim != 2:
        raise InvalidBatchError(
            argument,
            f"expected a 2-D array (rows x features), got {array.ndim}-D shape {array.shape}",
        )
    if array.shape[0] != n_rows:
        raise InvalidBatchError(argument, _rows_problem(n_rows, array.shape[0]))
    if array.shape[1] == 0:
        raise InvalidBatchError(argument, "has no columns")
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidBatchError(argument, f"expected {n_features} columns, got {array.shape[1]}")
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    return Features(np.ascontiguousarray(array, dtype=dtype), names, categorical)


def check_categorical_values(
    features: np.ndarray, categorical: Sequence[int], *, argument: str
) -> None:
    """Categorical columns hold whole numbers (category codes); NaN/inf mean missing."""
    for index in categorical:
        column = features[:, index]
        present = column[np.isfinite(column)]
        if not (present == np.round(present)).all():
            raise InvalidBatchError(
                argument, f"categorical column {index} must hold integer category codes"
            )


def check_threshold(threshold: Any, *, argument: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise InvalidBatchError(argument, f"must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise InvalidBatchError(argument, f"must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


@dataclass(frozen=True)
class CheckedBatch:
    probabilities: np.ndarray  # (n, n_classes) float64
    labels: np.ndarray | None  # (n,) int64
    features: Features | None


def check_batch(
    predict_proba: Any,
    features: Any,
    labels: Any,
    *,
    n_classes: int | None,
    names: tuple[str, str, str],
    sum_tolerance: float = DEFAULT_SUM_TOLERANCE,
    n_features: int | None = None,
) -> CheckedBatch:
    """One batch, in the order its arguments are checked (probabilities first: their row count
    and class count are what labels and features are checked against). ``names``: the caller's
    argument names for (probabilities, features, labels)."""
    proba_name, features_name, labels_name = names
    probabilities = check_probabilities(
        predict_proba, n_classes, argument=proba_name, sum_tolerance=sum_tolerance
    )
    n_rows, columns = probabilities.shape
    checked_labels = (
        None if labels is None else check_labels(labels, n_rows, columns, argument=labels_name)
    )
    checked_features = (
        None
        if features is None
        else check_features(features, n_rows, n_features, argument=features_name)
    )
    return CheckedBatch(probabilities, checked_labels, checked_features)
