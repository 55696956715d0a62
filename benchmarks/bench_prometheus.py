"""Prometheus sink: records/s and points/s from the metrics topic, scrape time and memory at
the default cardinality for 100 agents x 64 features, and series counts of typical models.

    python -m benchmarks.bench_prometheus   (MLWATCHER_BOOTSTRAP_SERVERS to use a running broker)

Baselines in the same run: decoding the records alone (the floor of any sink), and
``generate_latest`` of the same number of series held by ordinary ``prometheus_client`` Gauge
children (what instrumenting by hand would cost to scrape).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from dataclasses import replace

import numpy as np
import requests
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._common import local_kafka, print_table, produce_all
from mlwatcher.brokers import free_port
from mlwatcher.kafka_admin import create_topics
from mlwatcher.metrics import ReferenceProfile, compute_metrics
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.prometheus_format import LatestWindows, SeriesFilter
from mlwatcher.sinks.prometheus_sink import PrometheusSink, PrometheusSinkConfig
from mlwatcher.sinks.shutdown import Shutdown

AGENTS = 100
FEATURES = 64
CLASSES = 10
WINDOWS = 20
WINDOW_MS = 60_000


def model_points(n_features: int, n_classes: int, rows: int = 2000, seed: int = 0) -> list:
    """Every point of one window of a model with labels and drift against a baseline."""
    rng = np.random.default_rng(seed)

    def probabilities(n: int) -> np.ndarray:
        logits = rng.normal(size=(n, n_classes)) * 2
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    reference = ReferenceProfile.from_data(rng.normal(size=(5000, n_features)), probabilities(5000))
    features = rng.normal(loc=0.1, size=(rows, n_features))
    labels = rng.integers(0, n_classes, rows)
    return compute_metrics(probabilities(rows), labels, features, reference=reference)


def records(points: list, first_start_ms: int) -> list[MetricRecord]:
    template = MetricRecord("agent", 0, WINDOW_MS, 2000, 2000, points, batches=10)
    return [
        replace(
            template,
            agent_id=f"agent-{a:03d}",
            window_start_ms=first_start_ms + w * WINDOW_MS,
            window_end_ms=first_start_ms + (w + 1) * WINDOW_MS,
        )
        for w in range(WINDOWS)
        for a in range(AGENTS)
    ]


def digits_points() -> list:
    """One window of the digits demo's model (scikit-learn's 8x8 digits, 64 pixels, 10
    classes, labels), drift against its training data."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=2000).fit(x[:1000], y[:1000])
    reference = ReferenceProfile.from_data(x[:1000], model.predict_proba(x[:1000]))
    window = slice(1000, 1300)
    return compute_metrics(
        model.predict_proba(x[window]), y[window], x[window], reference=reference
    )


def series_counts() -> dict[str, int]:
    """Series of one agent: the digits demo's model and a 784-feature model (MNIST-sized,
    10 classes, labels), at the default filter and with every series."""
    counts: dict[str, int] = {}
    models = (("digits_demo", digits_points()), ("784_features", model_points(784, CLASSES)))
    for name, points in models:
        record = MetricRecord("a", 0, WINDOW_MS, 2000, 2000, points)
        header, columns = MetricRecord.decode_columns(record.encode())
        for label, series_filter in (
            ("default", SeriesFilter()),
            ("everything", SeriesFilter(feature_what=("*",))),
        ):
            windows = LatestWindows(series_filter)
            windows.apply(header, columns)
            counts[f"series_per_agent_{name}_{label}"] = windows.series
    return counts


def state_memory_mb(values: list[bytes]) -> float:
    """Python heap of the sink's state (the latest window of every agent), by tracemalloc."""
    decoded = [MetricRecord.decode_columns(v) for v in values[-AGENTS:]]
    tracemalloc.start()
    try:
        windows = LatestWindows()
        for header, columns in decoded:
            windows.apply(header, columns)
        for _ in windows.collect():  # builds the samples, as the first scrape does
            pass
        return tracemalloc.get_traced_memory()[0] / 1e6
    finally:
        tracemalloc.stop()


def bench_decode(values: list[bytes], points: int) -> float:
    start = time.perf_counter()
    for value in values:
        MetricRecord.decode_columns(value)
    return points / (time.perf_counter() - start)


def bench_sink(bootstrap: str, values: list[bytes], points: int) -> dict[str, float]:
    """The sink in this process (the runner, the state, the HTTP server): consume every
    record, then scrape the state it holds."""
    topic = f"bench-prometheus-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 1, topic + "-dlq": 1})
    produce_all(bootstrap, topic, ((b"k", v) for v in values), compression="none")
    config = PrometheusSinkConfig(
        bootstrap,
        topic,
        topic + "-dlq",
        group_id=topic,
        web_port=0,
        # the records' windows are minutes old: do not let them expire during the run
        expire_after_windows=10_000,
    )
    sink = PrometheusSink(config)
    shutdown = Shutdown()
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    started = None
    while sink.stats.records < len(values):
        if started is None and sink.stats.records > 0:
            started = time.perf_counter()
        time.sleep(0.002)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    figures = {
        "sink_records_per_s": len(values) / elapsed,
        "sink_points_per_s": points / elapsed,
        "agents": float(len(sink.windows.agents())),
        "series_exported": float(sink.windows.series),
    }
    start = time.perf_counter()
    generate_latest(sink.registry)  # builds the samples of every agent's new window
    figures["scrape_first_after_100_new_windows_ms"] = (time.perf_counter() - start) * 1000
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        text = generate_latest(sink.registry)
        samples.append(time.perf_counter() - start)
    figures["scrape_generate_ms"] = statistics.median(samples) * 1000
    figures["scrape_bytes"] = float(len(text))
    host, port = sink.address
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        body = requests.get(f"http://{host}:{port}/metrics", timeout=30).content
        samples.append(time.perf_counter() - start)
    figures["scrape_http_ms"] = statistics.median(samples) * 1000
    assert len(body) > 0.9 * len(text)
    shutdown.request_stop()
    thread.join(60)
    figures["baseline_plain_gauges_generate_ms"] = plain_gauges_ms(text.decode())
    return figures


def plain_gauges_ms(text: str) -> float:
    """generate_latest of the same series as ordinary labelled Gauge children."""
    registry = CollectorRegistry(auto_describe=False)
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("mlwatcher_") or family.name.startswith("mlwatcher_sink"):
            continue
        labelnames = sorted({k for s in family.samples for k in s.labels})
        gauge = Gauge(family.name, family.documentation, labelnames, registry=registry)
        for sample in family.samples:
            gauge.labels(**{k: sample.labels.get(k, "") for k in labelnames}).set(sample.value)
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        generate_latest(registry)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def bench_memory(bootstrap: str, values: list[bytes]) -> dict[str, float]:
    """RSS of a real `mlwatcher sink prometheus` process: idle, then holding every agent."""
    topic = f"bench-prometheus-mem-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 1, topic + "-dlq": 1})
    port = free_port()
    command = [
        sys.executable, "-c", "from mlwatcher.cli import main; main()",
        "--log-level", "WARNING", "sink", "prometheus", "-b", bootstrap,
        "--metrics-topic", topic, "--dead-letter-topic", topic + "-dlq",
        "--group-id", topic, "--web-port", str(port), "--expire-after-windows", "10000",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)

    def sink_metric(name: str) -> float | None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        except requests.RequestException:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return sample.value
        return None

    try:
        deadline = time.monotonic() + 60
        while sink_metric("process_resident_memory_bytes") is None:
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark: the sink did not start")
            time.sleep(0.2)
        time.sleep(3)  # consumer joined, nothing to read
        idle = sink_metric("process_resident_memory_bytes") or 0.0
        produce_all(bootstrap, topic, ((b"k", v) for v in values), compression="none")
        deadline = time.monotonic() + 300
        while (sink_metric("mlwatcher_sink_agents") or 0) < AGENTS or (
            sink_metric("mlwatcher_sink_series") or 0
        ) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark: the sink did not take every agent")
            time.sleep(1)
        time.sleep(2)
        loaded = sink_metric("process_resident_memory_bytes") or 0.0
    finally:
        process.terminate()
        process.wait(60)
    return {"rss_idle_mb": idle / 1e6, "rss_100_agents_mb": loaded / 1e6}


def run() -> dict:
    points = model_points(FEATURES, CLASSES)
    first = (int(time.time() * 1000) // WINDOW_MS - WINDOWS - 1) * WINDOW_MS
    values = [record.encode() for record in records(points, first)]
    total_points = len(values) * len(points)
    results: dict[str, float] = {"points_per_record": float(len(points))}
    results.update(series_counts())
    results["baseline_decode_points_per_s"] = bench_decode(values, total_points)
    results["state_heap_100_agents_mb"] = state_memory_mb(values)
    with local_kafka() as bootstrap:
        results.update(bench_sink(bootstrap, values, total_points))
        results.update(bench_memory(bootstrap, values))
    return results


if __name__ == "__main__":
    figures = run()
    print_table(
        "Prometheus sink",
        [(name, f"{value:,.1f}") for name, value in figures.items()],
        ("figure", "value"),
    )
