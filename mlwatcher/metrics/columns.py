"""The window close of the numeric features: one pass per block of columns.

Each feature (one row of the column-major sample matrix) needs its exact stat set and, with a
reference, its drift scores. A full sort per feature would give all of it, but it is the
single most expensive thing the close could do. Instead, for each block of a few features
(small enough to stay in cache while every statistic reads it):

* the quartiles come from **selection**: one ``np.partition`` at the median, then one in each
  half for q25 and q75 (2n element moves, against n log n for a sort); min and max come from
  the outer quarters, the value after each quartile from the minimum of its upper part;
* mean and std are numpy's two-pass formulas on the block;
* with references, PSI, JS, KS and Wasserstein compare a **bounded drift sample** of
  ``DRIFT_SAMPLE_SIZE`` values (the same seeded random positions for every feature; all
  values when the window has fewer) with the reference sample. That is the one estimator
  that differs from the full reservoir, on purpose: sorting and searching every value is
  what made the close slow, and the drift flag's binding condition at these sizes is the
  PSI floor, so the smallest flagged shift does not move (measured in docs/metrics.md,
  ``benchmarks/bench_drift_power.py``). Their p-values and flags come once for all blocks.

Float32-exact blocks (features usually arrive as float32) are selected and sorted in float32,
about twice as fast, with bit-identical values. Blocks run on ``threads`` threads: NumPy
releases the GIL in partition, sort and the reductions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mlwatcher.metrics import drift
from mlwatcher.metrics.drift import NUMERIC_STATS, NumericReference
from mlwatcher.metrics.stats import STATS, SortedSeries, column_stats

# Numeric drift runs on at most this many values of each feature (see the module doc).
DRIFT_SAMPLE_SIZE = 1000
# Rows below this are sorted: selection only pays off on long rows.
_SELECT_MIN_ROWS = 64
# Values per block: a block (plus the partition copies) stays within the L2/L3 caches.
_BLOCK_VALUES = 1 << 18
# Drift-sample values per block: the KS and Wasserstein arrays (block x sample, 512 KB)
# stay in L2 (at 1000 rows, 262 features per block made them 2 MB each: 1.4x slower).
_SAMPLE_BLOCK_VALUES = 1 << 16
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
    references: Sequence[NumericReference | None] | None = None,
    *,
    threads: int | None = None,
) -> ColumnSummary:
    """Stats (and drift against ``references[j]`` for row ``j``, if given) of each row."""
    n_rows, n = matrix.shape
    stats = {name: np.full(n_rows, np.nan) for name in STATS}
    names = (*NUMERIC_STATS, "n", "m")
    scores = None if references is None else {k: np.full(n_rows, np.nan) for k in names}
    block = max(1, _BLOCK_VALUES // max(n, 1))
    if scores is not None:  # the drift scores' (block, sample) arrays stay in cache too
        block = max(1, min(block, _SAMPLE_BLOCK_VALUES // max(min(n, DRIFT_SAMPLE_SIZE), 1)))
    starts = range(0, n_rows, block)

    def run(start: int) -> None:
        rows = slice(start, min(start + block, n_rows))
        block_stats, samples = _block(matrix[rows], with_sample=scores is not None)
        for name, column in block_stats.items():
            stats[name][rows] = column
        if scores is not None and references is not None:
            for name, column in drift.sample_scores(samples, references[rows]).items():
                scores[name][rows] = column

    threads = DEFAULT_THREADS if threads is None else threads
    if threads > 1 and len(starts) > 1:
        list(_pool(threads).map(run, starts))
    else:
        for start in starts:
            run(start)
    return ColumnSummary(stats, None if scores is None else drift.finish_scores(scores))


def _block(values: np.ndarray, with_sample: bool) -> tuple[dict[str, np.ndarray], list]:
    """Stat set and (if asked) sorted drift sample of each row of one block."""
    n = values.shape[1]
    sums = values.sum(axis=1)
    positions = drift_sample_positions(n)
    if n < _SELECT_MIN_ROWS or not np.isfinite(sums).all():
        # Short rows or rows with missing values: sort them (missing values last).
        series = SortedSeries.of(values)
        picked = values[:, positions] if with_sample else values[:0]
        samples = [np.sort(row[np.isfinite(row)]) for row in picked]
        return column_stats(values, series), samples
    work = _float32_if_exact(values)
    samples: np.ndarray | list = []
    if with_sample:  # one row-sorted matrix: the drift scores take all rows at once
        gathered = work[:, positions]  # a copy: sorted in place
        gathered.sort(axis=1)
        samples = gathered.astype(np.float64, copy=False)
    return _selected_stats(values, work, sums), samples  # (may reorder ``work``'s rows)


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


def _float32_if_exact(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 (a scratch copy) when that changes no value (checked on a few
    columns first), else ``values`` itself."""
    head = values[:, :16]
    with np.errstate(over="ignore"):
        if not bool((head.astype(np.float32) == head).all()):
            return values
        narrow = _scratch_array("float32", values.shape, np.float32)
        np.copyto(narrow, values, casting="unsafe")
    return narrow if bool((narrow == values).all()) else values


def _selected_stats(
    values: np.ndarray, work: np.ndarray, sums: np.ndarray
) -> dict[str, np.ndarray]:
    """The stat set of rows without missing values, quartiles by selection (see module doc).

    ``work`` is ``values`` or a float32 scratch copy of it, which is reordered in place.
    Every returned array is new (none is a view of a scratch array).
    """
    n = values.shape[1]
    mean = sums / n
    deviations = np.subtract(values, mean[:, None], out=_scratch_array("dev", values.shape, float))
    std = np.sqrt(np.einsum("ij,ij->i", deviations, deviations) / n)
    k25, k50, k75 = (int(np.floor(q * (n - 1))) for q in (0.25, 0.5, 0.75))
    r75 = k75 - k50 - 1
    # The halves are partitioned in place: np.partition of a strided view (a copy) is
    # several times slower than ndarray.partition on it.
    if work is values:  # the reservoir's rows: never in place
        middle = _scratch_array("select", values.shape, values.dtype.type)
        np.copyto(middle, values)
    else:
        middle = work  # this block's own float32 copy
    middle.partition(k50, axis=1)
    lower, upper = middle[:, :k50], middle[:, k50 + 1 :]
    lower.partition(k25, axis=1)
    upper.partition(r75, axis=1)
    # Each "next" order statistic is the minimum of the part above its position.
    order = {
        k25: (lower[:, k25], lower[:, k25 + 1 :].min(axis=1)),
        k50: (middle[:, k50], upper[:, : r75 + 1].min(axis=1)),  # the smaller part of upper
        k75: (upper[:, r75], upper[:, r75 + 1 :].min(axis=1)),
    }
    quartiles = []
    for q, k in ((0.25, k25), (0.5, k50), (0.75, k75)):
        a, b = (x.astype(np.float64) for x in order[k])
        t = q * (n - 1) - k
        # numpy's _lerp: interpolate from the nearer end, as np.quantile does.
        quartiles.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    minimum = lower[:, : k25 + 1].min(axis=1).astype(np.float64)
    maximum = upper[:, r75:].max(axis=1).astype(np.float64)
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
