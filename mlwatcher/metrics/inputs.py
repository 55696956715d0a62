"""The engine's side of the validation contract (:mod:`mlwatcher.validation`): the same checks
as the producer's, named after the engine's arguments (``predict_proba``, ``labels``,
``features``), plus the two engine-only helpers (predicted classes, categorical indices)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlwatcher.metrics import kernels
from mlwatcher.validation import (
    DEFAULT_SUM_TOLERANCE,
    MetricInputError,
    check_categorical_values,
    check_features,
    check_labels,
    check_probabilities,
)

__all__ = [
    "MetricInputError",
    "as_features",
    "as_probabilities",
    "categorical_indices",
    "check_categorical",
    "normalise_labels",
    "predicted_classes",
]


def as_probabilities(predict_proba: Any, n_classes: int | None = None) -> np.ndarray:
    """The probability matrix as float64 ``(n_rows, n_classes)``, validated."""
    passes = _within_tolerance if kernels.ENABLED else None  # the twin saves nothing
    return check_probabilities(predict_proba, n_classes, argument="predict_proba", passes=passes)


def _within_tolerance(probs: np.ndarray) -> bool:
    # The compiled pass sums each row in another order than the contract's check: a margin
    # far above that rounding sends rows near the limit to the check, which decides.
    return kernels.probabilities_within(probs, DEFAULT_SUM_TOLERANCE - 1e-9)


def predicted_classes(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted class per row: binary ``p[1] > threshold``, otherwise argmax (first on ties)."""
    return kernels.predicted_classes(probs, threshold)


def normalise_labels(labels: Any, n_rows: int, n_classes: int) -> np.ndarray | None:
    """Labels as an int64 vector in ``[-1, n_classes)`` (``-1``: row without label), None for
    a batch without labels."""
    if labels is None:
        return None
    return check_labels(labels, n_rows, n_classes, argument="labels")


def as_features(
    features: Any, n_rows: int, n_features: int | None = None
) -> tuple[np.ndarray, list[str] | None, list[int]]:
    """Feature matrix as float64 ``(n_rows, n_features)``, a DataFrame's column names and its
    pandas ``category`` columns (as codes)."""
    checked = check_features(features, n_rows, n_features, argument="features")
    return checked.values.astype(np.float64, copy=False), checked.names, checked.categorical


def check_categorical(features: np.ndarray, categorical: Sequence[int]) -> None:
    check_categorical_values(features, categorical, argument="features")


def categorical_indices(
    categorical: Sequence[int | str], feature_names: Sequence[str] | None, n_features: int
) -> tuple[int, ...]:
    """Resolve categorical features given by index or by name to sorted unique indices."""
    out: set[int] = set()
    for item in categorical:
        if isinstance(item, str):
            if feature_names is None or item not in feature_names:
                raise MetricInputError(f"categorical_features: unknown feature name {item!r}")
            out.add(list(feature_names).index(item))
        else:
            idx = int(item)
            if not 0 <= idx < n_features:
                raise MetricInputError(
                    f"categorical_features: index {idx} outside [0, {n_features})"
                )
            out.add(idx)
    return tuple(sorted(out))
