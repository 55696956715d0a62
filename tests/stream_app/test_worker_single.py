"""One real worker process against the real broker: values, idle close, late data, poison,
empty windows. The scenarios use different agents on one module-wide worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from mlwatcher.dead_letter import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)
from mlwatcher.kafka_admin import create_topics, delete_topics
from mlwatcher.metrics import compute_metrics
from mlwatcher.producer.agent import MonitoringAgent
from mlwatcher.schemas import PredictionBatch
from tests.stream_app.conftest import TopicReader, WorkerProcess

WINDOW_MS = 2_000
GRACE_MS = 1_000  # the default for a 2 s window: 20% clamped up to 1 s
IDLE_MS = 1_000
EMPTY_LIMIT = 2
PARTITIONS = 3


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {
        "predictions": f"pred-{suffix}",
        "metrics": f"metrics-{suffix}",
        "dead": f"dead-{suffix}",
    }
    create_topics(
        kafka_bootstrap,
        {names["predictions"]: PARTITIONS, names["metrics"]: PARTITIONS, names["dead"]: 1},
    )
    yield names
    delete_topics(kafka_bootstrap, names.values(), wait=False)


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        kafka_bootstrap,
        topics,
        f"single-{uuid.uuid4().hex[:8]}",
        Path(tmp_path_factory.mktemp("worker")),
        "--empty-window-limit", str(EMPTY_LIMIT),
        "--idle-close-delay-ms", str(IDLE_MS),
    ).start()  # fmt: skip
    try:
        process.wait_ready(timeout=90)
        yield process
    finally:
        process.close()


@pytest.fixture
def metrics_reader(kafka_bootstrap: str, topics: dict[str, str]) -> Iterator[TopicReader]:
    reader = TopicReader(kafka_bootstrap, topics["metrics"], PARTITIONS)
    yield reader
    reader.close()


def next_window_start(lead_ms: int = 1_500) -> int:
    """A window that starts at least ``lead_ms`` in the future (event times are ours)."""
    now = int(time.time() * 1000) + lead_ms
    return now - now % WINDOW_MS + WINDOW_MS


def agent_with_clock(
    kafka_bootstrap: str, topic: str, agent_id: str, event_time_ms: list[int], **kwargs
) -> MonitoringAgent:
    return MonitoringAgent(
        frequency=WINDOW_MS / 60_000,
        agent_id=agent_id,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        clock=lambda: event_time_ms[0] / 1000,
        **kwargs,
    )


def sent_batches(kafka_bootstrap: str, topic: str, agent_id: str) -> list[PredictionBatch]:
    reader = TopicReader(kafka_bootstrap, topic, PARTITIONS)
    try:
        reader.poll(3.0)
        batches = []
        for message in reader.messages:
            if message.key() == agent_id.encode():
                try:
                    batches.append(PredictionBatch.decode(message.value()))
                except ValueError:
                    continue
        return batches
    finally:
        reader.close()


def test_idle_window_closes_with_exact_counts_and_values(
    worker: WorkerProcess, topics: dict[str, str], kafka_bootstrap: str, metrics_reader: TopicReader
) -> None:
    agent_id = f"values-{uuid.uuid4().hex[:6]}"
    start = next_window_start()
    clock = [start + 300]
    rng = np.random.default_rng(1)
    with agent_with_clock(
        kafka_bootstrap, topics["predictions"], agent_id, clock,
        max_buffer_size=1_000, n_classes=3,
    ) as agent:  # fmt: skip
        for i in range(8):
            clock[0] = start + 100 * i
            agent.collect_data(
                rng.dirichlet([1, 2, 3], size=40), rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
            )
    [record] = metrics_reader.wait_for(
        lambda _: metrics_reader.records(agent_id), 30, f"the record of {agent_id}"
    )
    arrived_s = time.time()
    due_s = (start + WINDOW_MS + GRACE_MS) / 1000
    # The agent sent nothing after its window: it closes on the worker's clock.
    assert IDLE_MS / 1000 - 0.2 <= arrived_s - due_s <= IDLE_MS / 1000 + 3.0
    assert (record.window_start_ms, record.window_end_ms) == (start, start + WINDOW_MS)
    assert record.rows_seen == record.rows_sampled == 320
    assert record.batches == 8
    batches = sent_batches(kafka_bootstrap, topics["predictions"], agent_id)
    assert sum(b.n_rows for b in batches) == 320
    expected = compute_metrics(
        np.concatenate([b.probabilities for b in batches]),
        np.concatenate([b.labels for b in batches]),
        np.concatenate([b.features for b in batches]),
    )
    got = {_series(p): p.value for p in record.points}
    assert got == pytest.approx({_series(p): p.value for p in expected}, rel=1e-9, abs=1e-12)


def test_late_and_poison_input_go_to_the_dead_letter_topic(
    worker: WorkerProcess, topics: dict[str, str], kafka_bootstrap: str, metrics_reader: TopicReader
) -> None:
    agent_id = f"late-{uuid.uuid4().hex[:6]}"
    start = next_window_start()
    clock = [start + 100]
    rng = np.random.default_rng(2)
    dead = TopicReader(kafka_bootstrap, topics["dead"], 1)
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        with agent_with_clock(kafka_bootstrap, topics["predictions"], agent_id, clock) as agent:
            agent.collect_data(rng.dirichlet([1, 1], size=10))
            agent.flush()
            raw.produce(topics["predictions"], key=agent_id.encode(), value=b"\x00garbage")
            raw.flush(10)
            # n_classes changes mid-window: a second agent object with the same id.
            with agent_with_clock(
                kafka_bootstrap, topics["predictions"], agent_id, clock, n_classes=3
            ) as other:
                other.collect_data(rng.dirichlet([1, 1, 1], size=5))
            clock[0] = start + WINDOW_MS + GRACE_MS  # next window; closes the first one
            agent.collect_data(rng.dirichlet([1, 1], size=10))
            agent.flush()
            metrics_reader.wait_for(
                lambda _: metrics_reader.records(agent_id), 30, "the first window's record"
            )
            clock[0] = start + 500  # the first window is closed: late
            agent.collect_data(rng.dirichlet([1, 1], size=7))
        by_reason = dead.wait_for(
            lambda messages: len(_mine(messages, agent_id)) >= 3 and _mine(messages, agent_id),
            30,
            "three dead letters",
        )
    finally:
        dead.close()
    reasons = {dict(m.headers())[HEADER_REASON].decode(): m for m in by_reason}
    assert set(reasons) == {"undecodable", "shape-changed", "late"}
    garbage = reasons["undecodable"]
    assert garbage.value() == b"\x00garbage"
    headers = dict(garbage.headers())
    assert headers[HEADER_SOURCE_TOPIC].decode() == topics["predictions"]
    assert int(headers[HEADER_SOURCE_PARTITION]) >= 0
    assert int(headers[HEADER_SOURCE_OFFSET]) >= 0
    assert b"n_classes" in dict(reasons["shape-changed"].headers())[HEADER_DETAIL]
    [first] = [r for r in metrics_reader.records(agent_id) if r.window_start_ms == start]
    assert first.rows_seen == 10  # neither the poison nor the late rows were merged
    counters = worker.metrics()
    assert counters["mlwatcher_worker_late_batches_total"] >= 1
    assert counters['mlwatcher_worker_dead_letters_total{reason="undecodable"}'] >= 1


def test_empty_windows_until_the_limit(
    worker: WorkerProcess, topics: dict[str, str], kafka_bootstrap: str, metrics_reader: TopicReader
) -> None:
    agent_id = f"empty-{uuid.uuid4().hex[:6]}"
    start = next_window_start()
    clock = [start + 100]
    with agent_with_clock(kafka_bootstrap, topics["predictions"], agent_id, clock) as agent:
        agent.collect_data(np.array([[0.2, 0.8], [0.9, 0.1]]))
    wanted = [start + i * WINDOW_MS for i in range(1 + EMPTY_LIMIT)]
    records = metrics_reader.wait_for(
        lambda _: (
            len(metrics_reader.records(agent_id)) >= len(wanted)
            and metrics_reader.records(agent_id)
        ),
        30,
        "the window and its empty successors",
    )
    assert [r.window_start_ms for r in records] == wanted
    assert [r.rows_seen for r in records] == [2, 0, 0]
    # One more window would have been due by now + margin: the agent counts as gone.
    beyond = start + (2 + EMPTY_LIMIT) * WINDOW_MS + GRACE_MS + IDLE_MS
    time.sleep(max(0.0, beyond / 1000 - time.time()) + 1.5)
    metrics_reader.poll(0.5)
    assert len(metrics_reader.records(agent_id)) == len(wanted)
    empty = records[1]
    counts = {p.class_name: p.value for p in empty.points if p.what == "prediction_count"}
    assert counts == {"class_0": 0.0, "class_1": 0.0}


def _mine(messages: list, agent_id: str) -> list:
    return [m for m in messages if m.key() == agent_id.encode()]


def _series(point) -> tuple:
    return (
        point.what,
        point.class_name,
        point.feat_name,
        point.stat,
        tuple(sorted(point.extra.items())),
    )
