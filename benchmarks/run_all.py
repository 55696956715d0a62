"""Run every benchmark in one go, print one table and write the figures as JSON.

    python -m benchmarks.run_all [--output bench-results/results.json] [--only NAME ...]
    python -m benchmarks.run_all --only bench_takeover     # the long kill -9 rounds (opt-in)

Each ``benchmarks/bench_*.py`` exposes ``run() -> dict``; the figures of one run are measured
on the same machine in the same session, so they can be compared with each other (and the JSON
files of two commits with each other).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks._common import print_table

BENCHMARKS = (
    "bench_encoding",
    "bench_import",
    "bench_producer",
    "bench_prediction_ids",
    "bench_metrics",
    "bench_baseline",
    "bench_drift_power",
    "bench_stream_app",
    "bench_sinks",
    "bench_prometheus",
    "bench_memory",
    "bench_labels",
)
#: long runs, only with --only (bench_takeover: 50 kill -9 rounds, about 35 minutes)
OPT_IN = ("bench_takeover",)


def _format(value: object) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench-results/results.json")
    parser.add_argument("--only", nargs="*", help="benchmark module names to run")
    args = parser.parse_args()
    selected = [name for name in (*BENCHMARKS, *OPT_IN) if name in (args.only or BENCHMARKS)]
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    for name in selected:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            results[name] = module.run()
        except Exception:  # one broken benchmark must not hide the others' figures
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr)
        print(f"   {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    rows = [
        (name, key, _format(value))
        for name, figures in results.items()
        for key, value in figures.items()
        if not isinstance(value, dict | list)
    ]
    print_table(
        "MLWatcher benchmarks (one run, one machine)", rows, ("benchmark", "figure", "value")
    )
    for name in failures:
        print(f"FAILED: {name} (traceback above)")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "cpu": platform.processor(),
                    "system": platform.platform(),
                },
                "results": results,
                "failures": sorted(failures),
            },
            indent=2,
        )
    )
    print(f"figures written to {output}")


if __name__ == "__main__":
    main()
