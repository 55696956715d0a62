"""A/B of the window close between two checkouts, in one process, rounds alternating.

The close of issue 15's shapes (10 classes, labels), timed for each checkout next to one
``np.sort`` of the same feature matrix in the same round, so the ratio stays comparable on a
shared machine. Usage::

    git archive <base-commit> | tar -x -C /tmp/base
    python -m benchmarks.ab_close /tmp/base .           # process CPU time, one close thread
    python -m benchmarks.ab_close /tmp/base . --wall    # wall clock, the default threads

A checkout from before the columnar close (no ``metric_columns``) closes with ``metrics()``,
and one without ``mlwatcher.metrics.columns`` has no close threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

ROUNDS = 7
N_CLASSES = 10
# (name, rows, features, reference: None | "baseline" | "window", feature dtype)
SHAPES = (
    ("10k x 784 float64, baseline drift", 10_000, 784, "baseline", np.float64),
    ("10k x 784 float32-valued, baseline drift", 10_000, 784, "baseline", np.float32),
    ("10k x 784 float64, no drift", 10_000, 784, None, np.float64),
    ("1000 x 784, previous-window drift", 1_000, 784, "window", np.float32),
    ("10k x 100 float64, baseline drift", 10_000, 100, "baseline", np.float64),
    ("10k x 100, previous-window drift", 10_000, 100, "window", np.float32),
    ("1000 x 20, previous-window drift", 1_000, 20, "window", np.float32),
)


def _checkout(path: str) -> dict[str, Any]:
    """The metric engine of the checkout at ``path`` (its modules in a private namespace)."""
    for name in [m for m in sys.modules if m == "mlwatcher" or m.startswith("mlwatcher.")]:
        del sys.modules[name]
    sys.path.insert(0, path)
    try:
        from mlwatcher import metrics

        columns: ModuleType | None
        try:
            from mlwatcher.metrics import columns
        except ImportError:  # before issue 15: no close threads
            columns = None
        return {"metrics": metrics, "columns": columns}
    finally:
        sys.path.remove(path)


def _filled(engine: dict[str, Any], rows: int, n_features: int, dtype: type, seed: int) -> Any:
    """A window whose reservoir holds ``rows`` rows; features like MNIST pixels in [0, 1]."""
    rng = np.random.default_rng(seed)
    state = engine["metrics"].WindowState(N_CLASSES, rows, n_features, seed=2)
    probs = rng.dirichlet(np.ones(N_CLASSES) * 0.3, size=rows)
    feats = rng.random((rows, n_features)).astype(dtype).astype(np.float64)
    state.update(probs, rng.integers(0, N_CLASSES, rows), feats)
    return state


def _reference(engine: dict[str, Any], kind: str | None, rows: int, nf: int, dtype: type) -> Any:
    profile = engine["metrics"].ReferenceProfile
    if kind == "window":
        return profile.from_window(_filled(engine, rows, nf, dtype, seed=7))
    if kind == "baseline":
        rng = np.random.default_rng(11)
        feats = rng.random((20_000, nf)).astype(dtype).astype(np.float64)
        return profile.from_data(feats, rng.dirichlet(np.ones(N_CLASSES) * 0.3, 20_000))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="checkout directory of the baseline")
    parser.add_argument("after", help="checkout directory of the change")
    parser.add_argument(
        "--wall", action="store_true", help="wall clock with the default close threads"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--only", metavar="TEXT", help="only the shapes whose name contains TEXT (e.g. '10k x 100')"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.process_time
    engines = {"before": _checkout(args.before), "after": _checkout(args.after)}
    for engine in engines.values():
        if engine["columns"] is not None and not args.wall:
            engine["columns"].DEFAULT_THREADS = 1
    what = "wall clock, default threads" if args.wall else "process CPU time, one thread"
    print(f"window close, best of {args.rounds} rounds ({what}); ms and / one np.sort")
    for name, rows, n_features, kind, dtype in SHAPES:
        if args.only and args.only not in name:
            continue
        closes: dict[str, Callable[[], object]] = {}
        for label, engine in engines.items():
            state = _filled(engine, rows, n_features, dtype, seed=1)
            reference = _reference(engine, kind, rows, n_features, dtype)
            close = getattr(state, "metric_columns", state.metrics)
            close(reference=reference)  # warm-up (allocations, compiled loops)
            closes[label] = lambda close=close, reference=reference: close(reference=reference)
        matrix = np.ascontiguousarray(np.random.default_rng(1).random((n_features, rows)))
        best = {label: float("inf") for label in closes}
        ratios: dict[str, list[float]] = {label: [] for label in closes}
        for _ in range(args.rounds):
            for label, close in closes.items():
                start = clock()
                np.sort(matrix, axis=1)
                sort = clock() - start
                start = clock()
                close()
                seconds = clock() - start
                best[label] = min(best[label], seconds)
                ratios[label].append(seconds / sort)
        cells = []
        for label in closes:
            ratio = statistics.median(ratios[label])
            cells.append(f"{label} {best[label] * 1e3:7.1f} ms ({ratio:5.2f}x)")
        speedup = statistics.median(ratios["before"]) / statistics.median(ratios["after"])
        print(f"{name:42s} {'  '.join(cells)}  speed-up {speedup:4.1f}x", flush=True)


if __name__ == "__main__":
    main()
