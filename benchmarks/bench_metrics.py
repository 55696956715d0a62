"""Metric-engine benchmark: state update throughput and window-close compute time.

Run ``python -m benchmarks.bench_metrics`` for a table; ``run()`` returns the figures as a
dict for the aggregate benchmark runner. The close is ``WindowState.metric_columns``, the
record's columns as the worker encodes them (``..._points``: the same close as ``Point``
objects, ``WindowState.metrics``; ``..._numpy_twins``: the NumPy twins of the compiled
loops, what runs without numba). Single process; the close runs its column blocks on
``mlwatcher.metrics.columns.DEFAULT_THREADS`` threads (one figure is taken with one thread).
Every close figure comes with its ratio to one ``np.sort`` of the same feature matrix timed
in the same loop, which stays comparable when the machine is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mlwatcher.metrics import ReferenceProfile, WindowState, columns, kernels

UPDATE_TARGET_ROWS_PER_S = 2_000_000
# The close of 10k x 784 x 10 classes, float64, drift against a baseline profile (issue 15).
CLOSE_TARGET_SORT_RATIO = 0.6


def _best_of(func: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def update_throughput(
    batch_rows: int = 500,
    n_classes: int = 10,
    n_features: int = 20,
    buffer: int = 1000,
    n_batches: int = 2000,
    with_labels: bool = True,
    compiled: bool = True,
) -> float:
    """Rows per second through ``WindowState.update`` (past the reservoir fill); with
    ``compiled=False`` the NumPy twins of the compiled loops run (what runs without numba)."""
    rng = np.random.default_rng(0)
    pool = [
        (
            rng.dirichlet(np.ones(n_classes), size=batch_rows),
            rng.integers(0, n_classes, batch_rows) if with_labels else None,
            rng.normal(size=(batch_rows, n_features)) if n_features else None,
        )
        for _ in range(20)
    ]
    state = WindowState(n_classes, buffer, n_features, seed=1)
    for probs, labels, feats in pool:  # warm up and fill the reservoir
        state.update(probs, labels, feats)

    def feed() -> None:
        for i in range(n_batches):
            probs, labels, feats = pool[i % len(pool)]
            state.update(probs, labels, feats)

    saved = kernels.ENABLED
    kernels.ENABLED = saved and compiled
    try:
        return batch_rows * n_batches / _best_of(feed, 3)
    finally:
        kernels.ENABLED = saved


def _filled_state(
    rows: int, n_features: int, n_classes: int = 10, dtype: type = np.float32, seed: int = 1
) -> WindowState:
    """A window whose reservoir holds ``rows`` rows; features like MNIST pixels in [0, 1]."""
    rng = np.random.default_rng(seed)
    state = WindowState(n_classes, rows, n_features, seed=2)
    probs = rng.dirichlet(np.ones(n_classes) * 0.3, size=rows)
    feats = rng.random((rows, n_features)).astype(dtype).astype(np.float64)
    state.update(probs, rng.integers(0, n_classes, rows), feats)
    return state


def _baseline_profile(n_features: int, dtype: type, n_classes: int = 10) -> ReferenceProfile:
    """A training-data profile of the same distribution (20k rows, default 2000-row sample)."""
    rng = np.random.default_rng(11)
    feats = rng.random((20_000, n_features)).astype(dtype).astype(np.float64)
    return ReferenceProfile.from_data(feats, rng.dirichlet(np.ones(n_classes) * 0.3, 20_000))


def close_figures(
    rows: int,
    n_features: int,
    *,
    reference: str | None = None,
    dtype: type = np.float32,
    repeats: int = 5,
    threads: int | None = None,
    points: bool = False,
    compiled: bool = True,
) -> tuple[float, float]:
    """(ms, ratio to one ``np.sort`` of the feature matrix) of ``WindowState.metric_columns``
    (the worker's close: the record's columns), or of ``WindowState.metrics`` (one ``Point``
    object per value) with ``points=True``.

    ``reference``: None (no drift), ``"window"`` (another window of the same distribution,
    as the stream app's previous-window baseline; the window against itself would tie at
    every reference point and measure a case that never happens) or ``"baseline"`` (a
    training-data profile). The sort of the same ``(n_features, rows)`` float64 matrix along
    its rows is timed in the same loop, alternating with the close, and both take the best
    of ``repeats``: the ratio is what to compare across machines and loads.
    """
    state = _filled_state(rows, n_features, dtype=dtype)
    profile = None
    if reference == "window":
        profile = ReferenceProfile.from_window(_filled_state(rows, n_features, dtype=dtype, seed=7))
    elif reference == "baseline":
        profile = _baseline_profile(n_features, dtype)
    matrix = state.reservoir()[2].T.copy()  # (n_features, rows), as the close sees it
    saved, saved_compiled = columns.DEFAULT_THREADS, kernels.ENABLED
    columns.DEFAULT_THREADS = saved if threads is None else threads
    kernels.ENABLED = saved_compiled and compiled
    compute = state.metrics if points else state.metric_columns
    try:
        compute(reference=profile)  # warm-up (allocations, caches)
        close = sort = float("inf")
        for _ in range(repeats):
            sort = min(sort, _best_of(lambda: np.sort(matrix, axis=1), 1))
            close = min(close, _best_of(lambda: compute(reference=profile), 1))
    finally:
        columns.DEFAULT_THREADS, kernels.ENABLED = saved, saved_compiled
    return 1000 * close, close / sort


def run(quick: bool = False) -> dict[str, float]:
    """All figures of this benchmark, keyed by a descriptive name."""
    n_batches = 300 if quick else 2000
    repeats = 3 if quick else 7
    results: dict[str, float] = {
        "update_rows_per_s_500x10x20_labels": update_throughput(n_batches=n_batches),
        "update_rows_per_s_500x10x20_no_labels": update_throughput(
            n_batches=n_batches, with_labels=False
        ),
        "update_rows_per_s_500x10_no_features": update_throughput(
            n_batches=n_batches, n_features=0
        ),
        "update_rows_per_s_500x10x20_labels_numpy_twins": update_throughput(
            n_batches=n_batches, compiled=False
        ),
    }
    closes = {
        "10k_x784_float64_baseline_drift": (10_000, 784, "baseline", np.float64, None),
        "10k_x784_float64_baseline_drift_1_thread": (10_000, 784, "baseline", np.float64, 1),
        "10k_x784_float64_baseline_drift_points": (10_000, 784, "baseline", np.float64, None),
        "10k_x784_float64_baseline_drift_numpy_twins": (10_000, 784, "baseline", np.float64, None),
        "10k_x784_float32_baseline_drift": (10_000, 784, "baseline", np.float32, None),
        "10k_x784_float32_features": (10_000, 784, None, np.float32, None),
        "10k_x784_float64_features": (10_000, 784, None, np.float64, None),
        "10k_x784_float32_with_drift": (10_000, 784, "window", np.float32, None),
    }
    for rows in (1_000, 10_000) if quick else (1_000, 3_000, 10_000):
        for n_features in (20, 784) if quick else (20, 100, 784):
            closes[f"{rows}x{n_features}_with_drift"] = (
                rows,
                n_features,
                "window",
                np.float32,
                None,
            )
    for key, (rows, n_features, reference, dtype, threads) in closes.items():
        ms, ratio = close_figures(
            rows,
            n_features,
            reference=reference,
            dtype=dtype,
            repeats=repeats,
            threads=threads,
            points=key.endswith("_points"),
            compiled=not key.endswith("_numpy_twins"),
        )
        results[f"close_ms_{key}"] = ms
        results[f"close_sort_ratio_{key}"] = ratio
    return results


def main() -> None:
    results = run()
    closes = [k.removeprefix("close_ms_") for k in results if k.startswith("close_ms_")]
    updates = [k for k in results if k.startswith("update")]
    width = max(len(k) for k in [*closes, *updates])
    print(f"{'update':<{width}}  {'rows/s':>12}  target")
    for key in updates:
        target = f">= {UPDATE_TARGET_ROWS_PER_S:,} rows/s" if "x20_labels" in key else ""
        print(f"{key:<{width}}  {results[key]:>12,.0f}  {target}")
    print(f"\n{'window close':<{width}}  {'ms':>8}  {'/ np.sort':>9}  target")
    for key in closes:
        target = (
            f"<= {CLOSE_TARGET_SORT_RATIO} x sort" if key.startswith("10k_x784_float64_b") else ""
        )
        ms, ratio = results[f"close_ms_{key}"], results[f"close_sort_ratio_{key}"]
        print(f"{key:<{width}}  {ms:>8.1f}  {ratio:>8.2f}x  {target}")
    print("\nscaling of the window close (ms and / np.sort, drift against a previous window):")
    print(f"{'rows':>8} " + " ".join(f"{f'{f} feats':>16}" for f in (20, 100, 784)))
    for rows in (1_000, 3_000, 10_000):
        cells = [
            f"{results[f'close_ms_{rows}x{f}_with_drift']:.1f}"
            f" ({results[f'close_sort_ratio_{rows}x{f}_with_drift']:.2f}x)"
            for f in (20, 100, 784)
        ]
        print(f"{rows:>8} " + " ".join(f"{c:>16}" for c in cells))
    print(f"(close threads: {columns.DEFAULT_THREADS})")


if __name__ == "__main__":
    main()
