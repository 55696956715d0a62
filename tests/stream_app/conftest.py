"""Helpers for stream-worker tests: worker subprocesses and a topic reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from mlwatcher.brokers import free_port
from mlwatcher.schemas import MetricRecord
from mlwatcher.stream_app.observability import parse_prometheus
from tests.helpers import wait_until

WORKER_COMMAND = [sys.executable, "-m", "mlwatcher", "worker"]


class WorkerProcess:
    """One ``mlwatcher worker`` process with its own web port and log file."""

    def __init__(
        self, bootstrap: str, topics: dict[str, str], app_id: str, log_dir: Path, *extra: str
    ) -> None:
        self.web_port = free_port()
        self.log_path = log_dir / f"worker-{app_id}-{self.web_port}.log"
        self.args = [
            *WORKER_COMMAND,
            "--bootstrap-servers", bootstrap,
            "--predictions-topic", topics["predictions"],
            "--metrics-topic", topics["metrics"],
            "--dead-letter-topic", topics["dead"],
            "--app-id", app_id,
            "--web-port", str(self.web_port),
            *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any] | None:
        try:
            response = requests.get(f"http://127.0.0.1:{self.web_port}/health", timeout=1)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def metrics(self) -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2).text
        return parse_prometheus(text)

    def wait_ready(self, timeout: float = 60.0, with_partitions: bool = True) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()[-4000:]}")
            health = self.health()
            if health and (health["assigned_partitions"] or not with_partitions):
                return health
            return None

        return wait_until(ready, timeout, f"worker on port {self.web_port} to be ready", 0.2)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class TopicReader:
    """Reads a whole topic from the beginning (no consumer group) and keeps what it saw."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.messages: list[Any] = []

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.consumer.poll(remaining)
            if message is not None and message.error() is None:
                self.messages.append(message)

    def wait_for(self, condition: Callable[[list[Any]], Any], timeout: float, what: str) -> Any:
        def check() -> Any:
            self.poll()
            return condition(self.messages)

        return wait_until(check, timeout, what, step=0)

    def records(self, agent_id: str | None = None) -> list[MetricRecord]:
        records = [MetricRecord.decode(m.value()) for m in self.messages]
        return [r for r in records if agent_id is None or r.agent_id == agent_id]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(topics: dict[str, str], app_id: str, *extra: str) -> WorkerProcess:
        worker = WorkerProcess(kafka_bootstrap, topics, app_id, tmp_path, *extra).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()
    if os.environ.get("MLWATCHER_SHOW_WORKER_LOGS"):
        for worker in workers:
            print(worker.log())
