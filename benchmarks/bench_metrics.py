"""Metric-engine benchmark: state update throughput and window-close compute time.

Run ``python benchmarks/bench_metrics.py`` for a table; ``run()`` returns the figures as a
dict for the aggregate benchmark runner. Single process, single thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mlwatcher.metrics import ReferenceProfile, WindowState

UPDATE_TARGET_ROWS_PER_S = 2_000_000
CLOSE_TARGET_MS = 150.0


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
) -> float:
    """Rows per second through ``WindowState.update`` (past the reservoir fill)."""
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

    return batch_rows * n_batches / _best_of(feed, 3)


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


def close_time_ms(
    rows: int,
    n_features: int,
    *,
    with_reference: bool = False,
    dtype: type = np.float32,
    repeats: int = 3,
) -> float:
    """Milliseconds for ``WindowState.metrics`` (optionally with drift against a reference)."""
    state = _filled_state(rows, n_features, dtype=dtype)
    # The reference is another window of the same distribution (a different seed), as a
    # "previous window" baseline is in practice; the window against itself would tie at
    # every reference point and measure a case that never happens.
    reference = (
        ReferenceProfile.from_window(_filled_state(rows, n_features, dtype=dtype, seed=7))
        if with_reference
        else None
    )
    state.metrics(reference=reference)  # warm-up (allocations, caches)
    return 1000 * _best_of(lambda: state.metrics(reference=reference), repeats)


def run(quick: bool = False) -> dict[str, float]:
    """All figures of this benchmark, keyed by a descriptive name."""
    n_batches = 300 if quick else 2000
    results: dict[str, float] = {
        "update_rows_per_s_500x10x20_labels": update_throughput(n_batches=n_batches),
        "update_rows_per_s_500x10x20_no_labels": update_throughput(
            n_batches=n_batches, with_labels=False
        ),
        "update_rows_per_s_500x10_no_features": update_throughput(
            n_batches=n_batches, n_features=0
        ),
        "close_ms_10k_x784_float32_features": close_time_ms(10_000, 784),
        "close_ms_10k_x784_float64_features": close_time_ms(10_000, 784, dtype=np.float64),
        "close_ms_10k_x784_float32_with_drift": close_time_ms(10_000, 784, with_reference=True),
    }
    for rows in (1_000, 10_000) if quick else (1_000, 3_000, 10_000):
        for n_features in (20, 784) if quick else (20, 100, 784):
            results[f"close_ms_{rows}x{n_features}_with_drift"] = close_time_ms(
                rows, n_features, with_reference=True, repeats=1 if quick else 2
            )
    return results


def main() -> None:
    results = run()
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  {'value':>14}  target")
    for key, value in results.items():
        if key.startswith("update"):
            target = f">= {UPDATE_TARGET_ROWS_PER_S:,} rows/s" if "x20_labels" in key else ""
            print(f"{key:<{width}}  {value:>14,.0f}  {target}")
        else:
            target = f"<= {CLOSE_TARGET_MS:.0f} ms" if key.startswith("close_ms_10k_x784") else ""
            print(f"{key:<{width}}  {value:>14.1f}  {target}")
    print("\nscaling of the window close (ms, with drift against a previous-window reference):")
    print(f"{'rows':>8} " + " ".join(f"{f'{f} feats':>11}" for f in (20, 100, 784)))
    for rows in (1_000, 3_000, 10_000):
        cells = [results[f"close_ms_{rows}x{f}_with_drift"] for f in (20, 100, 784)]
        print(f"{rows:>8} " + " ".join(f"{c:>11.1f}" for c in cells))


if __name__ == "__main__":
    main()
