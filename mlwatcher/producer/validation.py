"""Validation of one ``collect_data`` call: turns user matrices into checked numpy arrays.

Every refusal is an InvalidBatchError whose message starts with the argument's name and says
what was expected, so a model owner can fix the call without reading our code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class InvalidBatchError(ValueError):
    """A ``collect_data`` argument was refused; ``argument`` names it."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem


@dataclass(frozen=True)
class CheckedBatch:
    probabilities: np.ndarray  # (n, n_classes) float32
    labels: np.ndarray | None  # (n,) int32
    features: np.ndarray | None  # (n, n_features) float32 or float64
    feature_names: list[str] | None  # from a DataFrame's columns
    categorical_columns: list[int]  # from DataFrame columns of pandas "category" dtype


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _as_numeric_2d(value: Any, argument: str) -> np.ndarray:
    if value is None:
        raise InvalidBatchError(argument, "is required, got None")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidBatchError(argument, f"cannot be read as a matrix ({exc})") from exc
    if array.dtype == bool:
        array = array.astype(np.int8)
    if not (np.issubdtype(array.dtype, np.number)) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise InvalidBatchError(
            argument, f"must be numeric (int or float), got dtype {array.dtype}"
        )
    if array.ndim != 2:
        raise InvalidBatchError(
            argument,
            f"must be a 2-D matrix (rows x columns), got {array.ndim}-D shape {array.shape}",
        )
    if array.shape[0] == 0:
        raise InvalidBatchError(argument, "is empty: a batch needs at least one row")
    return array


def check_probabilities(value: Any, n_classes: int, sum_tolerance: float) -> np.ndarray:
    argument = "predict_proba_matrix"
    if _is_dataframe(value):
        value = value.to_numpy()
    array = _as_numeric_2d(value, argument)
    if array.shape[1] != n_classes:
        raise InvalidBatchError(
            argument, f"has {array.shape[1]} columns, expected n_classes={n_classes}"
        )
    probabilities = array.astype(np.float64, copy=False)
    finite = np.isfinite(probabilities)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise InvalidBatchError(
            argument, f"contains {int((~finite).sum())} NaN/inf values (first in row {row})"
        )
    low, high = float(probabilities.min()), float(probabilities.max())
    if low < 0.0 or high > 1.0:
        raise InvalidBatchError(
            argument, f"probabilities must lie in [0, 1], found values in [{low:g}, {high:g}]"
        )
    # A matrix-vector product sums short rows several times faster than sum(axis=1).
    deviation = np.abs(probabilities @ np.ones(n_classes) - 1.0)
    if float(deviation.max()) > sum_tolerance:
        row = int(np.argmax(deviation))
        raise InvalidBatchError(
            argument,
            f"each row must sum to 1 (tolerance {sum_tolerance:g}); row {row} sums to "
            f"{float(probabilities[row].sum()):.6g}",
        )
    return np.ascontiguousarray(probabilities, dtype=np.float32)


def check_labels(value: Any, n_rows: int, n_classes: int) -> np.ndarray:
    """Accept an int vector, an (n, 1) matrix or a one-hot (n, n_classes) matrix."""
    argument = "label_matrix"
    if _is_dataframe(value) or type(value).__name__ == "Series":
        value = value.to_numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidBatchError(argument, f"cannot be read as an array ({exc})") from exc
    if array.dtype == bool:
        array = array.astype(np.int8)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidBatchError(
            argument, f"must hold integer class indices, got dtype {array.dtype}"
        )
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        if array.shape[1] != n_classes:
            raise InvalidBatchError(
                argument,
                f"shape {array.shape}: expected a vector of n={n_rows} class indices, an "
                f"({n_rows}, 1) matrix or a one-hot ({n_rows}, {n_classes}) matrix",
            )
        if array.shape[0] != n_rows:
            raise InvalidBatchError(
                argument, f"has {array.shape[0]} rows, predict_proba_matrix has {n_rows}"
            )
        ones = array == 1
        if not (np.isin(array, (0, 1)).all() and (ones.sum(axis=1) == 1).all()):
            raise InvalidBatchError(
                argument, "one-hot rows must contain exactly one 1 and zeros elsewhere"
            )
        return np.argmax(ones, axis=1).astype(np.int32)
    if array.ndim != 1:
        raise InvalidBatchError(argument, f"must be 1-D or 2-D, got shape {array.shape}")
    if array.shape[0] != n_rows:
        raise InvalidBatchError(
            argument, f"has {array.shape[0]} rows, predict_proba_matrix has {n_rows}"
        )
    if np.issubdtype(array.dtype, np.floating) and not (
        np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise InvalidBatchError(argument, "float labels must be whole numbers (class indices)")
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise InvalidBatchError(
            argument,
            f"class indices must lie in [0, {n_classes - 1}], found values in "
            f"[{array.min():g}, {array.max():g}]",
        )
    return array.astype(np.int32)


def check_features(value: Any, n_rows: int) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Features may hold NaN/inf: missing values are a monitored metric, not an error."""
    argument = "input_matrix"
    names: list[str] | None = None
    categorical: list[int] = []
    if _is_dataframe(value):
        names = [str(column) for column in value.columns]
        columns = []
        for index, column in enumerate(value.columns):
            series = value[column]
            if str(series.dtype) == "category":
                categorical.append(index)
                codes = series.cat.codes.to_numpy().astype(np.float64)
                codes[codes < 0] = np.nan
                columns.append(codes)
                continue
            column_values = series.to_numpy()
            if column_values.dtype == bool:
                column_values = column_values.astype(np.int8)
            if not np.issubdtype(column_values.dtype, np.number):
                raise InvalidBatchError(
                    argument,
                    f"column {column!r} must be numeric (or pandas 'category'), "
                    f"got dtype {series.dtype}",
                )
            columns.append(column_values.astype(np.float64, copy=False))
        if not columns:
            raise InvalidBatchError(argument, "DataFrame has no columns")
        value = np.column_stack(columns)
    array = _as_numeric_2d(value, argument)
    if array.shape[0] != n_rows:
        raise InvalidBatchError(
            argument, f"has {array.shape[0]} rows, predict_proba_matrix has {n_rows}"
        )
    if array.shape[1] == 0:
        raise InvalidBatchError(argument, "has no columns")
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    return np.ascontiguousarray(array, dtype=dtype), names, categorical


def check_categorical_values(features: np.ndarray, categorical: Sequence[int]) -> None:
    for index in categorical:
        column = features[:, index]
        present = column[np.isfinite(column)]
        if not (present == np.round(present)).all():
            raise InvalidBatchError(
                "input_matrix",
                f"categorical column {index} must hold integer category codes",
            )


def check_batch(
    predict_proba: Any,
    input_matrix: Any,
    label_matrix: Any,
    *,
    n_classes: int,
    sum_tolerance: float,
) -> CheckedBatch:
    probabilities = check_probabilities(predict_proba, n_classes, sum_tolerance)
    n_rows = probabilities.shape[0]
    labels = None if label_matrix is None else check_labels(label_matrix, n_rows, n_classes)
    features, names, categorical = None, None, []
    if input_matrix is not None:
        features, names, categorical = check_features(input_matrix, n_rows)
    return CheckedBatch(probabilities, labels, features, names, categorical)
