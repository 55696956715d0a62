"""The metric engine's hot loops, compiled with numba, each beside its NumPy twin.

The window close:

* :func:`row_moments`: one read of a block of feature rows gives the squared deviations,
  minima and maxima, and (for the partitions) the scratch copy that selection reorders
  (float32 when that is exact). The quartiles' bracket read is in
  :mod:`mlwatcher.metrics.selection` (its compress step is LLVM IR).
* :func:`ks_wasserstein_bins`: one merge of a sorted current sample with its sorted reference
  sample gives the two-sample KS statistic, the Wasserstein-1 distance and the PSI bin counts.
* :func:`prediction_summaries`: the top two probabilities and ``Σ p log p`` of every row.
* :func:`pelz_good_cdf`: the series behind the KS p-values of large samples.
* :func:`confusion_scores`: every label metric of a confusion matrix (realised and
  expected), in one call instead of ~25 NumPy calls on a 10 × 10 matrix.

The update of one batch, in two compiled calls: :func:`count_batch` (the fast path of its
validation, its predicted classes and every counter, written into the counters' flat
buffers) and :func:`apply_batch` (the reservoir slots it writes, the rows gathered for
them and written there, and the counters added to the window's). A replayed batch is
written by :func:`scatter_rows`. They are built of the loops the rest of the
engine calls one by one: :func:`probabilities_within` and :func:`predicted_classes` (one
loop gives both), :func:`batch_counts` and :func:`replacement_slots`.

Without numba (``pip install mlwatcher[worker]`` brings it; a Python release numba does not
support yet would not) or with ``MLWATCHER_NUMBA=0``, the NumPy twins run: same contract,
slower (``benchmarks/bench_metrics.py``). The tests compare the two, and both with SciPy or
NumPy. Counts, KS statistics, sums and slots are the same bits in both; sums of squares,
Wasserstein and the batch's float sums agree to a few ulps (another order of summation).

No loop reassociates arithmetic, so a record is the same bytes on every CPU: a window
closed again after a takeover, on another machine, re-emits the same record. (The moments'
loop is told its values are finite, which changes no result for finite values.) They run
without the GIL, on the close's own threads (:mod:`mlwatcher.metrics.columns`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

numba: Any = importlib.import_module("numba") if importlib.util.find_spec("numba") else None

ENABLED = numba is not None and os.environ.get("MLWATCHER_NUMBA", "1") != "0"


def _compiled(func: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    """``func`` compiled (lazily, on first call; cached on disk; GIL released), if numba is
    installed."""
    if numba is None:
        return func
    return numba.njit(nogil=True, cache=True, **options)(func)  # type: ignore[no-any-return]


def use_compiled(compiled: bool | None) -> bool:
    """Whether a call asking for ``compiled`` (None: the default) runs the compiled loop."""
    if compiled is None:
        return ENABLED
    if compiled and numba is None:
        raise RuntimeError("the compiled loops need numba: pip install 'mlwatcher[worker]'")
    return compiled


def _row_lanes(row: np.ndarray, mean: float, copy: np.ndarray | None) -> tuple[float, float, float]:
    """Σ (x − mean)², minimum and maximum of one row, copied into ``copy`` in the same loop
    unless it is None (then the copy branch is compiled out)."""
    n = row.size
    full = n - n % 4
    # Four lanes in locals (sums, minima, maxima): each lane sums in a fixed order, so the
    # result is the same on every CPU.
    s0 = s1 = s2 = s3 = 0.0
    low0 = low1 = low2 = low3 = high0 = high1 = high2 = high3 = row[0]
    for i in range(0, full, 4):
        x0, x1, x2, x3 = row[i], row[i + 1], row[i + 2], row[i + 3]
        if copy is not None:
            copy[i], copy[i + 1], copy[i + 2], copy[i + 3] = x0, x1, x2, x3
        low0, low1, low2, low3 = min(low0, x0), min(low1, x1), min(low2, x2), min(low3, x3)
        high0, high1 = max(high0, x0), max(high1, x1)
        high2, high3 = max(high2, x2), max(high3, x3)
        d0, d1, d2, d3 = x0 - mean, x1 - mean, x2 - mean, x3 - mean
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for i in range(full, n):
        x = row[i]
        if copy is not None:
            copy[i] = x
        low0, high0 = min(low0, x), max(high0, x)
        d = x - mean
        s0 += d * d
    squares = (s0 + s1) + (s2 + s3)
    return squares, min(min(low0, low1), min(low2, low3)), max(max(high0, high1), max(high2, high3))


# The rows are finite (the caller's contract: it checks their sums first), and with that
# promised the minima and maxima vectorise. No reassociation: the sums keep their order.
_FINITE = {"nnan", "ninf"}
_row_lanes = _compiled(_row_lanes, fastmath=_FINITE)


def _row_moments_loop(
    values: np.ndarray,
    means: np.ndarray,
    out: np.ndarray | None,
    squares: np.ndarray,
    minima: np.ndarray,
    maxima: np.ndarray,
    narrow: bool,
) -> int:
    rows, n = values.shape
    changed = 0
    for r in range(rows):
        if out is None:  # no copy (the close found the quartiles without one)
            squares[r], minima[r], maxima[r] = _row_lanes(values[r], means[r], None)
            continue
        row, copy = values[r], out[r]
        if not narrow:  # a copy of the same dtype: made in the moments' loop
            squares[r], minima[r], maxima[r] = _row_lanes(row, means[r], copy)
            continue
        # A narrower copy (float32): in a loop of its own, which vectorises (the conversions
        # in the moments' loop kept all of it scalar: 12-14 -> 9 us per 10k-value row).
        squares[r], minima[r], maxima[r] = _row_lanes(row, means[r], None)
        for i in range(n):
            x = row[i]
            copy[i] = x
            changed += copy[i] != x
    return changed


_row_moments_compiled = _compiled(_row_moments_loop, fastmath=_FINITE)


class RowMoments(NamedTuple):
    """Per row: Σ (x − mean)², minimum, maximum."""

    squares: np.ndarray
    minima: np.ndarray
    maxima: np.ndarray


def row_moments(
    values: np.ndarray,
    means: np.ndarray,
    out: np.ndarray | None,
    *,
    compiled: bool | None = None,
) -> tuple[RowMoments, bool]:
    """The :class:`RowMoments` of ``values``' rows (finite values only) about ``means``, and
    a copy of them in ``out`` (float32 or float64, same shape; None: no copy) made in the
    same read, with whether it changed no value (always for a float64 ``out``).

    ``compiled``: the numba loop (default: when :data:`ENABLED`) or the NumPy twin.
    """
    rows = values.shape[0]
    if use_compiled(compiled):
        moments = RowMoments(np.empty(rows), np.empty(rows), np.empty(rows))
        narrow = out is not None and out.dtype != values.dtype
        changed = _row_moments_compiled(values, means, out, *moments, narrow)
        return moments, changed == 0
    exact = True
    if out is not None:
        with np.errstate(over="ignore"):
            np.copyto(out, values, casting="unsafe")
        exact = out.dtype == values.dtype or bool((out == values).all())
    deviations = values - means[:, None]
    squares = np.einsum("ij,ij->i", deviations, deviations)
    return RowMoments(squares, values.min(axis=1), values.max(axis=1)), exact


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
    :func:`row_moments`.
    """
    k = current.shape[0]
    ks, distance = np.empty(k), np.empty(k)
    cumulative = np.empty(edges.shape, np.int64)
    if use_compiled(compiled):
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
            # Without branches: on a model's probabilities "is this the new top?" is a coin
            # toss the CPU mispredicts (the branchy loop took 2.8x as long).
            runner_up = max(runner_up, min(first, p))
            first = max(first, p)
            if p > 0:
                total += p * np.log(p)
        top[r], second[r], plogp[r] = first, runner_up, total


_prediction_summaries_compiled = _compiled(_prediction_summaries_loop)


def prediction_summaries(
    probs: np.ndarray, *, compiled: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The largest and second largest probability of each row (equal on a tie) and
    ``Σ p log p`` over its positive probabilities. ``probs``: finite, at least 2 columns.

    ``compiled``: as for :func:`row_moments`.
    """
    if use_compiled(compiled):
        rows = probs.shape[0]
        top, second, plogp = np.empty(rows), np.empty(rows), np.empty(rows)
        _prediction_summaries_compiled(probs, top, second, plogp)
        return top, second, plogp
    n_classes = probs.shape[1]
    top2 = np.partition(probs, n_classes - 2, axis=1)[:, n_classes - 2 :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    return top2[:, 1].copy(), top2[:, 0].copy(), terms.sum(axis=1)


class BatchCounts(NamedTuple):
    """The probability and label counters of one batch (see ``ExactCounters.from_batch``)."""

    pred_counts: np.ndarray  # (C,) rows per predicted class
    expected_confusion: np.ndarray  # (C, C): [i, j] = Σ p_i over the rows predicted j
    confidence_rows: np.ndarray  # (C, N_BINS): rows per predicted class and confidence bin
    confidence_sq_sum: float  # Σ confidence²
    # Over the labelled rows (zeros without labels):
    confusion: np.ndarray  # (C, C): [label, predicted]
    log_loss_sum: float  # Σ -log(clip(p_label, eps, 1 - eps))
    brier_sum: float  # Σ Σ_c (p_c - 1[label = c])²
    reliability_rows: np.ndarray  # (N_BINS,) labelled rows per confidence bin
    reliability_confidence_sum: np.ndarray  # (N_BINS,) Σ confidence per bin
    reliability_correct: np.ndarray  # (N_BINS,) correct predictions per bin


_PI_SQUARED, _PI_FOUR, _PI_SIX = np.pi**2, np.pi**4, np.pi**6
_SQRT2PI, _SQRT3 = float(np.sqrt(2 * np.pi)), float(np.sqrt(3))


def _confusion_scores_loop(
    confusion: np.ndarray, per_class: np.ndarray, averaged: np.ndarray
) -> float:
    n = confusion.shape[0]
    support, predicted = np.zeros(n), np.zeros(n)
    total = 0.0
    for true in range(n):
        for guess in range(n):
            count = confusion[true, guess]
            total += count
            support[true] += count
            predicted[guess] += count
    tp_sum = fp_sum = fn_sum = 0.0
    macro, weighted = np.zeros(3), np.zeros(3)
    for c in range(n):
        tp = confusion[c, c]
        fp, fn = predicted[c] - tp, support[c] - tp
        per_class[c, 0] = (total - fp - fn) / total if total != 0 else np.nan
        per_class[c, 1] = tp / (tp + fp) if tp + fp != 0 else 0.0
        per_class[c, 2] = tp / (tp + fn) if tp + fn != 0 else 0.0
        per_class[c, 3] = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn != 0 else 0.0
        for k in range(3):
            macro[k] += per_class[c, k + 1]
            weighted[k] += per_class[c, k + 1] * support[c]
        tp_sum += tp
        fp_sum += fp
        fn_sum += fn
    micro_f1_den = 2 * tp_sum + fp_sum + fn_sum
    micro = (
        tp_sum / (tp_sum + fp_sum) if tp_sum + fp_sum != 0 else 0.0,
        tp_sum / (tp_sum + fn_sum) if tp_sum + fn_sum != 0 else 0.0,
        2 * tp_sum / micro_f1_den if micro_f1_den != 0 else np.nan,
    )
    for k in range(3):
        averaged[3 * k] = macro[k] / n
        averaged[3 * k + 1] = micro[k]
        averaged[3 * k + 2] = weighted[k] / total if total != 0 else np.nan
    return tp_sum / total if total != 0 else np.nan


_confusion_scores_compiled = _compiled(_confusion_scores_loop)


def confusion_scores(
    confusion: np.ndarray, *, compiled: bool | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The label metrics of a float confusion matrix (``[true, predicted]``), as defined in
    :func:`mlwatcher.metrics.estimated.scores`: per class (rows) accuracy, precision,
    recall and F1; precision, recall and F1 each macro, micro and weighted (9 values); the
    overall accuracy. An empty matrix gives NaN where scikit-learn would divide by zero.

    ``compiled``: as for :func:`row_moments`. The twin sums in NumPy's order, so the two
    agree to a few ulps on fractional counts and exactly on integer ones, except the
    averages (a mean of ratios, also a few ulps).
    """
    n = confusion.shape[0]
    if use_compiled(compiled):
        per_class, averaged = np.empty((n, 4)), np.empty(9)
        overall = _confusion_scores_compiled(confusion, per_class, averaged)
        return per_class, averaged, float(overall)
    total = confusion.sum()
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    fp, fn = confusion.sum(axis=0) - tp, support - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.column_stack(
            (
                (total - fp - fn) / total,
                _divide_or_zero(tp, tp + fp),
                _divide_or_zero(tp, tp + fn),
                _divide_or_zero(2 * tp, 2 * tp + fp + fn),
            )
        )
        tp_sum, fp_sum, fn_sum = tp.sum(), fp.sum(), fn.sum()
        micro = (
            tp_sum / (tp_sum + fp_sum) if tp_sum + fp_sum else 0.0,
            tp_sum / (tp_sum + fn_sum) if tp_sum + fn_sum else 0.0,
            2 * tp_sum / (2 * tp_sum + fp_sum + fn_sum),
        )
        averaged = np.array(
            [
                value
                for k in range(3)
                for value in (
                    per_class[:, k + 1].mean(),
                    micro[k],
                    np.dot(per_class[:, k + 1], support) / total,
                )
            ]
        )
        return per_class, averaged, float(tp_sum / total)


def _divide_or_zero(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)


def _pelz_good_coefficients(z: Any, zsquared: Any, zfour: Any, zsix: Any) -> tuple[Any, ...]:
    """SciPy's ``k1a .. k3d``: the coefficients of the series' terms (scalars or arrays)."""
    k1a, k1b = -zsquared, _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z**8.0
    return k1a, k1b, k2a, k2b, k2c, k3a, k3b, k3c, k3d


_pelz_good_coefficients_compiled = _compiled(_pelz_good_coefficients)


def _pelz_good_cdf_loop(n: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        z = math.sqrt(n[i]) * x[i]
        zsquared, zthree, zfour, zsix = z * z, z**3.0, z**4.0, z**6.0
        q = math.exp(-_PI_SQUARED / 8 / zsquared)
        k1a, k1b, k2a, k2b, k2c, k3a, k3b, k3c, k3d = _pelz_good_coefficients_compiled(
            z, zsquared, zfour, zsix
        )
        maxk = int(np.ceil(16 * z / np.pi))
        t0 = t1 = t2 = t3 = 0.0
        for k in range(maxk, 0, -1):  # Horner over odd m = 2k - 1, as SciPy
            m = 2 * k - 1
            msquared, mfour, msix = m * m, m**4, m**6
            qpower = q ** float(8 * k)
            t0 = t0 * qpower + 1.0
            t1 = t1 * qpower + (k1a + k1b * msquared)
            t2 = t2 * qpower + (k2a + k2b * msquared + k2c * mfour)
            t3 = t3 * qpower + (k3a + k3b * msquared + k3c * mfour + k3d * msix)
        t0 = t0 * q * _SQRT2PI / z
        t1 = t1 * q * _SQRT2PI / (6 * zfour)
        t2 = t2 * q * _SQRT2PI / (72 * z**7.0)
        t3 = t3 * q * _SQRT2PI / (6480 * z**10.0)
        q2 = math.exp(-_PI_SQUARED / 2 / zsquared)
        sqrt3z = _SQRT3 * z
        k2extra = 0.0
        k3extra = 0.0
        for k in range(maxk, 0, -1):
            ksquared = float(k * k)
            qpower = q2**ksquared
            kspi = np.pi * k
            k2extra += ksquared * qpower
            k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpower
        t2 += k2extra * (_PI_SQUARED * _SQRT2PI / (-36 * zthree))
        t3 += k3extra * (_PI_SQUARED * _SQRT2PI / (216 * zsix))
        out[i] = t0 + t1 / n[i] ** 0.5 + t2 / n[i] + t3 / n[i] ** 1.5


_pelz_good_cdf_compiled = _compiled(_pelz_good_cdf_loop)


def pelz_good_cdf(n: np.ndarray, x: np.ndarray, *, compiled: bool | None = None) -> np.ndarray:
    """SciPy's ``_kolmogn_PelzGood(n, x, cdf=True)`` (the Pelz–Good series for the
    Kolmogorov–Smirnov cdf) for arrays of sample sizes and statistics with ``z = √n·x``
    above 0.042; SciPy evaluates it one value at a time. ``compiled``: as for
    :func:`row_moments`."""
    n = np.ascontiguousarray(n, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not use_compiled(compiled):
        return _pelz_good_cdf_numpy(n, x)
    out = np.empty(x.shape[0])
    _pelz_good_cdf_compiled(n, x, out)
    return out


def _pelz_good_cdf_numpy(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = np.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z**2, z**3, z**4, z**6
    q = np.exp(-_PI_SQUARED / 8 / zsquared)
    k1a, k1b, k2a, k2b, k2c, k3a, k3b, k3c, k3d = _pelz_good_coefficients(z, zsquared, zfour, zsix)
    terms = np.zeros((4, z.size))
    maxk = np.ceil(16 * z / np.pi).astype(np.int64)
    for k in range(int(maxk.max()), 0, -1):  # Horner over odd m = 2k - 1, as SciPy
        on = k <= maxk
        m2 = (2 * k - 1) ** 2
        coeffs = np.stack(
            [
                np.ones(z.size),
                k1a + k1b * m2,
                k2a + k2b * m2 + k2c * m2**2,
                k3a + k3b * m2 + k3c * m2**2 + k3d * m2**3,
            ]
        )
        terms[:, on] = terms[:, on] * np.power(q[on], 8 * k) + coeffs[:, on]
    terms *= q
    terms *= _SQRT2PI
    terms /= np.stack([z, 6 * zfour, 72 * z**7, 6480 * z**10])
    ks = np.arange(int(maxk.max()), 0, -1, dtype=np.float64)[None, :]
    ks = np.where(ks <= maxk[:, None], ks, 0.0)  # k = 0 adds nothing to either sum
    q2 = np.exp(-_PI_SQUARED / 2 / zsquared)[:, None]
    qpowers = np.where(ks > 0, q2 ** (ks**2), 0.0)
    sqrt3z = (_SQRT3 * z)[:, None]
    k2extra = np.sum(ks**2 * qpowers, axis=1) * (_PI_SQUARED * _SQRT2PI / (-36 * zthree))
    k3extra = np.sum((sqrt3z + np.pi * ks) * (sqrt3z - np.pi * ks) * ks**2 * qpowers, axis=1)
    terms[2] += k2extra
    terms[3] += k3extra * (_PI_SQUARED * _SQRT2PI / (216 * zsix))
    terms /= np.power(n * 1.0, np.arange(4)[:, None] / 2.0)
    return terms[0] + terms[1] + terms[2] + terms[3]


_LOG_GROUP = 16


def _batch_counts_loop(
    probs: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray,
    n_bins: int,
    eps: float,
    counts: np.ndarray,
    expected: np.ndarray,
    confidence_rows: np.ndarray,
    confusion: np.ndarray,
    reliability: np.ndarray,
    reliability_sum: np.ndarray,
    sums: np.ndarray,
) -> None:
    # counts: (C,) predicted; confusion: (C, C); reliability: (2, n_bins) rows and correct;
    # sums: confidence², log loss, Σ p² of labelled rows, Σ p_label, labelled rows.
    n_rows, n_classes = probs.shape
    labelled = labels.size > 0
    confidence_squares = log_loss = label_squares = label_p = label_rows = 0.0
    # The log loss takes one logarithm per 16 labelled rows, of the product of their clipped
    # probabilities (each >= eps, so 16 of them stay far above the smallest normal float):
    # a logarithm costs more than the rest of a row's counting.
    product, in_product = 1.0, 0
    # probs[r, i], not a row view: a view per row costs numba an atomic incref and decref,
    # which took 40 % of this loop (9.3 -> 5.4 us per 500-row batch without them)
    for r in range(n_rows):
        j = predicted[r]
        confidence = probs[r, j]
        b = min(int(confidence * n_bins), n_bins - 1)
        counts[j] += 1
        confidence_rows[j, b] += 1
        confidence_squares += confidence * confidence
        for i in range(n_classes):
            expected[j, i] += probs[r, i]  # transposed below: rows of ``expected`` stay contiguous
        if labelled and labels[r] >= 0:
            y = labels[r]
            p_true = probs[r, y]
            confusion[y, j] += 1
            product *= min(max(p_true, eps), 1.0 - eps)
            in_product += 1
            if in_product == _LOG_GROUP:
                log_loss -= np.log(product)
                product, in_product = 1.0, 0
            squares = 0.0
            for i in range(n_classes):
                squares += probs[r, i] * probs[r, i]
            label_squares += squares
            label_p += p_true
            label_rows += 1.0
            reliability[0, b] += 1
            reliability[1, b] += y == j
            reliability_sum[b] += confidence
    log_loss -= np.log(product)
    sums[0], sums[1], sums[2], sums[3], sums[4] = (
        confidence_squares,
        log_loss,
        label_squares,
        label_p,
        label_rows,
    )


_batch_counts_compiled = _compiled(_batch_counts_loop)


def batch_counts(
    probs: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray | None,
    n_bins: int,
    *,
    compiled: bool | None = None,
) -> BatchCounts:
    """:class:`BatchCounts` of validated ``probs`` ``(n, C)``, their predicted classes and
    labels (``-1``: none; None: no labels); confidence bin ``min(floor(n_bins p), n_bins - 1)``.
    ``compiled``: as for :func:`row_moments`."""
    if not use_compiled(compiled):
        return _batch_counts_numpy(probs, predicted, labels, n_bins)
    n_classes = probs.shape[1]
    counts = np.zeros(n_classes, np.int64)
    expected = np.zeros((n_classes, n_classes))
    confidence_rows = np.zeros((n_classes, n_bins), np.int64)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    reliability = np.zeros((2, n_bins), np.int64)
    reliability_sum = np.zeros(n_bins)
    sums = np.zeros(5)
    _batch_counts_compiled(
        probs,
        predicted,
        _NO_LABELS if labels is None else labels,
        n_bins,
        LOG_LOSS_EPS,
        counts,
        expected,
        confidence_rows,
        confusion,
        reliability,
        reliability_sum,
        sums,
    )
    return BatchCounts(
        counts,
        expected.T.copy(),
        confidence_rows,
        float(sums[0]),
        confusion,
        float(sums[1]),
        float(sums[2] - 2.0 * sums[3] + sums[4]),
        reliability[0].copy(),
        reliability_sum,
        reliability[1].copy(),
    )


# Probabilities are clipped like scikit-learn's log_loss so one confident mistake stays finite.
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)
_NO_LABELS = np.empty(0, np.int64)


@lru_cache(maxsize=32)
def _identity(n: int) -> np.ndarray:
    """The n x n identity (read-only; its rows are the one-hot predictions)."""
    eye = np.eye(n)
    eye.flags.writeable = False
    return eye


def _batch_counts_numpy(
    probs: np.ndarray, predicted: np.ndarray, labels: np.ndarray | None, n_bins: int
) -> BatchCounts:
    """The NumPy twin of the compiled loop of :func:`batch_counts`."""
    n_rows, n_classes = probs.shape
    row_starts = np.arange(0, n_rows * n_classes, n_classes)  # of each row in probs.ravel()
    confidence = probs.ravel().take(row_starts + predicted)  # p of the predicted class
    bins = np.minimum((confidence * n_bins).astype(np.intp), n_bins - 1)
    per_class_bin = np.bincount(predicted * n_bins + bins, minlength=n_classes * n_bins)
    confidence_rows = per_class_bin.reshape(n_classes, n_bins).astype(np.int64, copy=False)
    # Σ of the probability rows per predicted class: one small matrix product with the
    # one-hot predictions (the fastest grouped sum numpy offers here)
    expected = probs.T @ _identity(n_classes).take(predicted, axis=0)
    pred_counts = np.bincount(predicted, minlength=n_classes).astype(np.int64, copy=False)
    head = (pred_counts, expected, confidence_rows, float(np.dot(confidence, confidence)))
    has = np.zeros(n_rows, bool) if labels is None else labels >= 0
    labelled, pred = (labels[has], predicted[has]) if labels is not None else (pred_counts[:0],) * 2
    lab_probs, lab_confidence, lab_bins = probs[has], confidence[has], bins[has]
    confusion = np.bincount(labelled * n_classes + pred, minlength=n_classes * n_classes)
    p_true = lab_probs.ravel().take(np.arange(0, labelled.size * n_classes, n_classes) + labelled)
    # np.maximum/np.minimum: np.clip's overhead is larger than the work here
    clipped = np.minimum(np.maximum(p_true, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS)
    flat = lab_probs.ravel()
    return BatchCounts(
        *head,
        confusion.reshape(n_classes, n_classes).astype(np.int64, copy=False),
        float(-np.log(clipped).sum()),
        # Σ_rows Σ_c (p_c − 1[y = c])² = Σ_rows (Σ_c p_c² − 2 p_y + 1)
        float(np.dot(flat, flat) - 2.0 * p_true.sum() + p_true.size),
        np.bincount(lab_bins, minlength=n_bins).astype(np.int64, copy=False),
        np.bincount(lab_bins, weights=lab_confidence, minlength=n_bins),
        np.bincount(lab_bins[pred == labelled], minlength=n_bins).astype(np.int64, copy=False),
    )


def _checked_predictions_loop(
    probs: np.ndarray, tolerance: float, threshold: float, predicted: np.ndarray
) -> bool:
    # One read of the matrix gives its checks and its predicted classes. Every row is
    # predicted whatever the checks say, and they do not branch: no early exit, which
    # batches that pass (nearly all) would not use.
    rows, n_classes = probs.shape
    valid = True
    for r in range(rows):
        total = 0.0
        best, best_p = 0, probs[r, 0]
        for c in range(n_classes):
            p = probs[r, c]
            valid &= (p >= 0.0) & (p <= 1.0)  # NaN fails both
            total += p
            if p > best_p:  # the first of equal maxima, as np.argmax
                best, best_p = c, p
        valid &= abs(total - 1.0) <= tolerance
        predicted[r] = (probs[r, 1] > threshold) if n_classes == 2 else best
    return valid


_checked_predictions_compiled = _compiled(_checked_predictions_loop)


def probabilities_within(
    probs: np.ndarray, tolerance: float, *, compiled: bool | None = None
) -> bool:
    """Whether every value of the float64 matrix ``probs`` lies in [0, 1] and every row sums
    to 1 within ``tolerance``, in one read. ``compiled``: as for :func:`row_moments`."""
    if use_compiled(compiled):
        scratch = np.empty(probs.shape[0], np.int64)
        return bool(_checked_predictions_compiled(probs, float(tolerance), 0.5, scratch))
    if not (probs.min() >= 0.0 and probs.max() <= 1.0):
        return False
    return bool(np.abs(probs.sum(axis=1) - 1.0).max() <= tolerance)


def predicted_classes(
    probs: np.ndarray, threshold: float, *, compiled: bool | None = None
) -> np.ndarray:
    """Predicted class per row of validated ``probs``: binary ``p[1] > threshold``, else the
    argmax (the first on ties). ``compiled``: as for :func:`row_moments`."""
    if use_compiled(compiled):
        out = np.empty(probs.shape[0], np.int64)
        _checked_predictions_compiled(probs, np.inf, float(threshold), out)
        return out
    if probs.shape[1] == 2:
        return (probs[:, 1] > threshold).astype(np.int64)
    return np.argmax(probs, axis=1).astype(np.int64)


def _replacement_slots_loop(
    uniforms: np.ndarray,
    rows_seen_before: int,
    n_fill: int,
    capacity: int,
    out_slots: np.ndarray,
    out_rows: np.ndarray,
) -> int:
    # The fill rows first, then every later row t that draws a slot, each as one sort key
    # slot * size + k (k: its place in stream order, < size): one sort of integers puts
    # the rows of one slot together, in stream order, and the last of each run wins. (A
    # stable argsort of the slots gives the same pairs, at twice the cost.)
    size = n_fill + uniforms.size
    keys = np.empty(size, np.int64)
    k = 0
    for t in range(n_fill):
        keys[k] = (rows_seen_before + t) * size + t
        k += 1
    first = rows_seen_before + n_fill
    for t in range(uniforms.size):
        scaled = uniforms[t] * float(first + t + 1)
        if scaled < capacity:
            keys[k] = int(scaled) * size + n_fill + t
            k += 1
    ordered = np.sort(keys[:k])
    kept = 0
    for i in range(k):
        slot = ordered[i] // size
        if i + 1 < k and ordered[i + 1] // size == slot:
            continue
        out_slots[kept], out_rows[kept] = slot, ordered[i] - slot * size
        kept += 1
    return kept


_replacement_slots_compiled = _compiled(_replacement_slots_loop)


def replacement_slots(
    uniforms: np.ndarray, rows_seen_before: int, n_fill: int, capacity: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reservoir slots a batch writes and the batch rows written there, by increasing
    slot: its first ``n_fill`` rows fill the slots after ``rows_seen_before``; each later row
    ``t`` (stream row ``first + t``, ``first = rows_seen_before + n_fill``) replaces slot
    ``floor(uniforms[t] (first + t + 1))`` if that is below ``capacity``; the last row
    written to a slot wins. Compiled only: ``reservoir.choose_slots`` is the NumPy twin."""
    size = n_fill + uniforms.size
    out_slots, out_rows = np.empty(size, np.int64), np.empty(size, np.int64)
    kept = _replacement_slots_compiled(
        uniforms, rows_seen_before, n_fill, capacity, out_slots, out_rows
    )
    return out_slots[:kept], out_rows[:kept]


def _scatter_rows_loop(
    slots: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    into_probs: np.ndarray,
    into_labels: np.ndarray,
    into_features: np.ndarray,
) -> None:
    n_classes, n_features = probs.shape[1], features.shape[1]
    for i in range(slots.size):
        slot = slots[i]
        for c in range(n_classes):
            into_probs[slot, c] = probs[i, c]
        into_labels[slot] = labels[i]
        for f in range(n_features):
            into_features[f, slot] = features[i, f]


_scatter_rows_compiled = _compiled(_scatter_rows_loop)


def scatter_rows(
    slots: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    into: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    compiled: bool | None = None,
) -> None:
    """Write row ``i`` (``probs``, ``labels``, row-major ``features`` ``(k, F)``) at slot
    ``slots[i]`` of ``into`` = (probs ``(n, C)``, labels ``(n,)``, column-major features
    ``(F, n)``). ``compiled``: as for :func:`row_moments`."""
    into_probs, into_labels, into_features = into
    if use_compiled(compiled):
        _scatter_rows_compiled(
            slots, probs, labels, features, into_probs, into_labels, into_features
        )
        return
    into_probs[slots] = probs
    into_labels[slots] = labels
    into_features[:, slots] = features.T


#: The counters :func:`count_batch` writes, in the order of its ``starts`` argument: where
#: each begins in the int64 ``counts`` or the float64 ``totals`` buffer of an
#: ``ExactCounters`` (whose layout this is not: it only names what the loop needs).
#: ``reliability_rows`` is followed by ``reliability_correct`` (written as one (2, B) block).
COUNT_BATCH_FIELDS = (
    "rows_seen",
    "rows_without_features",
    "pred_counts",
    "confusion",
    "nan_counts",
    "inf_counts",
    "confidence_rows",
    "reliability_rows",
    "log_loss_sum",
    "brier_sum",
    "confidence_sq_sum",
    "expected_by_predicted",
    "reliability_confidence_sum",
)
(
    _ROWS_SEEN,
    _ROWS_WITHOUT_FEATURES,
    _PRED_COUNTS,
    _CONFUSION,
    _NAN_COUNTS,
    _INF_COUNTS,
    _CONFIDENCE_ROWS,
    _RELIABILITY,
    _LOG_LOSS,
    _BRIER,
    _CONFIDENCE_SQ,
    _EXPECTED,
    _RELIABILITY_SUM,
) = range(len(COUNT_BATCH_FIELDS))

#: :func:`count_batch`'s answers when it does not count a batch
PROBABILITIES_REFUSED, LABELS_REFUSED = -1, -2


def _count_non_finite_loop(features: np.ndarray, nan: np.ndarray, inf: np.ndarray) -> None:
    # x - x is 0 for a finite x and NaN otherwise: an or of comparisons over the flat
    # (C-contiguous) matrix vectorises without reassociating float arithmetic. The counting
    # pass runs only for a batch with a missing value.
    values = features.reshape(-1)
    seen = False
    for i in range(values.size):
        x = values[i]
        seen |= (x - x) != 0.0
    if not seen:
        return
    rows, n_features = features.shape
    for r in range(rows):
        for f in range(n_features):
            x = features[r, f]
            nan[f] += np.isnan(x)
            inf[f] += np.isinf(x)


_count_non_finite_compiled = _compiled(_count_non_finite_loop)


def _count_batch_loop(
    probs: np.ndarray,
    threshold: float,
    labels: np.ndarray,
    features: np.ndarray,
    tolerance: float,
    n_bins: int,
    starts: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
) -> int:
    """Check one batch and count it into the zeroed buffers ``counts`` and ``totals`` at
    ``starts`` (:data:`COUNT_BATCH_FIELDS`), in one compiled call: the window update's
    fast path. Returns 0, or :data:`PROBABILITIES_REFUSED` if a probability is outside
    [0, 1] or a row's sum is more than ``tolerance`` from 1, or :data:`LABELS_REFUSED` if a
    label is outside [-1, C); then the buffers mean nothing.

    ``probs`` float64 ``(n, C)`` C-contiguous, ``labels`` int64 ``(n,)`` or empty (no
    labels), ``features`` float64 ``(n, F)`` or ``(0, F)`` (none). Compiled only: the NumPy
    twin is the contract's checks and ``ExactCounters.from_batch``; the tests compare them.
    """
    n_rows, n_classes = probs.shape
    n_features = features.shape[1]
    predicted = np.empty(n_rows, np.int64)
    if not _checked_predictions_compiled(probs, tolerance, threshold, predicted):
        return PROBABILITIES_REFUSED
    for r in range(labels.size):
        if labels[r] < -1 or labels[r] >= n_classes:
            return LABELS_REFUSED
    sums = np.zeros(5)
    square, per_bin = n_classes * n_classes, n_classes * n_bins
    s = starts
    _batch_counts_compiled(
        probs,
        predicted,
        labels,
        n_bins,
        LOG_LOSS_EPS,
        counts[s[_PRED_COUNTS] : s[_PRED_COUNTS] + n_classes],
        totals[s[_EXPECTED] : s[_EXPECTED] + square].reshape((n_classes, n_classes)),
        counts[s[_CONFIDENCE_ROWS] : s[_CONFIDENCE_ROWS] + per_bin].reshape((n_classes, n_bins)),
        counts[s[_CONFUSION] : s[_CONFUSION] + square].reshape((n_classes, n_classes)),
        counts[s[_RELIABILITY] : s[_RELIABILITY] + 2 * n_bins].reshape((2, n_bins)),
        totals[s[_RELIABILITY_SUM] : s[_RELIABILITY_SUM] + n_bins],
        sums,
    )
    counts[s[_ROWS_SEEN]] = n_rows
    totals[s[_CONFIDENCE_SQ]] = sums[0]
    if labels.size:
        totals[s[_LOG_LOSS]] = sums[1]
        totals[s[_BRIER]] = sums[2] - 2.0 * sums[3] + sums[4]
    if n_features and features.shape[0] == 0:
        counts[s[_ROWS_WITHOUT_FEATURES]] = n_rows
    elif n_features:
        _count_non_finite_compiled(
            features,
            counts[s[_NAN_COUNTS] : s[_NAN_COUNTS] + n_features],
            counts[s[_INF_COUNTS] : s[_INF_COUNTS] + n_features],
        )
    return 0


#: :func:`_count_batch_loop`, compiled
count_batch = _compiled(_count_batch_loop)


def _apply_batch_loop(
    uniforms: np.ndarray,
    rows_seen_before: int,
    n_fill: int,
    capacity: int,
    probs: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    slots: np.ndarray,
    probs_out: np.ndarray,
    labels_out: np.ndarray,
    features_out: np.ndarray,
    batch_counts: np.ndarray,
    batch_totals: np.ndarray,
    counts: np.ndarray,
    totals: np.ndarray,
    into_probs: np.ndarray,
    into_labels: np.ndarray,
    into_features: np.ndarray,
) -> int:
    rows = np.empty(n_fill + uniforms.size, np.int64)
    kept = _replacement_slots_compiled(uniforms, rows_seen_before, n_fill, capacity, slots, rows)
    n_classes, n_features = probs.shape[1], features_out.shape[1]
    labelled, with_features = labels.size > 0, features.shape[0] > 0
    for i in range(kept):
        row = rows[i]
        for c in range(n_classes):
            probs_out[i, c] = probs[row, c]
        labels_out[i] = labels[row] if labelled else -1
        for f in range(n_features):
            features_out[i, f] = features[row, f] if with_features else np.nan
    # the write of a replayed delta (the same loop), then ExactCounters.add's two additions
    _scatter_rows_compiled(
        slots[:kept],
        probs_out[:kept],
        labels_out[:kept],
        features_out[:kept],
        into_probs,
        into_labels,
        into_features,
    )
    counts += batch_counts
    totals += batch_totals
    return kept


_apply_batch_compiled = _compiled(_apply_batch_loop)


def apply_batch(
    uniforms: np.ndarray,
    rows_seen_before: int,
    n_fill: int,
    capacity: int,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    batch_counters: tuple[np.ndarray, np.ndarray],
    counters: tuple[np.ndarray, np.ndarray],
    into: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply an accepted batch to a window in one compiled call, and return what entered
    its reservoir: the slots (:func:`replacement_slots`) and the probabilities, labels
    (``-1``: none) and features (NaN rows: none) written there.

    ``batch``: the arrays :func:`count_batch` took (``probs``, ``labels``, ``features``);
    ``batch_counters``: the (counts, totals) buffers it wrote, added into the window's
    ``counters`` buffers; ``into``: the reservoir's arrays as for :func:`scatter_rows`,
    allocated past every slot the batch can write. Compiled only: the NumPy twin is
    ``reservoir.choose_slots``, fancy indexing, ``ExactCounters.add`` and
    :func:`scatter_rows` (what replaying the returned rows does)."""
    probs, labels, features = batch
    n_rows, n_features = probs.shape[0], into[2].shape[0]
    slots = np.empty(n_rows, np.int64)
    probs_out = np.empty((n_rows, probs.shape[1]))
    labels_out = np.empty(n_rows, np.int64)
    features_out = np.empty((n_rows, n_features))
    kept = _apply_batch_compiled(
        uniforms,
        rows_seen_before,
        n_fill,
        capacity,
        probs,
        labels,
        features,
        slots,
        probs_out,
        labels_out,
        features_out,
        *batch_counters,
        *counters,
        *into,
    )
    return slots[:kept], probs_out[:kept], labels_out[:kept], features_out[:kept]
