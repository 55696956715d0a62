"""The window close's two hot loops, compiled with numba, each beside its NumPy twin.

* :func:`copy_and_square_deviations`: one read of a block of feature rows gives the scratch
  copy that selection reorders (float32 when that is exact) and ``sum((x - mean)**2)``.
* :func:`ks_wasserstein_bins`: one merge of a sorted current sample with its sorted reference
  sample gives the two-sample KS statistic, the Wasserstein-1 distance and the PSI bin counts.

Without numba (``pip install mlwatcher[worker]`` brings it; a Python release numba does not
support yet would not) or with ``MLWATCHER_NUMBA=0``, the NumPy twins run: same contract,
several times slower (``benchmarks/bench_metrics.py``). The tests compare the two, and both
with SciPy. KS statistics and bin counts are the same to the bit in both; the sums (std,
Wasserstein) agree to a few ulps, as their order of summation differs.

The loops are sequential and free of ``fastmath``, so a record is the same bytes on every
CPU: a window closed again after a takeover, on another machine, re-emits the same record.
They run without the GIL, on the close's own threads (:mod:`mlwatcher.metrics.columns`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

numba: Any = importlib.import_module("numba") if importlib.util.find_spec("numba") else None

ENABLED = numba is not None and os.environ.get("MLWATCHER_NUMBA", "1") != "0"


def _compiled(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` compiled (lazily, on first call; cached on disk; GIL released), if numba is
    installed."""
    if numba is None:
        return func
    return numba.njit(nogil=True, cache=True)(func)  # type: ignore[union-attr, no-any-return]


def _use_compiled(compiled: bool | None) -> bool:
    if compiled is None:
        return ENABLED
    if compiled and numba is None:
        raise RuntimeError("the compiled loops need numba: pip install 'mlwatcher[worker]'")
    return compiled


def _copy_and_square_deviations_loop(
    values: np.ndarray, means: np.ndarray, out: np.ndarray, squares: np.ndarray
) -> int:
    rows, n = values.shape
    full = n - n % 4
    changed = 0
    for r in range(rows):
        row, copy, mean = values[r], out[r], means[r]
        # Four partial sums in locals: four adds in flight instead of one chain, and the
        # same order of summation on every CPU.
        s0 = s1 = s2 = s3 = 0.0
        for i in range(0, full, 4):
            x0, x1, x2, x3 = row[i], row[i + 1], row[i + 2], row[i + 3]
            copy[i], copy[i + 1], copy[i + 2], copy[i + 3] = x0, x1, x2, x3
            changed += (
                (copy[i] != x0) + (copy[i + 1] != x1) + (copy[i + 2] != x2) + (copy[i + 3] != x3)
            )
            d0, d1, d2, d3 = x0 - mean, x1 - mean, x2 - mean, x3 - mean
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
            s3 += d3 * d3
        for i in range(full, n):
            x = row[i]
            copy[i] = x
            changed += copy[i] != x
            d = x - mean
            s0 += d * d
        squares[r] = (s0 + s1) + (s2 + s3)
    return changed


_copy_and_square_deviations_compiled = _compiled(_copy_and_square_deviations_loop)


def copy_and_square_deviations(
    values: np.ndarray, means: np.ndarray, out: np.ndarray, *, compiled: bool | None = None
) -> tuple[np.ndarray, bool]:
    """Copy ``values`` (rows of finite floats) into ``out`` (float32 or float64, same shape)
    and return ``sum((values[r] - means[r])**2)`` per row, and whether every copied value
    equals its original (always true for a float64 ``out``).

    ``compiled``: the numba loop (default: when :data:`ENABLED`) or the NumPy twin.
    """
    squares = np.empty(values.shape[0])
    if _use_compiled(compiled):
        changed = _copy_and_square_deviations_compiled(values, means, out, squares)
        return squares, changed == 0
    with np.errstate(over="ignore"):
        np.copyto(out, values, casting="unsafe")
    deviations = values - means[:, None]
    squares[:] = np.einsum("ij,ij->i", deviations, deviations)
    return squares, out.dtype == values.dtype or bool((out == values).all())


def _merge_step(
    c: np.ndarray,
    g: np.ndarray,
    i: int,
    j: int,
    head_c: float,
    head_g: float,
    value: float,
    widest: int,
    area: float,
) -> tuple[int, int, float, float, float, int, float]:
    """One step of the merge of sorted ``c`` (n) and ``g`` (m) (see the loop below)."""
    n, m = c.size, g.size
    take = head_c <= head_g
    i += take
    j += 1 - take
    head_c = c[i] if i < n else np.inf
    head_g = g[j] if j < m else np.inf
    following = min(head_c, head_g)
    gap = abs(i * m - j * n)
    widest = max(widest, gap * (following != value))
    area += gap * (following - value)
    return i, j, head_c, head_g, following, widest, area


if numba is not None:
    _merge_step = numba.njit(nogil=True, cache=True, inline="always")(_merge_step)  # type: ignore[union-attr]


def _ks_wasserstein_bins_loop(
    current: np.ndarray,
    reference: np.ndarray,
    edges: np.ndarray,
    ks: np.ndarray,
    distance: np.ndarray,
    cumulative: np.ndarray,
) -> None:
    # A merge without unpredictable branches: each step takes the smaller head (the current
    # sample's on a tie). |F - G| is scaled by n * m to stay an exact integer; it is a KS
    # candidate only where the next value differs (after a run of ties). Two rows are
    # merged side by side: their steps are independent, so the CPU overlaps them.
    k, n = current.shape
    m = reference.shape[1]
    for r in range(0, k, 2):
        last = min(r + 1, k - 1)  # an odd last row is merged twice
        c0, g0, c1, g1 = current[r], reference[r], current[last], reference[last]
        i0 = j0 = i1 = j1 = 0
        head_c0, head_g0, head_c1, head_g1 = c0[0], g0[0], c1[0], g1[0]
        value0, value1 = min(head_c0, head_g0), min(head_c1, head_g1)
        widest0 = widest1 = 0
        area0 = area1 = 0.0
        for _ in range(n + m - 1):
            i0, j0, head_c0, head_g0, value0, widest0, area0 = _merge_step(
                c0, g0, i0, j0, head_c0, head_g0, value0, widest0, area0
            )
            i1, j1, head_c1, head_g1, value1, widest1, area1 = _merge_step(
                c1, g1, i1, j1, head_c1, head_g1, value1, widest1, area1
            )
        ks[r], ks[last] = widest0 / (n * m), widest1 / (n * m)
        distance[r], distance[last] = area0 / (n * m), area1 / (n * m)
    for r in range(k):
        i = 0
        for b in range(edges.shape[1]):
            while i < n and current[r, i] <= edges[r, b]:
                i += 1
            cumulative[r, b] = i


_ks_wasserstein_bins_compiled = _compiled(_ks_wasserstein_bins_loop)


def ks_wasserstein_bins(
    current: np.ndarray, reference: np.ndarray, edges: np.ndarray, *, compiled: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KS statistic, Wasserstein-1 distance and cumulative bin counts of row pairs.

    ``current`` ``(k, n)`` and ``reference`` ``(k, m)``: row-sorted finite samples (n, m >= 1).
    ``edges`` ``(k, b)``: each row's ascending bin edges (pad with +inf). Returns
    ``ks[r] = sup |F_r - G_r|``, ``distance[r] = ∫ |F_r - G_r| dx`` and
    ``cumulative[r, e] = #{current[r] <= edges[r, e]}``. ``compiled``: as for
    :func:`copy_and_square_deviations`.
    """
    k = current.shape[0]
    ks, distance = np.empty(k), np.empty(k)
    cumulative = np.empty(edges.shape, np.int64)
    if _use_compiled(compiled):
        _ks_wasserstein_bins_compiled(current, reference, edges, ks, distance, cumulative)
        return ks, distance, cumulative
    ks[:] = _ks_rows(current, reference)
    distance[:] = _wasserstein_rows(current, reference)
    for r in range(k):
        cumulative[r] = current[r].searchsorted(edges[r], side="right")
    return ks, distance, cumulative


def _ks_rows(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The KS statistic of each row pair (NumPy twin), evaluated at the current points.

    Between consecutive current values the current CDF is constant and the reference one
    monotone, so the supremum is reached at a current value or just before one: one binary
    search of the (sorted) current values per row, then ``max |F - G|`` for all rows at once,
    in counts scaled by ``n * m`` (exact integers, as in the compiled loop).
    """
    k, n = current.shape
    m = reference.shape[1]
    reference = np.ascontiguousarray(reference)
    at = np.empty((k, n), dtype=np.int64)
    for j in range(k):  # the method, not np.searchsorted: its wrapper costs
        at[j] = reference[j].searchsorted(current[j], side="right")
    # Where a current value occurs in the reference, the reference CDF just below it is
    # smaller than at it: search again (left) for those values alone. The reference value
    # before each search position, read from a copy with a -inf column in front (samples
    # are finite): one gather, no index clipping.
    padded = np.empty((k, m + 1))
    padded[:, 0] = -np.inf
    padded[:, 1:] = reference
    tied = padded.ravel().take(at + (np.arange(k) * (m + 1))[:, None]) == current
    below = at
    tied_rows = np.flatnonzero(tied.any(axis=1))
    if tied_rows.size:
        below = at.copy()
        for j in tied_rows:
            below[j, tied[j]] = reference[j].searchsorted(current[j, tied[j]], side="left")
    # The current count at (and just below) its own i-th value is i + 1 (i) unless values
    # repeat; rows with repeats are searched.
    idx = np.arange(n)
    cur_at = np.broadcast_to(idx + 1, (k, n))
    cur_below = np.broadcast_to(idx, (k, n))
    repeats = np.flatnonzero((current[:, 1:] == current[:, :-1]).any(axis=1))
    if repeats.size:
        cur_at, cur_below = cur_at.copy(), cur_below.copy()
        for j in repeats:
            cur_at[j] = current[j].searchsorted(current[j], side="right")
            cur_below[j] = current[j].searchsorted(current[j], side="left")
    gaps = cur_at * m - at * n
    widest = np.abs(gaps, out=gaps).max(axis=1)
    np.subtract(cur_below * m, below * n, out=gaps)
    return np.maximum(widest, np.abs(gaps, out=gaps).max(axis=1)) / (n * m)


@lru_cache(maxsize=64)
def quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs and widths of the common refinement of the grids i/n and j/m."""
    points = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)
    widths = np.diff(points, prepend=0) / (n * m)
    return (points + m - 1) // m - 1, (points + n - 1) // n - 1, widths


def _wasserstein_rows(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The Wasserstein-1 distance of each row pair (NumPy twin), via the quantile functions."""
    k, n = current.shape
    m = reference.shape[1]
    if m == n:  # a window against a previous window of the same size
        gaps = reference - current
        return np.abs(gaps, out=gaps).sum(axis=1) / m
    if m % n == 0:  # 1000 vs 2000 at the close: each current value faces m/n reference ones
        gaps = reference.reshape(k, n, m // n) - current[:, :, None]
        return np.abs(gaps, out=gaps).reshape(k, m).sum(axis=1) / m
    idx_cur, idx_ref, widths = quantile_grid(n, m)
    gaps = current[:, idx_cur] - reference[:, idx_ref]
    # einsum, not @: a BLAS matrix-vector product this small costs more in thread hand-off.
    return np.einsum("ij,j->i", np.abs(gaps, out=gaps), widths)


def _prediction_summaries_loop(
    probs: np.ndarray, top: np.ndarray, second: np.ndarray, plogp: np.ndarray
) -> None:
    rows, n_classes = probs.shape
    for r in range(rows):
        first = runner_up = -np.inf
        total = 0.0
        for c in range(n_classes):
            p = probs[r, c]
            if p > first:
                runner_up = first
                first = p
            elif p > runner_up:
                runner_up = p
            if p > 0:
                total += p * np.log(p)
        top[r], second[r], plogp[r] = first, runner_up, total


_prediction_summaries_compiled = _compiled(_prediction_summaries_loop)


def prediction_summaries(
    probs: np.ndarray, *, compiled: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The largest and second largest probability of each row (equal on a tie) and
    ``Σ p log p`` over its positive probabilities. ``probs``: finite, at least 2 columns.

    ``compiled``: as for :func:`copy_and_square_deviations`.
    """
    if _use_compiled(compiled):
        rows = probs.shape[0]
        top, second, plogp = np.empty(rows), np.empty(rows), np.empty(rows)
        _prediction_summaries_compiled(probs, top, second, plogp)
        return top, second, plogp
    n_classes = probs.shape[1]
    top2 = np.partition(probs, n_classes - 2, axis=1)[:, n_classes - 2 :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    return top2[:, 1].copy(), top2[:, 0].copy(), terms.sum(axis=1)
