"""A/B of ``WindowState.update`` between two checkouts, in one process, rounds alternating.

Sequential benchmark runs on a shared machine are not comparable (other jobs come and go);
alternating both implementations within one process, best of several rounds, is. Usage::

    git archive <base-commit> | tar -x -C /tmp/base
    python -m benchmarks.ab_update /tmp/base .          # wall clock
    python -m benchmarks.ab_update /tmp/base . --cpu    # process CPU time
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

BATCH_ROWS, N_CLASSES, BUFFER, BATCHES, ROUNDS = 500, 10, 1000, 400, 7


def _window_state(path: str) -> Any:
    """``WindowState`` of the checkout at ``path`` (its modules get a private namespace)."""
    for name in [m for m in sys.modules if m == "mlwatcher" or m.startswith("mlwatcher.")]:
        del sys.modules[name]
    sys.path.insert(0, path)
    try:
        from mlwatcher.metrics import WindowState

        return WindowState
    finally:
        sys.path.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="checkout directory of the baseline")
    parser.add_argument("after", help="checkout directory of the change")
    parser.add_argument("--cpu", action="store_true", help="process CPU time, not wall clock")
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    implementations = {"before": _window_state(args.before), "after": _window_state(args.after)}
    rng = np.random.default_rng(0)

    def pool(n_features: int, labels: bool) -> list[tuple[Any, Any, Any]]:
        return [
            (
                rng.dirichlet(np.ones(N_CLASSES), size=BATCH_ROWS),
                rng.integers(0, N_CLASSES, BATCH_ROWS) if labels else None,
                rng.normal(size=(BATCH_ROWS, n_features)) if n_features else None,
            )
            for _ in range(20)
        ]

    cases = {
        "500x10x20 with labels": (20, pool(20, True)),
        "500x10x20 without labels": (20, pool(20, False)),
        "500x10, no features, labels": (0, pool(0, True)),
    }
    for case, (n_features, batches) in cases.items():
        best = dict.fromkeys(implementations, float("inf"))
        for _ in range(ROUNDS):
            for name, window_state in implementations.items():
                state = window_state(N_CLASSES, BUFFER, n_features, seed=1)
                for probs, labels, feats in batches:  # fill the reservoir
                    state.update(probs, labels, feats)
                start = clock()
                for i in range(BATCHES):
                    probs, labels, feats = batches[i % len(batches)]
                    state.update(probs, labels, feats)
                best[name] = min(best[name], (clock() - start) / BATCHES)
        figures = "  ".join(
            f"{name} {BATCH_ROWS / seconds / 1e6:.2f} M rows/s ({seconds * 1e6:.0f} µs/batch)"
            for name, seconds in best.items()
        )
        print(f"{case:30s} {figures}", flush=True)


if __name__ == "__main__":
    main()
