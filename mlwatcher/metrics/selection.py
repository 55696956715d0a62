"""Order statistics of long rows: the quartiles' neighbours without sorting the rows.

The close needs, for each feature row of ``n`` values, the order statistics of ranks
``floor(q (n - 1))`` and the next one up, for q = 0.25, 0.5, 0.75 (np.quantile's linear
interpolation reads the two). Two exact ways, the same values:

* :func:`by_partition`: three ``np.partition`` calls (the median, then one in each half):
  about 2n element moves in NumPy's SIMD introselect, on a scratch copy.
* :func:`by_brackets`: a sorted random sample of the row (the drift sample, which the close
  sorts anyway) brackets each quartile between two of its values, far enough apart that
  the row's quartile falls between them in all but ~1 row in 100 (``BRACKET_Z`` standard
  errors of the sample quantile's rank). One compiled read of the row counts the values
  below each bracket and copies the values inside the three brackets (a quarter of the
  row at 10k values) into a buffer, 8 values at a time with the CPU's compress
  instruction (``llvm.experimental.vector.compress``: ``vcompresspd`` on AVX-512, a
  shuffle sequence elsewhere). The buffers are sorted (NumPy, SIMD), and each order
  statistic is read at its rank minus the count below its bracket. A row whose quartile
  fell outside its bracket, or whose brackets hold more than half the row (heavy ties),
  goes to :func:`by_partition`. So the result never depends on the sample, only the time.

At 10k float64 values, on the AVX-512 machine of v0.10: 26 µs per row for the
partitions (with the copy they reorder) against 12 µs for the brackets (4 µs the read, 7 µs
the buffers' sort, the rest the rank reads); ``docs/metrics.md`` has the measurements.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from mlwatcher.metrics import kernels

# Half-width of each bracket, in standard errors of the sample quantile's rank.
BRACKET_Z = 3.0
# A row whose brackets (estimated from the sample) hold more than this share goes to
# the partitions: its buffer's sort would cost more than they do.
_MAX_BUFFER_SHARE = 0.5


def quartile_ranks(n: int) -> tuple[int, int, int]:
    """The 0-based ranks ``floor(q (n - 1))`` below q25, q50 and q75 of n values (np.quantile's
    linear interpolation reads each with the next one up)."""
    k25, k50, k75 = (int(np.floor(q * (n - 1))) for q in (0.25, 0.5, 0.75))
    return k25, k50, k75


def by_partition(work: np.ndarray, ranks: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Order statistics ``ranks`` (``low``) and ``ranks + 1`` (``high``) of each row, ``(rows,
    3)`` float64, by selection in ``work`` (which it reorders)."""
    k25, k50, k75 = ranks
    r75 = k75 - k50 - 1
    # The halves are partitioned in place: np.partition of a strided view (a copy) is
    # several times slower than ndarray.partition on it.
    middle = work
    middle.partition(k50, axis=1)
    lower, upper = middle[:, :k50], middle[:, k50 + 1 :]
    lower.partition(k25, axis=1)
    upper.partition(r75, axis=1)
    # Each "next" order statistic is the minimum of the part above its position.
    low = np.stack((lower[:, k25], middle[:, k50], upper[:, r75]), axis=1)
    high = np.stack(
        (
            lower[:, k25 + 1 :].min(axis=1),
            upper[:, : r75 + 1].min(axis=1),  # the smaller part of upper
            upper[:, r75 + 1 :].min(axis=1),
        ),
        axis=1,
    )
    return low.astype(np.float64), high.astype(np.float64)


def bracket_ranks(n: int, m: int, ranks: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The ranks in a sorted ``m``-value random sample of an ``n``-value row of the values
    that bracket the row's order statistics ``ranks`` and ``ranks + 1``: ``(lower, upper)``,
    3 each.

    The sample rank of the row's rank-k value is about ``k (m - 1) / (n - 1)``, with a
    standard error of ``sqrt(m p (1 - p) (1 - m / n))`` (p = k / n; a sample without
    replacement); each bracket reaches ``BRACKET_Z`` of them (and 2 ranks) either side.
    """
    lower, upper = np.empty(3, np.int64), np.empty(3, np.int64)
    for t, k in enumerate(ranks):
        p = k / max(n - 1, 1)
        centre = k * (m - 1) / max(n - 1, 1)
        reach = math.ceil(BRACKET_Z * math.sqrt(m * p * (1 - p) * max(1 - m / n, 0.0))) + 2
        lower[t] = max(0, math.floor(centre) - reach)
        upper[t] = min(m - 1, math.ceil(centre) + 1 + reach)
    return lower, upper


def by_brackets(
    values: np.ndarray,
    sample: np.ndarray,
    ranks: tuple[int, int, int],
    buffers: np.ndarray,
    *,
    compiled: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`by_partition`'s result for finite ``values`` (C-contiguous float64 rows, not
    reordered), found through the brackets of ``sample`` (each row's sorted random sample;
    see the module doc). ``buffers``: scratch of at least ``values.shape[1] + 8`` columns."""
    values = np.ascontiguousarray(values, dtype=np.float64)  # (the compiled step's layout)
    rows, n = values.shape
    lower, upper = bracket_ranks(n, sample.shape[1], ranks)
    bounds = np.empty((rows, 6))
    below = np.empty((rows, 3), np.int64)
    sizes = np.empty(rows, np.int64)
    limit = int(_MAX_BUFFER_SHARE * n)
    scratch = buffers[:rows]
    read_pass, read_ranks = _bracket_pass_loop, _read_ranks_loop
    if kernels.use_compiled(compiled):
        _require_compress()
        read_pass, read_ranks = _bracket_pass_compiled, _read_ranks_compiled
    widest = read_pass(values, sample, lower, upper, limit, bounds, below, sizes, scratch)
    chosen = scratch[:, :widest]
    chosen.sort(axis=1)  # in place, row by row (the padding is +inf: it stays last)
    low, high = np.empty((rows, 3)), np.empty((rows, 3))
    found = np.empty(rows, np.bool_)
    read_ranks(chosen, sizes, bounds, below, np.array(ranks, np.int64), low, high, found)
    if not found.all():
        missed = np.flatnonzero(~found)
        low[missed], high[missed] = by_partition(values[missed], ranks)
    return low, high


def _bracket_pass_loop(
    values: np.ndarray,
    sample: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    limit: int,
    bounds: np.ndarray,
    below: np.ndarray,
    sizes: np.ndarray,
    buffers: np.ndarray,
) -> int:
    """Per row: its brackets' bounds ``(L0, H0, L1, H1, L2, H2)``, the count of values below
    each ``L``, and the values inside any bracket, in row order, in its buffer row, padded
    with +inf up to the widest buffer (returned); size -1 when the sample says its buffer
    would be over ``limit``. The NumPy twin of the compiled loop."""
    rows, n = values.shape
    m = sample.shape[1]
    for r in range(rows):
        row, reference = values[r], sample[r]
        low, high = reference[lower].astype(np.float64), reference[upper].astype(np.float64)
        bounds[r, 0::2], bounds[r, 1::2] = low, high
        inside = np.searchsorted(reference, high, "right") - np.searchsorted(reference, low, "left")
        if int(inside.sum()) * n > limit * m:
            sizes[r] = -1
            continue
        mask = np.zeros(n, np.bool_)
        for t in range(3):
            mask |= (row >= low[t]) & (row <= high[t])
            below[r, t] = np.count_nonzero(row < low[t])
        kept = row[mask]
        buffers[r, : kept.size] = kept
        sizes[r] = kept.size
    widest = int(sizes.max(initial=0))
    for r in range(rows):
        buffers[r, max(sizes[r], 0) : widest] = np.inf
    return widest


def _read_ranks_loop(
    buffers: np.ndarray,
    sizes: np.ndarray,
    bounds: np.ndarray,
    below: np.ndarray,
    ranks: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    found: np.ndarray,
) -> None:
    """Per row, from its sorted buffer: the values of ``ranks`` and ``ranks + 1`` into ``low``
    and ``high``, and whether all six fell inside their brackets (``found``)."""
    for r in range(buffers.shape[0]):
        found[r] = False
        if sizes[r] < 0:
            continue
        kept = buffers[r, : sizes[r]]
        for t in range(3):
            # the buffer holds every value of the row in [L, H]; those of lower brackets
            # come before them
            first = np.searchsorted(kept, bounds[r, 2 * t], "left")
            last = np.searchsorted(kept, bounds[r, 2 * t + 1], "right")
            at = ranks[t] - below[r, t]
            if at < 0 or at + 1 >= last - first:
                break
            low[r, t], high[r, t] = kept[first + at], kept[first + at + 1]
        else:
            found[r] = True


_bracket_pass_compiled: Any = None
_read_ranks_compiled: Any = kernels._compiled(_read_ranks_loop)


def _compress_buildable() -> bool:
    """numba on LLVM 19 or later (the first with ``llvm.experimental.vector.compress``)."""
    if kernels.numba is None:
        return False
    binding = importlib.import_module("llvmlite.binding")
    return tuple(binding.llvm_version_info) >= (19,)


if _compress_buildable():  # (imported only here: the module needs numba and llvmlite)
    _bracket_pass_compiled = importlib.import_module("mlwatcher.metrics._compress").bracket_pass


def brackets_pay() -> bool:
    """Whether the close takes the brackets: when their compiled read runs (the NumPy twin
    reads row by row, slower than the partitions)."""
    return kernels.ENABLED and _bracket_pass_compiled is not None


def _require_compress() -> None:
    if _bracket_pass_compiled is None:
        raise RuntimeError("the compiled bracket read needs numba on LLVM >= 19")
