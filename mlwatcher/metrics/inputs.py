"""Validation and normalisation of the arrays a batch brings (probabilities, labels, features)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class MetricInputError(ValueError):
    """A batch given to the metric engine has the wrong shape, type or values."""


def as_probabilities(predict_proba: Any, n_classes: int | None = None) -> np.ndarray:
    """Return the probability matrix as float64 ``(n_rows, n_classes)``, validated."""
    try:
        probs = np.asarray(predict_proba, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"predict_proba: expected a numeric 2-D array ({exc})") from exc
    if probs.ndim != 2:
        raise MetricInputError(
            f"predict_proba: expected a 2-D array (rows x classes), got {probs.ndim} dimension(s)"
        )
    if probs.shape[1] < 2:
        raise MetricInputError(
            f"predict_proba: expected at least 2 class columns, got {probs.shape[1]}"
        )
    if n_classes is not None and probs.shape[1] != n_classes:
        raise MetricInputError(
            f"predict_proba: expected {n_classes} class columns, got {probs.shape[1]}"
        )
    if not np.isfinite(probs).all():
        raise MetricInputError("predict_proba: NaN or infinite values are not allowed")
    return probs


def predicted_classes(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted class per row: binary ``p[1] > threshold``, otherwise argmax (first on ties)."""
    if probs.shape[1] == 2:
        return (probs[:, 1] > threshold).astype(np.int64)
    return np.argmax(probs, axis=1).astype(np.int64)


def normalise_labels(labels: Any, n_rows: int, n_classes: int) -> np.ndarray | None:
    """Labels as an int64 vector in ``[-1, n_classes)``; ``-1`` marks a row without label.

    Accepts an int vector, an ``(n, 1)`` int matrix or a one-hot ``(n, n_classes)`` matrix.
    A one-hot row with several maxima (ties, multi-hot) gives the first maximum (argmax);
    an all-zero one-hot row is treated as unlabelled.
    """
    if labels is None:
        return None
    try:
        arr = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"labels: expected a numeric array ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise MetricInputError(f"labels: expected integer values, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == n_classes and n_classes > 1:
        if arr.shape[0] != n_rows:
            raise MetricInputError(f"labels: expected {n_rows} rows, got {arr.shape[0]}")
        out = np.argmax(arr, axis=1).astype(np.int64)
        out[~(arr != 0).any(axis=1)] = -1
        return out
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MetricInputError(
            f"labels: expected shape ({n_rows},), ({n_rows}, 1) or ({n_rows}, {n_classes}),"
            f" got {arr.shape}"
        )
    if arr.shape[0] != n_rows:
        raise MetricInputError(f"labels: expected {n_rows} rows, got {arr.shape[0]}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise MetricInputError("labels: expected integer class indices, got fractional/NaN")
    out = arr.astype(np.int64)
    if out.size and (out.min() < -1 or out.max() >= n_classes):
        raise MetricInputError(
            f"labels: class indices must be in [0, {n_classes}) (or -1 for no label),"
            f" got values in [{out.min()}, {out.max()}]"
        )
    return out


def as_features(
    features: Any, n_rows: int, n_features: int | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Feature matrix as float64 ``(n_rows, n_features)`` plus DataFrame column names if any."""
    names: list[str] | None = None
    if hasattr(features, "columns") and hasattr(features, "to_numpy"):
        names = [str(c) for c in features.columns]
        non_numeric = [
            str(c)
            for c, dt in zip(features.columns, features.dtypes, strict=True)
            if getattr(dt, "kind", "O") not in "biuf"
        ]
        if non_numeric:
            raise MetricInputError(f"features: non-numeric columns {non_numeric}")
        features = features.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        arr = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"features: expected a numeric 2-D array ({exc})") from exc
    if arr.ndim != 2:
        raise MetricInputError(f"features: expected a 2-D array, got {arr.ndim} dimension(s)")
    if arr.shape[0] != n_rows:
        raise MetricInputError(
            f"features: expected {n_rows} rows (one per prediction), got {arr.shape[0]}"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise MetricInputError(f"features: expected {n_features} columns, got {arr.shape[1]}")
    return arr, names


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
