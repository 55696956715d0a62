"""Stream worker throughput, window-close delay and changelog bytes per window.

    python -m benchmarks.bench_stream_app

1. **Throughput.** A backlog of batches (500 rows x 10 classes x 20 features, 8 agents, event
   times spread over several 10 s windows) is written to the predictions topic first; then one
   worker (and, with a fresh consumer group, two workers) process it. Rows/s = rows / time from
   the first applied batch to the last, read from the workers' ``/metrics``.
2. **Close delay.** Agents send live batches with 2 s windows; for every record we measure its
   arrival on the metrics topic minus (window end + grace). Windows close either because a
   later batch passed end + grace (delay ~ the batch interval) or, for the last window, on the
   worker's clock after the idle delay.
3. **Changelog bytes per window**: the value bytes of the delta entries of the throughput run's
   changelog topic per (agent, window), next to buffer x (1 + ln(rows / buffer)) rows x bytes
   per sampled row (the expected reservoir replacements) and to a whole-reservoir rewrite per batch.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks._common import local_kafka, print_table, produce_all, wait_for
from mlwatcher.brokers import free_port
from mlwatcher.kafka_admin import create_topics
from mlwatcher.schemas import MetricRecord, PredictionBatch
from mlwatcher.stream_app.observability import parse_prometheus

ROWS, CLASSES, FEATURES, BUFFER = 500, 10, 20, 500
AGENTS = 8
PARTITIONS = 4
BACKLOG_BATCHES = 6_000
THROUGHPUT_WINDOW_MS = 10_000
LIVE_WINDOW_MS, LIVE_GRACE_MS = 2_000, 1_000
WORKER = [sys.executable, "-m", "mlwatcher", "worker"]


def _batch(agent: str, event_time_ms: int, window_ms: int, rng: np.random.Generator) -> bytes:
    return PredictionBatch(
        agent_id=agent,
        batch_id=uuid.uuid4().hex,
        event_time_ms=event_time_ms,
        window_ms=window_ms,
        max_buffer_size=BUFFER,
        probabilities=rng.dirichlet(np.ones(CLASSES), size=ROWS).astype(np.float32),
        labels=rng.integers(0, CLASSES, ROWS).astype(np.int32),
        features=rng.normal(size=(ROWS, FEATURES)).astype(np.float32),
    ).encode()


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
         "queue.buffering.max.kbytes": 1_048_576}
    )  # fmt: skip


class Worker:
    def __init__(self, bootstrap: str, topics: dict[str, str], app_id: str, log_dir: Path) -> None:
        self.port = free_port()
        self.log = open(log_dir / f"{app_id}-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*WORKER, "-b", bootstrap, "--predictions-topic", topics["predictions"],
             "--metrics-topic", topics["metrics"], "--dead-letter-topic", topics["dead"],
             "--app-id", app_id, "--web-port", str(self.port), "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        try:
            text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except requests.RequestException:
            return {}
        return parse_prometheus(text)

    def assigned(self) -> int:
        """How many partitions this worker holds (0 when not answering yet)."""
        try:
            response = requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
        except requests.RequestException:
            return 0
        if response.status_code != 200:
            return 0
        return len(response.json()["assigned_partitions"])

    def ready(self) -> bool:
        return self.assigned() > 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _topics(bootstrap: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"predictions": f"bench-pred-{suffix}", "metrics": f"bench-metrics-{suffix}",
             "dead": f"bench-dead-{suffix}"}  # fmt: skip
    create_topics(
        bootstrap,
        {names["predictions"]: PARTITIONS, names["metrics"]: PARTITIONS, names["dead"]: 1},
    )
    return names


def _backlog() -> list[tuple[bytes, bytes]]:
    """(key, value) of every backlog batch, encoded up front so producing them is quick.

    Event times lie an hour ahead of the wall clock: the workers are already running, and
    windows in the past would be closed by their idle ticks before the backlog arrives.
    """
    rng = np.random.default_rng(0)
    base = int(time.time() * 1000) + 3_600_000
    base -= base % THROUGHPUT_WINDOW_MS
    span = 6 * THROUGHPUT_WINDOW_MS
    backlog = []
    for n in range(BACKLOG_BATCHES):
        agent = f"agent-{n % AGENTS}"
        event_time = base + (n * span) // BACKLOG_BATCHES
        backlog.append((agent.encode(), _batch(agent, event_time, THROUGHPUT_WINDOW_MS, rng)))
    return backlog


def _stable_group(workers: list[Worker]) -> bool:
    """Every worker holds partitions and together they hold them all: no rebalance pending."""
    held = [w.assigned() for w in workers]
    return all(held) and sum(held) == PARTITIONS


def _throughput(
    bootstrap: str, n_workers: int, log_dir: Path, backlog: list[tuple[bytes, bytes]]
) -> dict[str, float]:
    """Rows/s of ``n_workers`` on a backlog produced once their group is stable, so neither
    the join nor a rebalance falls inside the measurement."""
    topics = _topics(bootstrap)
    app_id = f"bench-{n_workers}w-{uuid.uuid4().hex[:6]}"
    workers = [Worker(bootstrap, topics, app_id, log_dir) for _ in range(n_workers)]
    expected_rows = BACKLOG_BATCHES * ROWS
    try:
        wait_for(lambda: _stable_group(workers), 120, "the workers' group to settle")
        time.sleep(1.0)  # a rebalance that is still in flight would show up here
        wait_for(lambda: _stable_group(workers), 60, "the workers' group to settle")
        produce_all(bootstrap, topics["predictions"], backlog)
        counts = _message_counts(bootstrap, topics["predictions"])
        if counts < BACKLOG_BATCHES:
            raise RuntimeError(f"benchmark: only {counts} of {BACKLOG_BATCHES} batches delivered")
        start = end = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            snapshots = [w.metrics() for w in workers]
            rows = sum(m.get("mlwatcher_worker_rows_total", 0.0) for m in snapshots)
            now = time.monotonic()
            if rows > 0 and start is None:
                start, start_rows = now, rows
            if rows >= expected_rows:
                end = now
                break
            time.sleep(0.05)
        if start is None or end is None:
            raise TimeoutError("benchmark: the workers did not process the backlog in time")
        seconds = max(end - start, 1e-3)
        rows_measured = expected_rows - start_rows
        busy = sum(
            m.get(f'mlwatcher_worker_processing_seconds_total{{step="{step}"}}', 0.0)
            for m in snapshots
            for step in ("compute", "execute")
        )
        return {
            "app_id": app_id,
            "busy_seconds": busy,
            "seconds": seconds,
            "rows_per_s": rows_measured / seconds,
            "batches_per_s": rows_measured / ROWS / seconds,
        }
    finally:
        for worker in workers:
            worker.stop()


def _changelog_bytes_per_window(bootstrap: str, app_id: str) -> dict[str, float]:
    topic = f"{app_id}-window-state-changelog"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    per_window: dict[tuple[str, int], int] = defaultdict(int)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 3.0:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        idle_since = time.monotonic()
        key = json.loads(message.key())
        if key[0] == "d" and message.value() is not None:
            per_window[key[2], key[3]] += len(message.value())
    consumer.close()
    rows_per_window = BACKLOG_BATCHES * ROWS / len(per_window) if per_window else 0
    # Bytes per sampled row in a delta: float64 probabilities, label, slot, float64 features.
    row_bytes = CLASSES * 8 + 8 + 8 + FEATURES * 8
    expected_rows = BUFFER * (1 + math.log(max(rows_per_window, BUFFER) / BUFFER))
    return {
        "windows": len(per_window),
        "rows_per_window": rows_per_window,
        "changelog_bytes_per_window": statistics.mean(per_window.values()) if per_window else 0,
        "expected_replacement_bytes": expected_rows * row_bytes,
        "full_rewrite_bytes": rows_per_window / ROWS * BUFFER * row_bytes,
    }


def _close_delay(bootstrap: str, log_dir: Path) -> dict[str, float]:
    topics = _topics(bootstrap)
    worker = Worker(bootstrap, topics, f"bench-live-{uuid.uuid4().hex[:6]}", log_dir)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topics["metrics"], p, 0) for p in range(PARTITIONS)])
    producer = _producer(bootstrap)
    rng = np.random.default_rng(3)
    delays: list[float] = []
    try:
        wait_for(worker.ready, 120, "the live worker to join")
        stop_at = time.time() + 12
        while time.time() < stop_at:
            now_ms = int(time.time() * 1000)
            for i in range(4):
                agent = f"live-{i}"
                producer.produce(topics["predictions"], key=agent.encode(),
                                 value=_batch(agent, now_ms, LIVE_WINDOW_MS, rng))  # fmt: skip
            producer.poll(0)
            time.sleep(0.2)
            while (message := consumer.poll(0)) is not None:
                if message.error() is None:
                    record = MetricRecord.decode(message.value())
                    due = (record.window_end_ms + LIVE_GRACE_MS) / 1000
                    delays.append(time.time() - due)
        producer.flush(10)
        idle_until = time.time() + (LIVE_WINDOW_MS + LIVE_GRACE_MS) / 1000 + 4
        while time.time() < idle_until:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                record = MetricRecord.decode(message.value())
                if record.rows_seen:
                    delays.append(time.time() - (record.window_end_ms + LIVE_GRACE_MS) / 1000)
    finally:
        consumer.close()
        worker.stop()
    return {
        "records": len(delays),
        "close_delay_median_s": statistics.median(delays) if delays else float("nan"),
        "close_delay_max_s": max(delays) if delays else float("nan"),
    }


def _processor_without_faust(
    bootstrap: str, backlog: list[tuple[bytes, bytes]]
) -> dict[str, float]:
    """Baseline in the same run: the worker's Processor (same state writes and acks), fed by a
    plain confluent-kafka consumer in 500-message batches instead of Faust. The difference to
    the worker is what Faust's consumer, stream and acks cost."""
    from mlwatcher.stream_app.changelog import ensure_changelog_topic, read_partitions
    from mlwatcher.stream_app.outputs import KafkaOutputs
    from mlwatcher.stream_app.processor import Incoming, Processor

    topics = _topics(bootstrap)
    changelog = f"bench-plain-{uuid.uuid4().hex[:6]}-window-state-changelog"
    ensure_changelog_topic(bootstrap, changelog, PARTITIONS, {})
    produce_all(bootstrap, topics["predictions"], backlog)
    outputs = KafkaOutputs(bootstrap, changelog_topic=changelog, metrics_topic=topics["metrics"],
                           dead_letter_topic=topics["dead"],
                           predictions_topic=topics["predictions"])  # fmt: skip
    processor = Processor(
        outputs,
        lambda wanted: read_partitions(bootstrap, changelog, wanted, {}),
        lambda wanted: dict.fromkeys(wanted, 0),
    )
    processor.assign(range(PARTITIONS))
    processor.recover_pending()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-plain",
                         "enable.auto.commit": False, "fetch.max.bytes": 64_000_000})  # fmt: skip
    consumer.assign([TopicPartition(topics["predictions"], p, 0) for p in range(PARTITIONS)])
    start = None
    try:
        while processor.stats.rows < BACKLOG_BATCHES * ROWS:
            messages = [m for m in consumer.consume(500, timeout=1.0) if m.error() is None]
            if start is None and messages:
                start = time.perf_counter()
            processor.process(
                [Incoming(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                          m.timestamp()[1]) for m in messages]
            )  # fmt: skip
        seconds = time.perf_counter() - (start or time.perf_counter())
    finally:
        consumer.close()
        outputs.close()
    stats = processor.stats
    return {
        "rows_per_s_processor_without_faust": BACKLOG_BATCHES * ROWS / seconds,
        "busy_share_processor_without_faust": (stats.compute_seconds + stats.execute_seconds)
        / seconds,
    }


def _message_counts(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-unused"})
    try:
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(PARTITIONS)
            )
        )
    finally:
        consumer.close()


def run() -> dict[str, Any]:
    with local_kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        backlog = _backlog()
        # Best of two runs each: a run lasts seconds, and the first one warms up the broker.
        one = max(
            (_throughput(bootstrap, 1, log_dir, backlog) for _ in range(2)),
            key=lambda r: r["rows_per_s"],
        )
        two = max(
            (_throughput(bootstrap, 2, log_dir, backlog) for _ in range(2)),
            key=lambda r: r["rows_per_s"],
        )
        plain = _processor_without_faust(bootstrap, backlog)
        changelog = _changelog_bytes_per_window(bootstrap, one["app_id"])
        live = _close_delay(bootstrap, log_dir)
    return {
        "batch_shape": f"{ROWS} rows x {CLASSES} classes x {FEATURES} features",
        "backlog_batches": BACKLOG_BATCHES,
        "rows_per_s_1_worker": one["rows_per_s"],
        "batches_per_s_1_worker": one["batches_per_s"],
        "rows_per_s_2_workers": two["rows_per_s"],
        "batches_per_s_2_workers": two["batches_per_s"],
        "rows_per_s_per_worker_2_workers": two["rows_per_s"] / 2,
        "seconds_1_worker": one["seconds"],
        "processing_seconds_1_worker": one["busy_seconds"],
        # share of the wall time the state thread spent computing and writing (acks included)
        "busy_share_1_worker": one["busy_seconds"] / one["seconds"],
        **plain,
        **live,
        **changelog,
    }


def main() -> None:
    results = run()
    print_table(
        "Stream worker (mlwatcher worker, Faust) on local Apache Kafka",
        [(name, f"{v:,.3f}" if isinstance(v, float) else str(v)) for name, v in results.items()],
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
