"""The 2019 agent's approach, re-implemented in a few lines, against our metric state.

The 2019 agent grew its buffer with ``np.append`` (a full copy per batch), reservoir-sampled in a
Python loop per row, computed spread12 and the per-class label metrics with Python loops over
rows. We time both on the same data: updates for 500-row batches and the window-close
computation.
"""

from __future__ import annotations

import random
import time

import numpy as np

from benchmarks._common import print_table
from mlwatcher.metrics import WindowState

STATS = ("range", "mean", "std", "median", "q25", "q50", "q75", "iqr")


class Naive2019Agent:
    def __init__(self, max_buffer_size: int, n_classes: int, n_features: int) -> None:
        self.max_buffer_size = max_buffer_size
        self.proba = np.empty((0, n_classes))
        self.features = np.empty((0, n_features))
        self.labels = np.empty((0,), dtype=int)
        self.seen = 0

    def collect(self, proba: np.ndarray, features: np.ndarray, labels: np.ndarray) -> None:
        for i in range(proba.shape[0]):
            self.seen += 1
            if self.proba.shape[0] < self.max_buffer_size:
                self.proba = np.append(self.proba, proba[i : i + 1], axis=0)
                self.features = np.append(self.features, features[i : i + 1], axis=0)
                self.labels = np.append(self.labels, labels[i : i + 1])
            else:
                j = random.randint(0, self.seen - 1)
                if j < self.max_buffer_size:
                    self.proba[j], self.features[j], self.labels[j] = (
                        proba[i],
                        features[i],
                        labels[i],
                    )

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        predicted = [int(np.argmax(row)) for row in self.proba]
        pred1 = [max(row) for row in self.proba]
        spread12 = []
        for row in self.proba:
            ordered = sorted(row, reverse=True)
            spread12.append(ordered[0] - ordered[1])
        for name, values in (("pred1", pred1), ("spread12", spread12)):
            out.update(_stats(name, np.array(values)))
        for j in range(self.features.shape[1]):
            out.update(_stats(f"feat_{j}", self.features[:, j]))
        for c in range(self.proba.shape[1]):
            tp = fp = fn = tn = 0
            for p, y in zip(predicted, self.labels, strict=True):
                tp += p == c and y == c
                fp += p == c and y != c
                fn += p != c and y == c
                tn += p != c and y != c
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            out[f"accuracy_{c}"] = (tp + tn) / len(predicted)
            out[f"f1_{c}"] = 2 * precision * recall / (precision + recall) if tp else 0.0
        return out


def _stats(name: str, values: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {
        f"{name}_range": float(values.max() - values.min()),
        f"{name}_mean": float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_median": float(q50),
        f"{name}_iqr": float(q75 - q25),
    }


def _batches(count: int, rows: int, classes: int, features: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.dirichlet(np.ones(classes), size=rows),
            rng.normal(size=(rows, features)),
            rng.integers(0, classes, rows),
        )
        for _ in range(count)
    ]


def run(buffer: int = 2000, batches: int = 40, rows: int = 500) -> dict[str, float]:
    classes, n_features = 10, 20
    data = _batches(batches, rows, classes, n_features)
    naive = Naive2019Agent(buffer, classes, n_features)
    start = time.perf_counter()
    for proba, feats, labels in data:
        naive.collect(proba, feats, labels)
    naive_update = time.perf_counter() - start
    start = time.perf_counter()
    naive.compute()
    naive_close = time.perf_counter() - start

    state = WindowState(classes, buffer, n_features, seed=1)
    start = time.perf_counter()
    for proba, feats, labels in data:
        state.update(proba, labels, feats)
    ours_update = time.perf_counter() - start
    start = time.perf_counter()
    state.metrics()
    ours_close = time.perf_counter() - start
    total = batches * rows
    return {
        "buffer": buffer,
        "rows": total,
        "naive_update_rows_per_s": total / naive_update,
        "ours_update_rows_per_s": total / ours_update,
        "update_speedup": naive_update / ours_update,
        "naive_close_ms": naive_close * 1e3,
        "ours_close_ms": ours_close * 1e3,
        "close_speedup": naive_close / ours_close,
    }


def main() -> None:
    r = run()
    print_table(
        f"2019 approach vs MLWatcher metric state ({r['rows']:,} rows in 500-row batches, "
        f"10 classes, 20 features, labels, buffer {r['buffer']})",
        [
            (
                "update rows/s",
                f"{r['naive_update_rows_per_s']:,.0f}",
                f"{r['ours_update_rows_per_s']:,.0f}",
                f"{r['update_speedup']:.0f}x",
            ),
            (
                "window close ms",
                f"{r['naive_close_ms']:.1f}",
                f"{r['ours_close_ms']:.1f}",
                f"{r['close_speedup']:.1f}x",
            ),
        ],
        ("measure", "2019 approach", "MLWatcher", "speed-up"),
    )
    print("(the MLWatcher close computes far more metrics: drift, entropy, macro/micro scores...)")


if __name__ == "__main__":
    main()
