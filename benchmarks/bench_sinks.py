"""Sink throughput: Parquet sink points/s from the metrics topic, Anodot sink points/s
against the local fake Anodot server (rate limit 20k points/s, and unlimited).

    python -m benchmarks.bench_sinks        (MLWATCHER_BOOTSTRAP_SERVERS to use a running broker)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks._common import local_kafka, print_table, produce_all
from mlwatcher.kafka_admin import create_topics
from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.parquet_format import ColumnBuffer
from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
from mlwatcher.sinks.shutdown import Shutdown
from tests.fake_anodot import FakeAnodot

POINTS_PER_RECORD = 500


def _records(n_records: int, agents: int = 20) -> list[bytes]:
    stats = ("mean", "std", "median", "q25", "q75")
    values = []
    for i in range(n_records):
        points = [
            Point("feature_value", "gauge", float(j), feat_name=f"f{j // 5}", stat=stats[j % 5])
            for j in range(POINTS_PER_RECORD)
        ]
        start = 1_764_374_400_000 + (i // agents) * 60_000
        record = MetricRecord(f"agent-{i % agents}", start, start + 60_000, 1000, 100, points)
        values.append(record.encode())
    return values


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    create_topics(bootstrap, {topic: 1})
    produce_all(bootstrap, topic, ((None, value) for value in values), compression="none")


def _run_until(sink_run, shutdown: Shutdown, done) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the first record handled until ``done()``, sink stopped and drained."""
    thread = threading.Thread(target=sink_run, args=(shutdown,), daemon=True)
    thread.start()
    started = None
    while not done():
        if started is None and sink_run.__self__.stats.records > 0:
            started = time.perf_counter()
        time.sleep(0.002)
    shutdown.request_stop()
    thread.join(120)
    return time.perf_counter() - (started or time.perf_counter())


def bench_decode(values: list[bytes]) -> dict[str, float]:
    start = time.perf_counter()
    decoded = [MetricRecord.decode_columns(v) for v in values]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    buffer = ColumnBuffer("agent")
    for header, points in decoded:
        buffer.add_record(header, points)
    buffer.to_table()
    columns_s = time.perf_counter() - start
    points = len(values) * POINTS_PER_RECORD
    return {"decode_points_per_s": points / decode_s, "columns_points_per_s": points / columns_s}


def bench_parquet(bootstrap: str, values: list[bytes]) -> float:
    topic = f"bench-metrics-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, topic, values)
    with tempfile.TemporaryDirectory() as output:
        config = ParquetSinkConfig(
            bootstrap, topic, topic + "-dlq", Path(output), group_id=topic, roll_seconds=3600
        )
        sink = ParquetSink(config)
        elapsed = _run_until(sink.run, Shutdown(), lambda: sink.stats.records >= len(values))
        assert sink.stats.rows_written == len(values) * POINTS_PER_RECORD
    return len(values) * POINTS_PER_RECORD / elapsed


def bench_anodot(bootstrap: str, values: list[bytes], rate: float) -> dict[str, float]:
    """The real ``mlwatcher sink anodot`` process against the fake server (own process, so
    the server's JSON checks do not share the sink's GIL)."""
    topic = f"bench-anodot-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, topic, values)
    total = len(values) * POINTS_PER_RECORD
    with FakeAnodot(token="bench") as server:
        command = [
            sys.executable,
            "-c",
            "from mlwatcher.cli import main; main()",
            "--log-level",
            "WARNING",
            "sink",
            "anodot",
            "-b",
            bootstrap,
            "--metrics-topic",
            topic,
            "--dead-letter-topic",
            topic + "-dlq",
            "--group-id",
            topic,
            "--base-url",
            server.base_url,
            "--rate-limit",
            str(rate),
        ]
        env = {**os.environ, "MLWATCHER_ANODOT_TOKEN": "bench"}
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            server.wait_for(lambda s: s.accepted_count() >= total, timeout=300)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        requests = server.requests()
        span = requests[-1].arrival - requests[0].arrival
        return {
            "points_per_s": total / span if span > 0 else float("inf"),
            "max_points_per_request": max(r.n_points for r in requests),
            "max_points_in_1s": server.max_points_in_window(1.0),
        }


def run() -> dict:
    parquet_values = _records(2000)  # 1,000,000 points
    results: dict[str, float] = {}
    results.update({f"parquet_{k}": v for k, v in bench_decode(parquet_values).items()})
    with local_kafka() as bootstrap:
        results["parquet_sink_points_per_s"] = bench_parquet(bootstrap, parquet_values)
        anodot_values = parquet_values[:300]  # 150,000 points
        limited = bench_anodot(bootstrap, anodot_values, rate=20_000)
        results.update({f"anodot_20k_limit_{k}": v for k, v in limited.items()})
        unlimited = bench_anodot(bootstrap, anodot_values, rate=10_000_000)
        results.update({f"anodot_unlimited_{k}": v for k, v in unlimited.items()})
    return results


if __name__ == "__main__":
    figures = run()
    print_table(
        "Sinks",
        [(name, f"{value:,.0f}") for name, value in figures.items()],
        ("figure", "value"),
    )
