"""Stop and kill the (private, persistent) Apache Kafka broker while producers, a worker and
the Parquet sink run: no batch is lost and the worker and sink resume by themselves."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from mlwatcher.kafka_admin import create_topics
from mlwatcher.producer.agent import MonitoringAgent
from tests.helpers import wait_until
from tests.reliability.reliability_helpers import (
    future_window,
    parquet_rows_seen,
    report,
    wait_value,
    window_start,
)
from tests.sinks.sink_helpers import FAST_GROUP, start_sink
from tests.stream_app.conftest import WorkerProcess

WINDOW_MS = 1_000
STEP_MS = 100  # simulated event time between two sends of an agent: 10 batches per window
ROWS = 20
AGENTS = 3
STEPS = 220
PARTITIONS = 2
OUTAGE_S = 4.0


class SimulatedTraffic:
    """Agents sending in a background thread on a simulated clock (far in the future, so only
    their own event time closes windows), counting rows per (agent, window)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.clock_ms = future_window(WINDOW_MS)
        self.first_window = self.clock_ms
        self.step = 0
        self.expected: Counter[tuple[str, int]] = Counter()
        self.agents = [
            MonitoringAgent(
                frequency=WINDOW_MS / 60_000,
                max_buffer_size=50,
                n_classes=3,
                agent_id=f"restart-{i}-{uuid.uuid4().hex[:4]}",
                bootstrap_servers=bootstrap,
                topic=topic,
                clock=lambda: self.clock_ms / 1000,
            )
            for i in range(AGENTS)
        ]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.rng = np.random.default_rng(7)

    def _run(self) -> None:
        for self.step in range(STEPS):
            for agent in self.agents:
                agent.collect_data(
                    self.rng.dirichlet([1, 1, 1], size=ROWS), self.rng.normal(size=(ROWS, 3))
                )
                self.expected[agent.agent_id, window_start(self.clock_ms, WINDOW_MS)] += ROWS
            self.clock_ms += STEP_MS
            time.sleep(0.05)

    def close_last_windows(self) -> None:
        """One batch past the last window's end + grace (1 s) closes it; that batch's own
        window stays open and is not checked."""
        self.clock_ms = window_start(self.clock_ms, WINDOW_MS) + 5 * WINDOW_MS
        for agent in self.agents:
            agent.collect_data(self.rng.dirichlet([1, 1, 1], size=1))
            agent.close()
            assert agent.stats()["delivery_failures"] == 0
            assert agent.stats()["dropped_queue_full"] == 0


def _rows_total(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("mlwatcher_worker_rows_total", 0.0)
    except requests.RequestException:
        return -1.0


def test_broker_stop_and_kill_mid_stream_lose_nothing_and_everything_resumes(
    fresh_kafka_broker: Callable[..., object], tmp_path: Path
) -> None:
    broker = fresh_kafka_broker(persistent=True)
    bootstrap = broker.bootstrap_servers  # type: ignore[attr-defined]
    suffix = uuid.uuid4().hex[:6]
    topics = {"predictions": f"pred-{suffix}", "metrics": f"met-{suffix}", "dead": f"dl-{suffix}"}
    create_topics(
        bootstrap,
        {topics["predictions"]: PARTITIONS, topics["metrics"]: PARTITIONS, topics["dead"]: 1},
    )
    worker = WorkerProcess(bootstrap, topics, f"restart-{suffix}", tmp_path).start()
    output = tmp_path / "parquet"
    sink = start_sink(
        ["sink", "parquet", "-b", bootstrap, "--metrics-topic", topics["metrics"],
         "--dead-letter-topic", topics["dead"], "--output", str(output),
         "--roll-seconds", "0.5", *FAST_GROUP],
        tmp_path / "sink.log",
    )  # fmt: skip
    traffic = SimulatedTraffic(bootstrap, topics["predictions"])
    try:
        worker.wait_ready(60)
        traffic.thread.start()
        recoveries = []
        for stop_at, how in ((60, "stop"), (140, "kill")):
            wait_until(lambda s=stop_at: traffic.step >= s, 30, f"step {stop_at} of the traffic")
            if how == "stop":
                broker.stop()  # type: ignore[attr-defined]
            else:
                broker.kill()  # type: ignore[attr-defined]
            time.sleep(OUTAGE_S)  # the agents keep sending into librdkafka's queue meanwhile
            assert worker.process is not None and worker.process.poll() is None
            assert sink.poll() is None
            broker.start()  # type: ignore[attr-defined]
            back = time.monotonic()
            sent_before_restart = sum(traffic.expected.values())
            wait_until(
                lambda r=sent_before_restart: _rows_total(worker) >= r,
                45,
                f"the worker to catch up with what was sent during the broker {how}",
            )
            recoveries.append((how, round(time.monotonic() - back, 2)))
        traffic.thread.join(60)
        traffic.close_last_windows()
        expected = dict(traffic.expected)
        seen = wait_value(
            lambda: parquet_rows_seen(output),
            lambda s: set(expected) <= set(s),
            60,
            "every window with rows in the Parquet data set",
        )
        wrong = {k: (seen[k], v) for k, v in expected.items() if seen[k] != {v}}
        assert not wrong, f"rows_seen differs from rows produced: {wrong}"
        # Windows between the last one with rows and the closing batch are empty records.
        extra = {k: v for k, v in seen.items() if k not in expected}
        assert all(v == {0} for v in extra.values()), extra
        assert worker.process is not None and worker.process.poll() is None, "worker restarted"
        assert sink.poll() is None, "sink restarted"
        # Quiet while the broker was down: a few summary lines, not a line per client error.
        lines = worker.log().splitlines()
        errors = [ln for ln in lines if "[ERROR]" in ln]
        assert len(errors) < 10, errors[:40]
        assert any("worker: Kafka" in ln and "unreachable" in ln for ln in lines), lines[-40:]
        assert worker.metrics()["mlwatcher_worker_kafka_errors_total"] > 0
        assert worker.metrics()["mlwatcher_worker_stalls_total"] == 0
        report(
            "broker restart",
            windows=len(expected),
            rows=sum(expected.values()),
            outage_s=OUTAGE_S,
            seconds_from_broker_start_to_caught_up=recoveries,
        )
    finally:
        if os.environ.get("MLWATCHER_SHOW_WORKER_LOGS"):
            print(worker.log(), (tmp_path / "sink.log").read_text(errors="replace"))
        worker.close()
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)
