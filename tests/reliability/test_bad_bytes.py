"""Garbage on the predictions topic — random bytes, truncated batches, valid Avro of another
schema — mixed with good batches: every bad message is dead-lettered with its reason, the good
batches' windows are exact and the worker keeps serving."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlwatcher.dead_letter import HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_OFFSET
from mlwatcher.schemas import MetricRecord
from mlwatcher.schemas.codec import MAGIC
from tests.reliability.reliability_helpers import (
    bulk_producer,
    future_window,
    make_batch,
    produce_values,
    read_all,
    report,
    wait_for_zero_lag,
)
from tests.sinks.sink_helpers import make_record
from tests.stream_app.conftest import TopicReader, WorkerProcess

PARTITIONS = 3
WINDOW_MS = 10_000
AGENTS = 4
GOOD_BATCHES = 12  # per agent, in one window
ROWS = 25
BAD_PER_KIND = 15


def _bad_messages(
    good: list[bytes], keys: list[bytes], rng: np.random.Generator
) -> list[tuple[str, bytes, bytes]]:
    """``(kind, key, value)`` of bad messages; keys of real agents, so they share partitions."""
    bad: list[tuple[str, bytes, bytes]] = []
    for i in range(BAD_PER_KIND):
        key = keys[i % len(keys)]
        size = int(rng.integers(1, 2_000))
        bad.append(("random", key, rng.bytes(size)))
        # Random bytes that start like one of our messages (marker + fingerprint of a batch).
        header = good[0][:10]
        bad.append(("random-with-header", key, header + rng.bytes(size)))
        whole = good[int(rng.integers(len(good)))]
        bad.append(("truncated", key, whole[: int(rng.integers(1, len(whole) - 1))]))
        other_schema = make_record(f"agent-{i}", i, 5).encode()  # a MetricRecord: valid Avro
        bad.append(("wrong-schema", key, other_schema))
    bad.append(("marker-only", keys[0], MAGIC))
    return bad


def test_bad_bytes_are_dead_lettered_and_good_windows_stay_exact(
    unique_topics: Callable[..., dict[str, str]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = unique_topics({"predictions": PARTITIONS, "metrics": PARTITIONS, "dead": 1})
    worker = WorkerProcess(kafka_bootstrap, topics, f"bad-{uuid.uuid4().hex[:6]}", tmp_path)
    worker.start()
    try:
        worker.wait_ready(90)
        rng = np.random.default_rng(3)
        start = future_window(WINDOW_MS)
        agents = [f"bad-test-{i}-{uuid.uuid4().hex[:4]}" for i in range(AGENTS)]
        keys = [a.encode() for a in agents]
        good = [
            (agent.encode(),
             make_batch(agent, start + 10 * b, WINDOW_MS, ROWS, rng).encode())
            for b in range(GOOD_BATCHES)
            for agent in agents
        ]  # fmt: skip
        bad = _bad_messages([value for _, value in good], keys, rng)
        # Interleave: a bad message after every few good ones, in every agent's partition.
        mixed: list[tuple[bytes, bytes]] = []
        bad_iter = iter(bad)
        for i, item in enumerate(good):
            mixed.append(item)
            if i % 3 == 0 and (next_bad := next(bad_iter, None)) is not None:
                mixed.append(next_bad[1:])
        mixed.extend(item[1:] for item in bad_iter)
        # One batch per agent past end + grace closes the window.
        closing = start + WINDOW_MS + 5_000
        mixed.extend((k, make_batch(a, closing, WINDOW_MS, 1, rng).encode())
                     for a, k in zip(agents, keys, strict=True))  # fmt: skip
        produce_values(bulk_producer(kafka_bootstrap), topics["predictions"], mixed)
        rows = (GOOD_BATCHES * ROWS + 1) * AGENTS
        wait_for_zero_lag(worker, 45, rows)
        reader = TopicReader(kafka_bootstrap, topics["metrics"], PARTITIONS)
        try:
            reader.wait_for(
                lambda _: {r.agent_id for r in reader.records()} >= set(agents),
                30,
                "every good agent's window record",
            )
            records: list[MetricRecord] = reader.records()
        finally:
            reader.close()
        dead = read_all(kafka_bootstrap, topics["dead"], 1)
        health = worker.health()
        metrics = worker.metrics()
    finally:
        worker.close()
    assert health is not None and health["status"] == "ok", health
    for agent in agents:
        [record] = [r for r in records if r.agent_id == agent and r.window_start_ms == start]
        assert record.rows_seen == GOOD_BATCHES * ROWS, agent
        assert record.batches == GOOD_BATCHES
    # Every bad message is dead-lettered exactly once, unchanged, with a reason and detail.
    assert Counter(m.value() for m in dead) == Counter(value for _, _, value in bad)
    reasons = Counter(dict(m.headers())[HEADER_REASON].decode() for m in dead)
    assert set(reasons) == {"undecodable", "unknown-schema"}, reasons
    assert reasons["unknown-schema"] == BAD_PER_KIND  # the MetricRecords
    for message in dead:
        headers = dict(message.headers())
        assert headers[HEADER_DETAIL], headers
        assert int(headers[HEADER_SOURCE_OFFSET]) >= 0
    counted = sum(v for k, v in metrics.items() if k.startswith("mlwatcher_worker_dead_letters"))
    assert counted == len(bad)
    report("bad bytes", good_batches=len(good), bad_messages=len(bad), reasons=dict(reasons))
