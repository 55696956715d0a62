"""The runs of points every close emits with new values, built once per class list.

A :class:`~mlwatcher.point.PointBlock` fixes the properties of its points; kept here (cached
by the class names), the same block object comes back every window, so the columns builder
encodes it once.
"""

from __future__ import annotations

import functools

from mlwatcher.metrics.stats import STATS
from mlwatcher.point import COUNTER, GAUGE, PointBlock

AVERAGED = ("precision", "recall", "f1")
AVERAGES = ("macro", "micro", "weighted")


@functools.lru_cache(maxsize=256)
def per_class(
    classes: tuple[str, ...],
    whats: tuple[str, ...],
    types: tuple[str, ...],
    matrix: tuple[str, str],
) -> PointBlock:
    """Per class in turn: one point of each of ``whats``, then the class's row of a confusion
    matrix (``matrix`` is its what and target type; one point per predicted class, with
    ``pred_class`` set)."""
    n_classes = len(classes)
    row_whats = [*whats, *[matrix[0]] * n_classes]
    row_types = [*types, *[matrix[1]] * n_classes]
    row_extras = [None] * len(whats) + [{"pred_class": name} for name in classes]
    return PointBlock.of(
        row_whats * n_classes,
        row_types * n_classes,
        class_name=[name for name in classes for _ in range(len(row_whats))],
        extra=row_extras * n_classes,
    )


@functools.lru_cache(maxsize=8)
def averages(prefix: str) -> PointBlock:
    """``precision``, ``recall`` and ``f1`` in turn (with ``prefix``), each macro, micro
    and weighted (the ``average`` property)."""
    return PointBlock.of(
        [prefix + what for what in AVERAGED for _ in AVERAGES],
        GAUGE,
        extra=[{"average": average} for _ in AVERAGED for average in AVERAGES],
    )


@functools.lru_cache(maxsize=64)
def stat_series(what: str) -> PointBlock:
    """One gauge of ``what`` per distribution statistic (the ``stat`` property)."""
    return PointBlock.of(what, GAUGE, stat=STATS)


@functools.lru_cache(maxsize=256)
def prediction_counts(classes: tuple[str, ...], with_share: bool) -> PointBlock:
    """Per class in turn: its ``prediction_count`` and (``with_share``) ``prediction_freq``."""
    whats, types = ("prediction_count", "prediction_freq"), (COUNTER, GAUGE)
    width = 2 if with_share else 1
    return PointBlock.of(
        whats[:width] * len(classes),
        types[:width] * len(classes),
        class_name=[name for name in classes for _ in range(width)],
    )
