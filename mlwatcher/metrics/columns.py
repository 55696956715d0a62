"""The window close of the numeric features: one pass per block of columns.

Each feature (one row of the column-major sample matrix) needs its exact stat set and, with a
reference, its drift scores. A full sort per feature would give all of it, but it is the
single most expensive thing the close could do. Instead, for each block of a few features
(small enough to stay in cache while every statistic reads it):

* the mean is NumPy's (``np.sum``); one compiled read of each row
  (:func:`kernels.row_moments`) gives the squared deviations from it, the minimum and the
  maximum;
* the quartiles' order statistics come from the **brackets** of the row's sorted drift
  sample (:func:`selection.by_brackets`: one compiled read keeps the values inside three
  narrow brackets, and only those are sorted) when the compiled loops run, or else from
  **selection** (:func:`selection.by_partition`: one ``np.partition`` at the median, then
  one in each half, in a scratch copy the read makes, float32 when that is exact). With
  references and at most ``DRIFT_SAMPLE_SIZE`` rows, the drift sample below is every
  value, sorted: the quartiles are read off it;
* with references, PSI, JS, KS and Wasserstein compare a **bounded drift sample** of
  ``DRIFT_SAMPLE_SIZE`` values (the same seeded random positions for every feature; all
  values when the window has fewer) with the reference sample, one merge of the two sorted
  samples per feature (:func:`kernels.ks_wasserstein_bins`). The sample is the one estimator
  that differs from the full reservoir, on purpose: the drift flag's binding condition at
  these sizes is the PSI floor, so the smallest flagged shift does not move (measured in
  docs/metrics.md, ``benchmarks/bench_drift_power.py``). Scores, p-values and flags come
  once for all blocks.

Float32-exact samples and blocks (features usually arrive as float32) are sorted and
selected in float32, about twice as fast, with bit-identical values. Blocks run on
``threads`` threads: NumPy releases the GIL in partition and sort, the compiled loops run
without it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mlwatcher.metrics import drift, kernels, selection
from mlwatcher.metrics.drift import NUMERIC_STATS, NumericReference
from mlwatcher.metrics.stats import STATS, SortedSeries, column_stats

# Numeric drift runs on at most this many values of each feature (see the module doc).
DRIFT_SAMPLE_SIZE = 1000
# Rows below this are sorted: selection only pays off on long rows.
_SELECT_MIN_ROWS = 64
# Without a drift sample to reuse, rows from this long gather one for the brackets.
_BRACKET_MIN_ROWS = 4 * DRIFT_SAMPLE_SIZE
# Values per block: a block (plus the partition copies) stays within the L2/L3 caches.
_BLOCK_VALUES = 1 << 18
# Threads over column blocks (1 = none); ``summarise(..., threads=)`` overrides it per call.
DEFAULT_THREADS = min(2, os.cpu_count() or 1)


@dataclass(slots=True)
class ColumnSummary:
    """Stat set of each row and, when references were given, its drift scores (NaN = n/a)."""

    stats: dict[str, np.ndarray]
    drift: dict[str, np.ndarray] | None


@lru_cache(maxsize=16)
def drift_sample_positions(n: int, size: int = DRIFT_SAMPLE_SIZE) -> np.ndarray:
    """Sorted positions of the bounded drift sub-sample of an ``n``-row sample (all if n <= size).

    Fixed per ``n`` (seeded) so a window closed twice gives the same record. Random, not the
    first slots: a reservoir's slot order follows arrival time until it is full.
    """
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def summarise(
    matrix: np.ndarray,
    references: Sequence[NumericReference | None] | drift.ReferenceRows | None = None,
    *,
    threads: int | None = None,
) -> ColumnSummary:
    """Stats (and drift against ``references[j]`` for row ``j``, if given) of each row."""
    return start_summary(matrix, references, threads=threads)()


def start_summary(
    matrix: np.ndarray,
    references: Sequence[NumericReference | None] | drift.ReferenceRows | None = None,
    *,
    threads: int | None = None,
) -> Callable[[], ColumnSummary]:
    """:func:`summarise`, started on the close's threads: call the result to wait for it.

    The window close computes its other points meanwhile (the threads spend most of their
    time in NumPy's selection and the compiled loops, without the GIL). With one thread the
    work is done when the result is called.
    """
    n_rows, n = matrix.shape
    block = max(1, _BLOCK_VALUES // max(n, 1))
    starts = range(0, n_rows, block)
    # One block (a small window) returns its own new arrays: no per-stat copy into place.
    single = len(starts) == 1
    stats = {} if single else {name: np.full(n_rows, np.nan) for name in STATS}
    refs = references
    if refs is not None and not isinstance(refs, drift.ReferenceRows):
        refs = drift.ReferenceRows.of(refs)
    scores = None
    if refs is not None:
        scores = {name: np.full(n_rows, np.nan) for name in (*NUMERIC_STATS, "n", "m")}
        # The merges' results of blocks with every row stacked; scored once, at the end.
        ks, distance = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
        cumulative = np.zeros((n_rows, refs.edges.shape[1]), np.int64)
        merged = np.zeros(n_rows, bool)

    def run(start: int) -> None:
        rows = slice(start, min(start + block, n_rows))
        block_stats, samples = _block(matrix[rows], with_sample=refs is not None)
        if single:
            stats.update(block_stats)
        else:
            for name, column in block_stats.items():
                stats[name][rows] = column
        if refs is None or scores is None:
            return
        if isinstance(samples, np.ndarray) and samples.shape[1] and refs.stacked[rows].all():
            ks[rows], distance[rows], cumulative[rows] = kernels.ks_wasserstein_bins(
                samples, refs.samples[rows], refs.edges[rows]
            )
            merged[rows] = True
        else:
            for name, column in drift.sample_scores(samples, refs.rows(rows)).items():
                scores[name][rows] = column

    threads = DEFAULT_THREADS if threads is None else threads
    parallel = threads > 1 and len(starts) > 1
    futures = [_pool(threads).submit(run, start) for start in starts] if parallel else []

    def finish() -> ColumnSummary:
        if parallel:
            for future in futures:
                future.result()
        else:
            for start in starts:
                run(start)
        if refs is None or scores is None:
            return ColumnSummary(stats, None)
        if merged.any():
            at = np.flatnonzero(merged)
            n_sample = drift_sample_positions(n).size
            # all rows merged (the usual case): the references as they are, not a copy
            chosen = refs if at.size == n_rows else refs.rows(at)
            part = drift.scores_of_merge(ks[at], distance[at], cumulative[at], n_sample, chosen)
            for name, column in part.items():
                scores[name][at] = column
        return ColumnSummary(stats, drift.finish_scores(scores))

    return finish


def _block(values: np.ndarray, with_sample: bool) -> tuple[dict[str, np.ndarray], list]:
    """Stat set and (if asked) sorted drift sample of each row of one block."""
    n = values.shape[1]
    sums = values.sum(axis=1)
    positions = drift_sample_positions(n)
    # A NaN or inf makes its row's sum non-finite (an overflow too: then exact counts).
    if n < _SELECT_MIN_ROWS or not np.isfinite(sums).all():
        # Short rows or rows with missing values: sort them (missing values last).
        series = SortedSeries.of(values)
        picked = values[:, positions] if with_sample else values[:0]
        samples = [np.sort(row[np.isfinite(row)]) for row in picked]
        return column_stats(values, series), samples
    mean = sums / n
    ranks = selection.quartile_ranks(n)
    brackets = selection.brackets_pay()
    sample = None
    if with_sample or (brackets and n >= _BRACKET_MIN_ROWS):
        sample = _sorted_sample(values, positions)
    if sample is not None and (positions.size == n or brackets):  # no copy to reorder
        moments, _ = kernels.row_moments(values, mean, None)
        if positions.size == n:  # every value, sorted: read them off
            at = np.array(ranks)
            order = (sample[:, at], sample[:, at + 1])
        else:
            buffers = _scratch_array("brackets", (values.shape[0], n + 8), np.float64)
            order = selection.by_brackets(values, sample, ranks, buffers)
    else:
        work, moments = _selection_copy(values, mean)
        order = selection.by_partition(work, ranks)
    return _selected_stats(mean, moments, n, order), [] if sample is None else sample


def _sorted_sample(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The drift sample of each row (its values at ``positions``), sorted, float64; sorted in
    float32 when that changes no value (twice as fast)."""
    # np.take, not values[:, positions]: that copy is column-major, and sorting its strided
    # rows is 20 % slower
    gathered = np.take(values, positions, axis=1)
    if _float32_exact(gathered[:, :16]):  # a few values first: float64 data is read once
        narrow = gathered.astype(np.float32)
        if (narrow == gathered).all():
            narrow.sort(axis=1)
            return narrow.astype(np.float64)
    gathered.sort(axis=1)
    return gathered


def _float32_exact(values: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool((values.astype(np.float32) == values).all())


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    """The close's threads, kept from one close to the next with their scratch arrays."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlwatcher-close")


# A forked child has the pool object but not its threads: it starts its own.
os.register_at_fork(after_in_child=_pool.cache_clear)

_scratch = threading.local()


def _scratch_array(name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """A block-sized array of this thread, reused by every block of every close.

    A fresh multi-MB array is mmap'd by malloc and page-faults on first touch: on the
    2-vCPU VM that cost as much as the partition itself, and the faults of two threads
    serialised on the kernel's memory-map lock (two threads were no faster than one).
    At most ``_BLOCK_VALUES`` (+ one row) values each, so a few MB per thread.
    """
    buffers: dict[tuple[str, type], np.ndarray] = getattr(_scratch, "buffers", None) or {}
    _scratch.buffers = buffers
    size = shape[0] * shape[1]
    flat = buffers.get((name, dtype))
    if flat is None or flat.size < size:
        flat = buffers[(name, dtype)] = np.empty(size, dtype)
    return flat[:size].reshape(shape)


def _selection_copy(values: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, kernels.RowMoments]:
    """A scratch copy of ``values`` for selection to reorder, and the rows' moments about
    ``mean``, from one read (:func:`kernels.row_moments`).

    The copy is float32 when that changes no value (features usually arrive as float32:
    selection and sorting then move half the bytes, with bit-identical results); a few
    columns are checked first, so float64 data is read once.
    """
    if _float32_exact(values[:, :16]):
        copy = _scratch_array("float32", values.shape, np.float32)
        moments, exact = kernels.row_moments(values, mean, copy)
        if exact:
            return copy, moments
    copy = _scratch_array("select", values.shape, np.float64)
    moments, _ = kernels.row_moments(values, mean, copy)
    return copy, moments


def _selected_stats(
    mean: np.ndarray,
    moments: kernels.RowMoments,
    n: int,
    order: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """The stat set of rows of ``n`` values without missing values, from their moments and
    the quartiles' order statistics (``order``: ranks and ranks + 1, as
    :func:`selection.by_partition` returns them). Every returned array is new (none is a
    view of a scratch array)."""
    std = np.sqrt(moments.squares / n)
    minimum, maximum = moments.minima, moments.maxima
    ranks = selection.quartile_ranks(n)
    low, high = order
    quartiles = []
    for t, q in enumerate((0.25, 0.5, 0.75)):
        a, b = low[:, t], high[:, t]
        fraction = q * (n - 1) - ranks[t]
        # numpy's _lerp: interpolate from the nearer end, as np.quantile does.
        quartiles.append(
            b - (b - a) * (1 - fraction) if fraction >= 0.5 else a + (b - a) * fraction
        )
    q25, q50, q75 = quartiles
    return {
        "range": maximum - minimum,
        "mean": mean,
        "std": std,
        "median": q50,
        "q25": q25,
        "q50": q50,
        "q75": q75,
        "iqr": q75 - q25,
    }
