"""Per-row distribution statistics of a matrix of series (one series per row, NaN = missing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlwatcher.metrics import kernels

STATS = ("range", "mean", "std", "median", "q25", "q50", "q75", "iqr")


@dataclass(slots=True)
class SortedSeries:
    """Each row sorted ascending with its non-finite values moved to the end.

    ``counts[j]`` is the number of finite values of row ``j``; ``sorted[j, :counts[j]]``
    are those values. The close uses it for short rows and rows with missing values (the
    prediction summaries, some features); long finite rows take the selection path of
    :mod:`mlwatcher.metrics.columns`.
    ``sorted`` is float32 when the matrix is float32-exact (the values are the same, and
    float32 halves the memory every later pass reads); read values through ``float64``.
    """

    sorted: np.ndarray
    counts: np.ndarray
    # Row sums of the matrix when every value is finite (reused for the mean), else None.
    row_sums: np.ndarray | None = None

    @classmethod
    def of(cls, matrix: np.ndarray) -> SortedSeries:
        # One summing pass answers "all finite?" for the common case: a NaN or inf makes its
        # row sum non-finite. Only when some sum is not finite (or overflowed) do we pay
        # for the elementwise check.
        sums = matrix.sum(axis=1)
        if np.isfinite(sums).all():
            counts = np.full(matrix.shape[0], matrix.shape[1])
            return cls(_exact_sort(matrix, has_nan=False), counts, sums)
        finite = np.isfinite(matrix)
        counts = finite.sum(axis=1)
        has_nan = bool(counts.size and counts.min() < matrix.shape[1])
        if has_nan:
            matrix = np.where(finite, matrix, np.nan)  # inf -> NaN so sort puts it last
        return cls(_exact_sort(matrix, has_nan=has_nan), counts)


def _exact_sort(matrix: np.ndarray, has_nan: bool) -> np.ndarray:
    """Sort each row; in float32 when that loses nothing (about twice as fast).

    Features usually arrive as float32 on the wire; their float64 copies convert back and
    forth exactly, so the sorted float32 block holds bit-identical values. It is returned
    as float32: converting 10k x 784 values back to float64 would cost more than the few
    row reads that need float64 later.
    """
    if matrix.dtype == np.float64 and matrix.size > 4096:
        with np.errstate(over="ignore"):
            narrow = matrix.astype(np.float32)
        same = (
            np.array_equal(narrow, matrix, equal_nan=True)
            if has_nan
            else bool((narrow == matrix).all())
        )
        if same:
            narrow.sort(axis=1)  # in place: no second 10k x 784 buffer
            return narrow
    return np.sort(matrix, axis=1)


def quantiles(series: SortedSeries, q: float) -> np.ndarray:
    """Linear-interpolated quantile of each row, as numpy's default method computes it."""
    counts = series.counts
    pos = q * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0))
    rows = np.arange(counts.size)
    a = series.sorted[rows, lo].astype(np.float64)
    b = series.sorted[rows, hi].astype(np.float64)
    t = pos - lo
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end for accuracy.
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def column_stats(matrix: np.ndarray, series: SortedSeries) -> dict[str, np.ndarray]:
    """The legacy ``stat`` set for each row of ``matrix``; rows without values give NaN."""
    counts = series.counts
    with np.errstate(invalid="ignore", divide="ignore"):
        if series.row_sums is not None:
            # What np.mean / np.std compute, reusing the row sums already taken.
            mean = series.row_sums / matrix.shape[1]
            squares = matrix - mean[:, None]
            np.square(squares, out=squares)
            std = np.sqrt(squares.sum(axis=1) / matrix.shape[1])
        elif counts.size and counts.min() == matrix.shape[1]:
            mean = matrix.mean(axis=1)
            std = matrix.std(axis=1)
        else:
            finite = np.isfinite(matrix)
            clean = np.where(finite, matrix, 0.0)
            mean = clean.sum(axis=1) / counts
            std = np.sqrt((np.where(finite, matrix - mean[:, None], 0.0) ** 2).sum(axis=1) / counts)
        rows = np.arange(counts.size)
        minimum = series.sorted[:, 0].astype(np.float64)
        maximum = series.sorted[rows, np.maximum(counts - 1, 0)].astype(np.float64)
        q25, q50, q75 = (quantiles(series, q) for q in (0.25, 0.5, 0.75))
        out = {
            "range": maximum - minimum,
            "mean": mean,
            "std": std,
            "median": q50,
            "q25": q25,
            "q50": q50,
            "q75": q75,
            "iqr": q75 - q25,
        }
    empty = counts == 0
    for values in out.values():
        values[empty] = np.nan
    return out


def row_summaries(probs: np.ndarray) -> dict[str, np.ndarray]:
    """pred1 (max probability), spread12 (top1 − top2) and normalised entropy per row."""
    top, second, plogp = kernels.prediction_summaries(probs)
    entropy = np.maximum(-plogp, 0.0) / np.log(probs.shape[1])
    return {"pred1": top, "spread12": top - second, "entropy": entropy}
