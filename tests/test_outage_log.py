"""Quiet failure logs: while Kafka is unreachable, one line per interval, every error counted."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from mlwatcher.outage_log import OutageLog, SummarisingFilter
from mlwatcher.producer import MonitoringAgent
from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import wait_until

UNREACHABLE = "127.0.0.1:9"


def test_one_line_per_interval_then_one_when_the_errors_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = OutageLog("sink: Kafka", logging.getLogger("test.outage"), 10.0, lambda: now[0])
    caplog.set_level(logging.INFO, "test.outage")
    for step in range(100):  # 4 errors a second for 25 s
        now[0] = step * 0.25
        outage.error(f"connection refused #{step}")
        outage.tick()
    now[0] = 30.0
    outage.tick()  # 5.25 s without error: the outage may still go on
    now[0] = 36.0
    outage.tick()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "WARNING", "INFO"]
    assert lines[0][1] == "sink: Kafka unreachable for 0 s (1 errors since the last line): " + (
        "connection refused #0"
    )
    assert lines[1][1].startswith("sink: Kafka unreachable for 10 s (40 errors")
    assert lines[2][1].startswith("sink: Kafka unreachable for 20 s (40 errors")
    assert "back to normal (the outage lasted 25 s, 19 errors)" in lines[3][1]
    assert outage.errors == 100 and outage.down_since is None


def test_a_client_that_only_logs_is_summarised_too(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = OutageLog("worker: Kafka", logging.getLogger("test.worker"), 10.0, lambda: now[0])
    client = logging.getLogger("test.aiokafka")
    client.addFilter(SummarisingFilter(outage))
    caplog.set_level(logging.INFO)
    for step in range(50):
        now[0] = step * 0.1
        client.error("Unable connect to node with id 1: [Errno 111] Connect call failed")
    client.info("still logged: below WARNING")
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert lines[0] == (
        "test.worker",
        "worker: Kafka unreachable for 0 s (1 errors since the last line): Unable connect to "
        "node with id 1: [Errno 111] Connect call failed",
    )
    assert lines[1:] == [("test.aiokafka", "still logged: below WARNING")]
    assert outage.errors == 50


def _loud_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _raw_librdkafka_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    """librdkafka's own stderr lines (``%3|...|FAIL|...``), which bypass Python logging."""
    return [line for line in capfd.readouterr().err.splitlines() if line.startswith("%")]


def test_producer_without_broker_logs_one_line_per_interval(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    agent = MonitoringAgent(n_classes=2, bootstrap_servers=UNREACHABLE, log_interval=1.0)
    try:
        started = time.monotonic()
        # librdkafka retries the connection with a growing backoff: 10 errors take 1-3 s.
        wait_until(lambda: agent.stats()["kafka_errors"] >= 10, 30, "10 connection errors")
        elapsed = time.monotonic() - started
    finally:
        agent.close(timeout=0)
    loud = _loud_lines(caplog)
    assert 1 <= len(loud) <= elapsed / 1.0 + 2, loud
    assert all("Kafka (127.0.0.1:9) unreachable for" in line for line in loud), loud
    assert _raw_librdkafka_lines(capfd) == []


def test_sink_without_broker_logs_one_line_per_interval(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], tmp_path
) -> None:
    caplog.set_level(logging.INFO)
    config = ParquetSinkConfig(
        UNREACHABLE, "metrics", "dead", tmp_path / "data", progress_interval=1.0
    )
    sink, shutdown = ParquetSink(config), Shutdown(grace_seconds=0.1)
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    started = time.monotonic()
    thread.start()
    wait_until(lambda: sink.stats.kafka_errors >= 30, 30, "30 connection errors")
    elapsed = time.monotonic() - started
    shutdown.request_stop()
    shutdown.request_stop()  # abort: nothing to deliver anyway
    thread.join(30)
    assert not thread.is_alive()
    loud = _loud_lines(caplog)
    assert 1 <= len(loud) <= elapsed / 1.0 + 2, loud
    assert all("parquet sink: Kafka (127.0.0.1:9) unreachable for" in line for line in loud)
    assert _raw_librdkafka_lines(capfd) == []
