"""Helpers shared by the reliability tests (worker/sink processes come from the stream-app and
sink test helpers; this module adds what the fault and load scenarios need on top)."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from mlwatcher.schemas import PredictionBatch
from tests.helpers import wait_until
from tests.stream_app.conftest import WorkerProcess

# Set MLWATCHER_LONG_TESTS=1 to run the long variants (e.g. a one-minute slow Anodot server).
LONG_TESTS = os.environ.get("MLWATCHER_LONG_TESTS", "") not in ("", "0")


def report(name: str, **figures: Any) -> None:
    """Print a measured figure (visible with ``pytest -s``) so the docs can quote it."""
    print(f"\n[reliability] {name}: {json.dumps(figures, default=str)}")


def window_start(event_time_ms: int, window_ms: int) -> int:
    return event_time_ms - event_time_ms % window_ms


def future_window(window_ms: int, ahead_ms: int = 600_000) -> int:
    """A window start far enough ahead that no worker's wall clock closes it in a test: it
    closes only when a later batch's event time passes its end + grace."""
    return window_start(int(time.time() * 1000) + ahead_ms, window_ms)


def make_batch(
    agent_id: str,
    event_time_ms: int,
    window_ms: int,
    rows: int,
    rng: np.random.Generator,
    *,
    n_classes: int = 3,
    n_features: int = 4,
    buffer: int = 100,
) -> PredictionBatch:
    return PredictionBatch(
        agent_id=agent_id,
        batch_id=f"{agent_id}-{event_time_ms}-{rng.integers(1 << 62)}",
        event_time_ms=event_time_ms,
        window_ms=window_ms,
        max_buffer_size=buffer,
        probabilities=rng.dirichlet(np.ones(n_classes), size=rows).astype(np.float32),
        labels=rng.integers(0, n_classes, rows).astype(np.int32),
        features=rng.normal(size=(rows, n_features)).astype(np.float32),
    )


def bulk_producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 10,
            "compression.type": "lz4",
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )


def produce_values(producer: Producer, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Produce ``(key, value)`` pairs (keys route an agent to one partition) and flush."""
    for key, value in items:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, "some messages were not delivered"


def lag(worker: WorkerProcess) -> float:
    return sum(
        value
        for name, value in worker.metrics().items()
        if name.startswith("mlwatcher_worker_consumer_lag")
    )


def rows_applied(worker: WorkerProcess) -> float:
    return worker.metrics().get("mlwatcher_worker_rows_total", 0.0)


def wait_for_zero_lag(worker: WorkerProcess, timeout: float, rows_at_least: float = 0) -> float:
    """Seconds until the worker has applied ``rows_at_least`` rows in total (so the lag gauge
    cannot be a reading from before the messages arrived) and reports no consumer lag."""
    started = time.monotonic()
    wait_until(
        lambda: rows_applied(worker) >= rows_at_least and lag(worker) == 0,
        timeout,
        f"the worker to apply {rows_at_least:.0f} rows and its consumer lag to return to 0",
        0.1,
    )
    return time.monotonic() - started


def rss_mb(worker: WorkerProcess) -> float:
    assert worker.process is not None
    return psutil.Process(worker.process.pid).memory_info().rss / 2**20


def parquet_rows_seen(root: Path) -> dict[tuple[str, int], set[int]]:
    """``{(agent, window_start_ms): {rows_seen values}}`` over a Parquet sink data set;
    empty while there is none, or when a file went between listing and reading it (a sink
    taking a partition deletes its files past the committed offset, then writes them
    again): the caller polls."""
    files = sorted(root.rglob("*.parquet"))
    if not files:
        return {}
    try:
        table = pq.read_table(root, columns=["agent_id", "window_start", "rows_seen"])
    except FileNotFoundError:
        return {}
    frame = table.to_pandas()
    starts = frame["window_start"].astype("datetime64[ms, UTC]").astype("int64")
    seen: dict[tuple[str, int], set[int]] = defaultdict(set)
    for agent, start, rows in zip(
        frame["agent_id"].astype(str), starts, frame["rows_seen"], strict=True
    ):
        seen[agent, int(start)].add(int(rows))
    return seen


def read_all(bootstrap: str, topic: str, partitions: int, idle: float = 1.0) -> list[Any]:
    """Every message of ``topic`` from the beginning, until ``idle`` s pass with nothing new."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list[Any] = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
                last = time.monotonic()
    finally:
        consumer.close()
    return messages


def wait_value(read: Callable[[], Any], condition: Callable[[Any], bool], timeout: float,
               what: str, step: float = 0.2) -> Any:  # fmt: skip
    """Poll ``read()`` until ``condition`` holds for its value; return that value."""
    box: list[Any] = []

    def check() -> bool:
        box[:] = [read()]
        return condition(box[0])

    wait_until(check, timeout, what, step)
    return box[0]
