"""Import time of the producer (``python -X importtime``), next to what it cannot avoid.

    python -m benchmarks.bench_import

A model service pays this once at start-up. Goal: ``from mlwatcher.producer import
MonitoringAgent`` in <= 150 ms. Baselines measured in the same run: the three libraries the
producer needs (numpy, fastavro, confluent-kafka: the floor) and the metric engine it no
longer imports (``mlwatcher.metrics``, with SciPy).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from benchmarks._common import print_table

RUNS = 7
TARGETS = {
    "producer": "from mlwatcher.producer import MonitoringAgent",
    "base_libraries": "import numpy, fastavro, confluent_kafka",
    "metric_engine": "import mlwatcher.metrics",
}


def _top_level(statement: str) -> dict[str, int]:
    """Cumulative µs of each top-level import ``python -X importtime -c statement`` printed."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, int] = {}
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        cumulative, name = parts[1].strip(), parts[2]
        if cumulative.isdigit() and name[1:2] != " ":  # nested imports are indented
            found[name.strip()] = int(cumulative)
    return found


def import_ms(statement: str) -> float:
    """Median over fresh interpreters of what ``statement`` adds to the interpreter's start-up
    imports (``site`` and friends are the same with or without it)."""
    start_up = set(_top_level("pass"))
    samples = []
    for _ in range(RUNS):
        added = {k: v for k, v in _top_level(statement).items() if k not in start_up}
        samples.append(sum(added.values()) / 1000)
    return statistics.median(samples)


def run() -> dict[str, float]:
    results = {f"{name}_import_ms": import_ms(statement) for name, statement in TARGETS.items()}
    # What the producer adds to the libraries it cannot do without (validation, schemas...).
    results["producer_own_ms"] = results["producer_import_ms"] - results["base_libraries_import_ms"]
    results["producer_target_ms"] = 150.0
    return results


def main() -> None:
    results = run()
    print_table(
        f"Import time, python -X importtime, median of {RUNS} fresh interpreters",
        [(name, TARGETS[name], f"{results[f'{name}_import_ms']:.0f}") for name in TARGETS],
        ("what", "statement", "ms"),
    )
    verdict = "met" if results["producer_import_ms"] <= 150 else "MISSED"
    print(f"producer: {results['producer_import_ms']:.0f} ms (goal <= 150 ms: {verdict})")


if __name__ == "__main__":
    main()
