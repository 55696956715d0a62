"""The Anodot sink end to end: real Kafka broker, fake Anodot server."""

from __future__ import annotations

import math
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anodot import FakeAnodot, Fault, series_in_order
from sink_helpers import (
    FAST_GROUP,
    expected_series_points,
    make_record,
    make_records,
    produce,
    read_dead_letters,
    start_sink,
)

from mlwatcher.dead_letter import HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_OFFSET
from mlwatcher.metrics import Point
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_sink import AnodotSink, AnodotSinkConfig
from mlwatcher.sinks.rate_limit import RateLimiter
from mlwatcher.sinks.retry import BackoffPolicy
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import committed_offsets, end_offsets

TOKEN = "tok-9f8e7d6c5b4a"


@pytest.fixture
def server() -> Iterator[FakeAnodot]:
    with FakeAnodot(token=TOKEN) as fake:
        yield fake


def _run_sink_in_thread(sink: AnodotSink, shutdown: Shutdown) -> threading.Thread:
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    return thread


def _arrivals(server: FakeAnodot) -> Counter[tuple[object, int, float]]:
    return Counter((p.series, p.timestamp, p.value) for p in server.accepted())


def _assert_series_in_time_order(server: FakeAnodot) -> None:
    for series, timestamps in series_in_order(server.accepted()):
        assert timestamps == sorted(timestamps), f"series {series} out of order"


def test_every_point_once_or_dead_lettered_within_rate(
    kafka_bootstrap: str, unique_topics, server: FakeAnodot
) -> None:
    topics = unique_topics({"metrics": 3, "dlq": 1})
    records = make_records([f"agent-{i}" for i in range(4)], windows=12, n_points=40)
    poison = make_record("poison", 0, 0)
    poison.points = [
        Point("refused_by_anodot", "gauge", 1.0),
        Point("not_a_number", "gauge", math.nan),
        Point("fine", "gauge", 2.0),
    ]
    produce(kafka_bootstrap, topics["metrics"], [*records, poison], 3, [(1, b"garbage")])
    server.reject_what["refused_by_anodot"] = 2012
    expected = expected_series_points([*records, make_record("poison", 0, 0)])
    fine = make_record("poison", 0, 0)
    fine.points = [Point("fine", "gauge", 2.0)]
    expected |= expected_series_points([fine])

    rate = 2000
    client = AnodotClient(
        server.base_url, TOKEN, rate_limiter=RateLimiter(rate), max_points_per_request=500
    )
    config = AnodotSinkConfig(
        kafka_bootstrap, topics["metrics"], topics["dlq"], group_id="g-" + topics["metrics"]
    )
    shutdown = Shutdown()
    sink = AnodotSink(config, client)
    thread = _run_sink_in_thread(sink, shutdown)
    server.wait_for(lambda s: s.accepted_count() >= len(expected), timeout=60)
    dead = read_dead_letters(kafka_bootstrap, topics["dlq"], expected=3)
    shutdown.request_stop()
    thread.join(30)
    assert not thread.is_alive()

    arrivals = _arrivals(server)
    assert set(arrivals) == expected
    assert max(arrivals.values()) == 1  # no fault injected: exactly once
    assert server.max_points_in_window(1.0) <= rate
    assert all(r.n_points <= 500 for r in server.requests())
    _assert_series_in_time_order(server)

    reasons = sorted(dict(m.headers())[HEADER_DETAIL].decode() for m in dead)
    codes = sorted(dict(m.headers())[HEADER_REASON].decode() for m in dead)
    assert codes == ["anodot-rejected", "point-refused", "undecodable"]
    assert len(reasons) == 3, reasons
    assert "2012" in reasons[0]
    assert any("not an Avro single-object message" in r for r in reasons)
    assert any("finite" in r for r in reasons)
    assert all(HEADER_SOURCE_OFFSET in dict(m.headers()) for m in dead)
    assert sink.stats.points_dead_lettered == 2 and sink.stats.records_dead_lettered == 1
    group = "g-" + topics["metrics"]
    assert committed_offsets(kafka_bootstrap, group, topics["metrics"], 3) == end_offsets(
        kafka_bootstrap, topics["metrics"], 3
    )


def test_nothing_lost_through_throttling_errors_and_slow_answers(
    kafka_bootstrap: str, unique_topics, server: FakeAnodot
) -> None:
    topics = unique_topics({"metrics": 2, "dlq": 1})
    records = make_records(["a", "b", "c"], windows=10, n_points=30)
    produce(kafka_bootstrap, topics["metrics"], records, 2)
    expected = expected_series_points(records)
    server.inject(Fault("status", status=429, count=2, retry_after=0.05))
    server.inject(Fault("status", status=500, count=1))
    server.inject(Fault("errors", code=2003, indices=list(range(0, 200, 3)), count=2))
    server.inject(Fault("slow", delay=0.8, count=1))
    client = AnodotClient(
        server.base_url,
        TOKEN,
        rate_limiter=RateLimiter(5000),
        backoff=BackoffPolicy(base=0.02, cap=0.2),
        timeout=0.4,
        max_points_per_request=200,
    )
    config = AnodotSinkConfig(kafka_bootstrap, topics["metrics"], topics["dlq"], group_id="g2")
    shutdown = Shutdown()
    sink = AnodotSink(config, client)
    thread = _run_sink_in_thread(sink, shutdown)
    server.wait_for(lambda s: set(_arrivals(s)) >= expected, timeout=60)
    shutdown.request_stop()
    thread.join(30)
    arrivals = _arrivals(server)
    assert set(arrivals) == expected
    slow_points = sum(r.n_points for r in server.requests() if r.fault and "slow" in r.fault)
    duplicates = sum(count - 1 for count in arrivals.values())
    assert duplicates <= slow_points  # only the timed-out request was sent twice
    assert sink.stats.retries >= 5
    _assert_series_in_time_order(server)


def test_kill_9_mid_batch_and_restart_loses_nothing(
    kafka_bootstrap: str, unique_topics, server: FakeAnodot, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 3, "dlq": 1})
    records = make_records([f"agent-{i}" for i in range(6)], windows=20, n_points=50)
    produce(kafka_bootstrap, topics["metrics"], records, 3)
    expected = expected_series_points(records)
    args = [
        "--log-level",
        "DEBUG",
        "sink",
        "anodot",
        "-b",
        kafka_bootstrap,
        *FAST_GROUP,
        "--metrics-topic",
        topics["metrics"],
        "--dead-letter-topic",
        topics["dlq"],
        "--group-id",
        "g-kill",
        "--base-url",
        server.base_url,
        "--rate-limit",
        "2000",
        "--max-points-per-request",
        "500",
    ]
    log_path = tmp_path / "sink.log"
    env = {"MLWATCHER_ANODOT_TOKEN": TOKEN}
    first = start_sink(args, log_path, env)
    try:
        server.wait_for(lambda s: s.accepted_count() >= 2500, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = server.accepted_count()
        second = start_sink(args, log_path, env)
        server.wait_for(lambda s: set(_arrivals(s)) >= expected, timeout=90)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for process in (first, second) if "second" in locals() else (first,):
            if process.poll() is None:
                process.kill()
    arrivals = _arrivals(server)
    assert set(arrivals) == expected  # at least once, nothing lost
    duplicates = sum(count - 1 for count in arrivals.values())
    print(f"\nkill -9 after {killed_at} of {len(expected)} points: {duplicates} duplicates")
    _assert_series_in_time_order(server)
    assert server.max_points_in_window(1.0) <= 2000 * 2  # two processes at most, one at a time
    log_text = log_path.read_text()
    assert "POST /api/v1/metrics" in log_text  # urllib3 debug lines are there...
    assert TOKEN not in log_text  # ...without the token
    assert committed_offsets(kafka_bootstrap, "g-kill", topics["metrics"], 3) == end_offsets(
        kafka_bootstrap, topics["metrics"], 3
    )
