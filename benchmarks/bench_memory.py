"""Memory of one stream worker: idle, holding 1000 agents' open windows, and one agent at 100x.

    python -m benchmarks.bench_memory

1. One worker starts on an empty predictions topic: its RSS is the idle figure.
2. 1000 agents send 3 batches each of 100 rows x 10 classes x 20 features (buffer 500) into
   one-hour windows far in the future, so no window closes: the worker then holds 1000 open
   windows (300 rows each, all in the reservoir). Peak RSS is sampled with psutil every 50 ms
   while it processes them.
3. One more agent sends 100x the usual rate (300 batches = 30k rows into one window): its
   reservoir stays at 500 rows, so the RSS before and after should barely differ.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import requests

from benchmarks._common import local_kafka, print_table, produce_all, wait_for
from mlwatcher.brokers import free_port
from mlwatcher.kafka_admin import create_topics
from mlwatcher.schemas import PredictionBatch
from mlwatcher.stream_app.observability import parse_prometheus

AGENTS = 1_000
BATCHES_PER_AGENT = 3
ROWS, CLASSES, FEATURES, BUFFER = 100, 10, 20, 500
WINDOW_MS = 3_600_000
HOT_FACTOR = 100
PARTITIONS = 4
WORKER = [sys.executable, "-m", "mlwatcher", "worker"]


class _RssSampler:
    """Samples a process's RSS in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _metrics(port: int) -> dict[str, float]:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return {}
    return parse_prometheus(text)


def _ready(port: int) -> bool:
    try:
        response = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except requests.RequestException:
        return False
    return response.status_code == 200 and bool(response.json()["assigned_partitions"])


def _batches(agent: str, count: int, start_ms: int, rng: np.random.Generator) -> list[bytes]:
    return [
        PredictionBatch(
            agent_id=agent,
            batch_id=f"{agent}-{i}",
            event_time_ms=start_ms + i,
            window_ms=WINDOW_MS,
            max_buffer_size=BUFFER,
            probabilities=rng.dirichlet(np.ones(CLASSES), size=ROWS).astype(np.float32),
            labels=rng.integers(0, CLASSES, ROWS).astype(np.int32),
            features=rng.normal(size=(ROWS, FEATURES)).astype(np.float32),
        ).encode()
        for i in range(count)
    ]


def _measure(bootstrap: str, log_dir: Path) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    topics = {"predictions": f"mem-p-{suffix}", "metrics": f"mem-m-{suffix}",
              "dead": f"mem-d-{suffix}"}  # fmt: skip
    create_topics(
        bootstrap,
        {topics["predictions"]: PARTITIONS, topics["metrics"]: PARTITIONS, topics["dead"]: 1},
    )
    port = free_port()
    log = open(log_dir / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*WORKER, "-b", bootstrap, "--predictions-topic", topics["predictions"],
         "--metrics-topic", topics["metrics"], "--dead-letter-topic", topics["dead"],
         "--app-id", f"mem-{suffix}", "--web-port", str(port), "--log-level", "WARNING"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: _ready(port), 120, "the worker to join")
        time.sleep(2.0)  # let start-up allocations settle before the idle reading
        rng = np.random.default_rng(0)
        ahead = int(time.time() * 1000) + 2 * WINDOW_MS
        start = ahead - ahead % WINDOW_MS
        messages = [
            (f"agent-{a}".encode(), value)
            for a in range(AGENTS)
            for value in _batches(f"agent-{a}", BATCHES_PER_AGENT, start, rng)
        ]
        expected_rows = AGENTS * BATCHES_PER_AGENT * ROWS
        with _RssSampler(worker.pid) as sampler:
            idle_mb = sampler.current_mb()
            produce_all(bootstrap, topics["predictions"], messages)
            wait_for(
                lambda: _metrics(port).get("mlwatcher_worker_rows_total", 0) >= expected_rows,
                300,
                "the worker to apply every batch",
            )
            time.sleep(0.5)
            open_windows = _metrics(port).get("mlwatcher_worker_open_windows", 0)
            holding_mb = sampler.current_mb()
            peak_mb = sampler.peak / 2**20
            hot = _batches("hot-agent", BATCHES_PER_AGENT * HOT_FACTOR, start, rng)
            produce_all(bootstrap, topics["predictions"], [(b"hot-agent", v) for v in hot])
            expected_rows += len(hot) * ROWS
            wait_for(
                lambda: _metrics(port).get("mlwatcher_worker_rows_total", 0) >= expected_rows,
                300,
                "the worker to apply the hot agent's batches",
            )
            time.sleep(0.5)
            after_hot_mb = sampler.current_mb()
            peak_hot_mb = sampler.peak / 2**20
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    return {
        "agents": AGENTS,
        "open_windows": open_windows,
        "rss_idle_mb": idle_mb,
        "rss_1000_agents_mb": holding_mb,
        "peak_rss_1000_agents_mb": peak_mb,
        "per_agent_kb": (holding_mb - idle_mb) * 1024 / AGENTS,
        "hot_agent_rows": len(hot) * ROWS,
        "rss_before_hot_mb": holding_mb,
        "rss_after_hot_mb": after_hot_mb,
        "peak_rss_with_hot_mb": peak_hot_mb,
    }


def run() -> dict[str, float]:
    with local_kafka() as bootstrap, tempfile.TemporaryDirectory() as log_dir:
        return _measure(bootstrap, Path(log_dir))


if __name__ == "__main__":
    figures = run()
    print_table(
        "Worker memory (RSS, psutil)",
        [(k, f"{v:.1f}" if isinstance(v, float) else str(v)) for k, v in figures.items()],
        ("figure", "value"),
    )
