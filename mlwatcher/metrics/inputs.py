"""The engine's side of the validation contract (:mod:`mlwatcher.validation`): the same checks
as the producer's, named after the engine's arguments (``predict_proba``, ``labels``,
``features``), plus the two engine-only helpers (predicted classes, categorical indices)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
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
    "plain_batch",
    "predicted_classes",
]


def as_probabilities(predict_proba: Any, n_classes: int | None = None) -> np.ndarray:
    """The probability matrix as float64 ``(n_rows, n_classes)``, validated."""
    passes = _within_tolerance if kernels.ENABLED else None  # the twin saves nothing
    return check_probabilities(predict_proba, n_classes, argument="predict_proba", passes=passes)


#: The compiled checks' sum tolerance. They sum each row in another order than the
#: contract's check: a margin far above that rounding sends rows near the limit to the
#: check, which decides.
FAST_SUM_TOLERANCE = DEFAULT_SUM_TOLERANCE - 1e-9


def _within_tolerance(probs: np.ndarray) -> bool:
    return kernels.probabilities_within(probs, FAST_SUM_TOLERANCE)


_NO_LABELS = np.empty(0, np.int64)


def plain_batch(
    predict_proba: Any, labels: Any, features: Any, n_classes: int, n_features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The batch as the compiled update takes it, if its arrays are of the plain kinds
    (float probabilities ``(n, n_classes)``, integer label vector, float features
    ``(n, n_features)``): probabilities float64 and writable, labels int64 (empty: none),
    features float64 (``(0, n_features)``: none). None for anything else, which goes to
    the contract's checks. The shapes are checked here; the values are the compiled
    loop's to check (``kernels.count_batch``), and what it refuses goes to the contract too.
    """
    probs = predict_proba
    if not (
        type(probs) is np.ndarray
        and probs.ndim == 2
        and probs.dtype.char in _FLOAT_CHARS
        and probs.shape[1] == n_classes
        and probs.shape[0] > 0
    ):
        return None
    if probs.dtype.char != "d" or not (probs.flags.c_contiguous and probs.flags.writeable):
        probs = np.array(probs, np.float64)  # small; one compiled variant fewer
    n_rows = probs.shape[0]
    if labels is None:
        label_vec = _NO_LABELS
    elif type(labels) is np.ndarray and labels.shape == (n_rows,) and labels.dtype.kind in "iu":
        label_vec = labels.astype(np.int64)  # a uint64 too large wraps below -1: refused
    else:
        return None
    if features is None:
        feats = _no_features(n_features)
    elif (
        n_features
        and type(features) is np.ndarray
        and features.shape == (n_rows, n_features)
        and features.dtype.char in _FLOAT_CHARS
    ):
        # Always passed read-only (one compiled variant): a decoded message's features are,
        # and a view costs less than a copy of them.
        feats = np.ascontiguousarray(features, np.float64)
        if feats.flags.writeable:
            feats = feats.view()
            feats.flags.writeable = False
    else:
        return None
    return probs, label_vec, feats


_FLOAT_CHARS = "df"  # float64, float32 (dtype codes: cheaper to compare than dtypes)


@lru_cache(maxsize=64)
def _no_features(n_features: int) -> np.ndarray:
    empty = np.empty((0, n_features))
    empty.flags.writeable = False
    return empty


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
