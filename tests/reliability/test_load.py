"""Load on one worker process: a burst of 1000 agents, and one agent at 100x its usual rate.
Every window is emitted with exact counts, the consumer lag returns to 0 and the worker's
memory stays bounded (reservoirs, not raw rows)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from mlwatcher.schemas import MetricRecord
from tests.reliability.reliability_helpers import (
    bulk_producer,
    future_window,
    make_batch,
    produce_values,
    report,
    rows_applied,
    rss_mb,
    wait_for_zero_lag,
)
from tests.stream_app.conftest import TopicReader, WorkerProcess

PARTITIONS = 4
BURST_AGENTS = 1000
BURST_BATCHES = 2
BURST_ROWS = 10
BURST_WINDOW_MS = 4_000  # real-time window: closes on the worker's clock (idle close)
BUFFER = 100
HOT_WINDOW_MS = 60_000
HOT_BATCH_ROWS = 50
USUAL_BATCHES = 2
HOT_FACTOR = 100
# Growth allowed for holding 1000 agents' windows (reservoirs of <= 100 rows of 3 + 4 values
# plus per-agent bookkeeping); raw rows are never kept, so this does not grow with the rate.
MAX_BURST_GROWTH_MB = 150.0
MAX_HOT_GROWTH_MB = 40.0


@pytest.fixture(scope="module")
def load_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    from mlwatcher.kafka_admin import create_topics, delete_topics

    suffix = uuid.uuid4().hex[:8]
    topics = {"predictions": f"load-p-{suffix}", "metrics": f"load-m-{suffix}",
              "dead": f"load-d-{suffix}"}  # fmt: skip
    create_topics(
        kafka_bootstrap,
        {topics["predictions"]: PARTITIONS, topics["metrics"]: PARTITIONS, topics["dead"]: 1},
    )
    worker = WorkerProcess(
        kafka_bootstrap, topics, f"load-{suffix}", Path(tmp_path_factory.mktemp("load")),
        "--empty-window-limit", "0", "--log-level", "WARNING",
    ).start()  # fmt: skip
    try:
        worker.wait_ready(90)
        yield worker, topics
    finally:
        worker.close()
        delete_topics(kafka_bootstrap, topics.values(), wait=False)


def _records_by_agent(reader: TopicReader, prefix: str) -> dict[str, list[MetricRecord]]:
    found: dict[str, list[MetricRecord]] = {}
    for record in reader.records():
        if record.agent_id.startswith(prefix):
            found.setdefault(record.agent_id, []).append(record)
    return found


def test_burst_of_1000_agents_every_window_emitted_lag_recovers_memory_bounded(
    load_worker: tuple[WorkerProcess, dict[str, str]], kafka_bootstrap: str
) -> None:
    worker, topics = load_worker
    rss_idle = rss_mb(worker)
    prefix = f"burst-{uuid.uuid4().hex[:4]}-"
    agents = [f"{prefix}{i}" for i in range(BURST_AGENTS)]
    event_time_ms = int(time.time() * 1000)
    rng = np.random.default_rng(11)
    messages = [
        (agent.encode(), make_batch(agent, event_time_ms, BURST_WINDOW_MS, BURST_ROWS, rng,
                                    buffer=BUFFER).encode())
        for _ in range(BURST_BATCHES)
        for agent in agents
    ]  # fmt: skip
    rows_before = rows_applied(worker)
    sent_at = time.monotonic()
    produce_values(bulk_producer(kafka_bootstrap), topics["predictions"], messages)
    lag_s = wait_for_zero_lag(worker, 60, rows_before + len(messages) * BURST_ROWS)
    rss_loaded = rss_mb(worker)  # every window still open: the worker holds all 1000 agents
    reader = TopicReader(kafka_bootstrap, topics["metrics"], PARTITIONS)
    try:
        found = reader.wait_for(
            lambda _: (
                len(_records_by_agent(reader, prefix)) == BURST_AGENTS
                and _records_by_agent(reader, prefix)
            ),
            60,
            "a record for each of the 1000 agents",
        )
    finally:
        reader.close()
    emitted_s = time.monotonic() - sent_at
    window = event_time_ms - event_time_ms % BURST_WINDOW_MS
    for agent, records in found.items():
        assert len({r.window_id for r in records}) == 1, agent
        record = records[0]
        assert record.window_start_ms == window
        assert record.rows_seen == BURST_BATCHES * BURST_ROWS, agent
        assert record.batches == BURST_BATCHES
    assert worker.process is not None and worker.process.poll() is None
    metrics = worker.metrics()
    assert metrics.get("mlwatcher_worker_open_windows", 0) == 0
    growth = rss_loaded - rss_idle
    report(
        "burst of 1000 agents",
        messages=len(messages),
        seconds_to_zero_lag=round(lag_s, 2),
        seconds_to_all_records=round(emitted_s, 2),
        rss_idle_mb=round(rss_idle, 1),
        rss_holding_1000_agents_mb=round(rss_loaded, 1),
    )
    assert growth < MAX_BURST_GROWTH_MB, f"RSS grew {growth:.0f} MB holding 1000 agents"


def test_one_agent_at_100x_its_rate_exact_counts_bounded_sample_and_memory(
    load_worker: tuple[WorkerProcess, dict[str, str]], kafka_bootstrap: str
) -> None:
    worker, topics = load_worker
    agent = f"hot-{uuid.uuid4().hex[:6]}"
    calm = f"calm-{uuid.uuid4().hex[:6]}"
    start = future_window(HOT_WINDOW_MS)
    rng = np.random.default_rng(5)
    producer = bulk_producer(kafka_bootstrap)

    def batches(agent_id: str, count: int, event_time_ms: int) -> list[tuple[bytes, bytes]]:
        return [
            (agent_id.encode(), make_batch(agent_id, event_time_ms + i, HOT_WINDOW_MS,
                                           HOT_BATCH_ROWS, rng, buffer=BUFFER).encode())
            for i in range(count)
        ]  # fmt: skip

    # Warm up at the usual rate so the "before" RSS includes an agent like this one.
    rows_before = rows_applied(worker)
    produce_values(producer, topics["predictions"], batches(calm, USUAL_BATCHES, start))
    wait_for_zero_lag(worker, 30, rows_before + USUAL_BATCHES * HOT_BATCH_ROWS)
    rss_before = rss_mb(worker)
    hot_batches = USUAL_BATCHES * HOT_FACTOR
    rows_before = rows_applied(worker)
    sent_at = time.monotonic()
    produce_values(producer, topics["predictions"], batches(agent, hot_batches, start + 1_000))
    lag_s = wait_for_zero_lag(worker, 60, rows_before + hot_batches * HOT_BATCH_ROWS)
    rss_after = rss_mb(worker)
    # Batches past end + grace close both agents' windows.
    closing = start + HOT_WINDOW_MS + 20_000
    produce_values(
        producer, topics["predictions"], batches(agent, 1, closing) + batches(calm, 1, closing)
    )
    reader = TopicReader(kafka_bootstrap, topics["metrics"], PARTITIONS)
    try:
        found: Callable[[], dict[str, list[MetricRecord]]] = lambda: {  # noqa: E731
            a: [r for r in reader.records(a) if r.window_start_ms == start] for a in (agent, calm)
        }
        reader.wait_for(lambda _: all(found().values()), 30, "both agents' window records")
        records = found()
    finally:
        reader.close()
    [hot_record] = records[agent]
    [calm_record] = records[calm]
    assert hot_record.rows_seen == hot_batches * HOT_BATCH_ROWS
    assert hot_record.batches == hot_batches
    assert hot_record.rows_sampled == BUFFER  # the reservoir caps the sample, not the rate
    assert calm_record.rows_seen == USUAL_BATCHES * HOT_BATCH_ROWS
    assert calm_record.rows_sampled == BUFFER  # 100 rows sent, buffer 100
    report(
        "one agent at 100x",
        rows=hot_batches * HOT_BATCH_ROWS,
        seconds_to_zero_lag=round(lag_s, 2),
        seconds_total=round(time.monotonic() - sent_at, 2),
        rss_before_mb=round(rss_before, 1),
        rss_after_mb=round(rss_after, 1),
    )
    assert rss_after - rss_before < MAX_HOT_GROWTH_MB
