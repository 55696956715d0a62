"""The one dead-letter envelope: built, written and read back the same way by every stage."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mlwatcher.brokers import free_port
from mlwatcher.dead_letter import (
    HEADER_DETAIL,
    HEADERS,
    MAX_DETAIL,
    DeadLetter,
    SourceRef,
    envelope_headers,
)
from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import read_topic, wait_until


def test_envelope_round_trip_and_limits() -> None:
    source = SourceRef("mlwatcher.metrics", 3, 41)
    headers = envelope_headers("undecodable", "x" * 5000, "sink-parquet", source)
    assert [name for name, _ in headers] == list(HEADERS)
    letter = DeadLetter.from_parts(headers, b"key", b"\x00bad")
    assert letter == DeadLetter(
        "undecodable", "x" * MAX_DETAIL, "sink-parquet", source, b"key", b"\x00bad"
    )
    with pytest.raises(ValueError, match=HEADER_DETAIL):
        DeadLetter.from_parts([h for h in headers if h[0] != HEADER_DETAIL], None, b"")


def _parquet_sink_dead_letters(bootstrap: str, topics: dict[str, str], tmp_path: Path) -> None:
    """Garbage on the metrics topic -> the Parquet sink dead-letters it into topics["dead"]."""
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topics["metrics"], key=b"sink-key", value=b"\x00not a record")
    producer.flush(10)
    config = ParquetSinkConfig(
        bootstrap, topics["metrics"], topics["dead"], tmp_path / "data", group_id=topics["metrics"]
    )
    sink, shutdown = ParquetSink(config), Shutdown()
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    wait_until(lambda: sink.stats.records_dead_lettered == 1, 60, "the sink's dead letter")
    shutdown.request_stop()
    thread.join(30)
    assert not thread.is_alive()


def test_sink_dead_letter_reads_back(kafka_bootstrap: str, unique_topics, tmp_path: Path) -> None:
    topics = unique_topics({"metrics": 1, "dead": 1})
    _parquet_sink_dead_letters(kafka_bootstrap, topics, tmp_path)
    [message] = read_topic(kafka_bootstrap, topics["dead"], expected=1, linger=0.5)
    letter = DeadLetter.from_message(message)
    assert letter.reason == "undecodable"
    assert "not an Avro single-object message" in letter.detail
    assert letter.stage == "sink-parquet"
    assert letter.source == SourceRef(topics["metrics"], 0, 0)
    assert (letter.key, letter.value) == (b"sink-key", b"\x00not a record")


def test_worker_and_sink_dead_letters_read_back_alike(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"predictions": 1, "metrics": 1, "dead": 1})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topics["predictions"], key=b"worker-key", value=b"\x00garbage")
    producer.flush(10)
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlwatcher",
                "worker",
                "--bootstrap-servers",
                kafka_bootstrap,
                "--predictions-topic",
                topics["predictions"],
                "--metrics-topic",
                topics["metrics"],
                "--dead-letter-topic",
                topics["dead"],
                "--app-id",
                "dlq-" + topics["predictions"],
                "--web-port",
                str(free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: read_topic(kafka_bootstrap, topics["dead"], expected=1, timeout=5),
            90,
            "the worker's dead letter",
        )
    finally:
        worker.terminate()
        worker.wait(30)
    _parquet_sink_dead_letters(kafka_bootstrap, topics, tmp_path)
    letters = [
        DeadLetter.from_message(m)
        for m in read_topic(kafka_bootstrap, topics["dead"], expected=2, linger=0.5)
    ]
    by_stage = {letter.stage: letter for letter in letters}
    assert set(by_stage) == {"worker", "sink-parquet"}, log_path.read_text()[-3000:]
    worker_letter = by_stage["worker"]
    assert worker_letter.reason == "undecodable"
    assert worker_letter.source == SourceRef(topics["predictions"], 0, 0)
    assert (worker_letter.key, worker_letter.value) == (b"worker-key", b"\x00garbage")
    assert by_stage["sink-parquet"].reason == "undecodable"
