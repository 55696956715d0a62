"""Several worker processes: shared partitions, kill -9 recovery, clean SIGTERM, faust -A."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from mlwatcher.brokers import free_port
from mlwatcher.producer.agent import MonitoringAgent
from tests.helpers import committed_offsets, end_offsets, wait_until
from tests.stream_app.conftest import TopicReader, WorkerProcess

WINDOW_MS = 30_000
GRACE_MS = 6_000  # default: 20% of 30 s
PARTITIONS = 4


def window_ahead() -> int:
    """A window far enough in the future that no worker's clock closes it during the test;
    it closes when a batch's event time passes its end + grace."""
    ahead = int(time.time() * 1000) + 120_000
    return ahead - ahead % WINDOW_MS


def send(
    kafka_bootstrap: str,
    topic: str,
    agent_ids: list[str],
    event_time_ms: int,
    batches: int,
    rows: int,
) -> None:
    rng = np.random.default_rng(event_time_ms % 1000 + batches)
    for agent_id in agent_ids:
        with MonitoringAgent(
            frequency=WINDOW_MS / 60_000,
            max_buffer_size=50,
            n_classes=3,
            agent_id=agent_id,
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            clock=lambda: event_time_ms / 1000,
        ) as agent:
            for _ in range(batches):
                agent.collect_data(rng.dirichlet([1, 1, 1], size=rows), rng.normal(size=(rows, 3)))


def total(workers: list[WorkerProcess], name: str) -> float:
    values = []
    for worker in workers:
        try:
            values.append(worker.metrics().get(name, 0.0))
        except requests.RequestException:
            values.append(0.0)
    return sum(values)


def test_two_workers_share_partitions_and_survive_kill_9(
    unique_topics: Callable[..., dict[str, str]],
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
) -> None:
    topics = unique_topics({"predictions": PARTITIONS, "metrics": PARTITIONS, "dead": 1})
    app_id = f"group-{uuid.uuid4().hex[:8]}"
    first = worker_factory(topics, app_id)
    second = worker_factory(topics, app_id)
    first.wait_ready(90)
    second.wait_ready(90)

    def shared() -> bool:
        a, b = first.health(), second.health()
        if not (a and b and a["assigned_partitions"] and b["assigned_partitions"]):
            return False
        return sorted(a["assigned_partitions"] + b["assigned_partitions"]) == list(
            range(PARTITIONS)
        )

    wait_until(shared, 60, "both workers to own partitions")
    agents = [f"agent-{i}" for i in range(8)]
    start = window_ahead()
    send(kafka_bootstrap, topics["predictions"], agents, start + 1_000, batches=3, rows=40)
    wait_until(
        lambda: total([first, second], "mlwatcher_worker_rows_total") >= 8 * 3 * 40,
        30,
        "both workers to apply the first half",
    )
    assert first.metrics()["mlwatcher_worker_rows_total"] > 0
    assert second.metrics()["mlwatcher_worker_rows_total"] > 0
    first.kill()  # kill -9 mid-window: its open windows live only in the changelog now
    send(kafka_bootstrap, topics["predictions"], agents, start + 2_000, batches=2, rows=40)
    # An event past end + grace closes the window (it belongs to the next window).
    send(kafka_bootstrap, topics["predictions"], agents, start + WINDOW_MS + GRACE_MS, 1, 5)
    reader = TopicReader(kafka_bootstrap, topics["metrics"], PARTITIONS)
    try:
        records = reader.wait_for(
            lambda _: (
                len({r.agent_id for r in reader.records()}) == len(agents) and reader.records()
            ),
            120,
            "a record for every agent after the takeover",
        )
        reader.poll(1.0)
        records = reader.records()
    finally:
        reader.close()
    assert second.health()["assigned_partitions"] == list(range(PARTITIONS))
    by_key: dict[str, list] = defaultdict(list)
    for record in records:
        by_key[record.window_id].append(record)
    assert {r.agent_id for r in records} == set(agents)
    for key, copies in by_key.items():
        # A record may be re-emitted after a crash, but only with identical content.
        assert all(c.encode() == copies[0].encode() for c in copies), key
        record = copies[0]
        assert record.window_start_ms == start
        assert record.rows_seen == 5 * 40, record.agent_id
        assert record.rows_sampled == 50
        assert record.batches == 5
    survivor = second.metrics()
    assert survivor["mlwatcher_worker_recoveries_total"] >= 1  # it read the changelog back
    assert survivor["mlwatcher_worker_stalls_total"] == 0  # and never looked stalled
    # and its commits pass every partition's end (a seek forward after the recovery left
    # Faust's acks a hole, and commits stopped)
    ends = end_offsets(kafka_bootstrap, topics["predictions"], PARTITIONS)
    wait_until(
        lambda: all(
            committed >= end
            for committed, end in zip(
                _committed(kafka_bootstrap, app_id, topics["predictions"]), ends, strict=True
            )
        ),
        30,
        "the survivor's commits to pass the partitions' ends",
    )


def _committed(bootstrap: str, app_id: str, topic: str, partitions: int = PARTITIONS) -> list[int]:
    """The group's committed offsets, 0 for a partition without a commit (right for one that
    never held a message)."""
    return [max(offset, 0) for offset in committed_offsets(bootstrap, app_id, topic, partitions)]


def test_a_worker_joining_a_settled_group_gets_partitions_and_work(
    unique_topics: Callable[..., dict[str, str]],
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
) -> None:
    """Faust's default standby replica made its sticky assignor keep 2 + 2 and give a third
    member nothing, until the next rebalance."""
    topics = unique_topics({"predictions": PARTITIONS, "metrics": PARTITIONS, "dead": 1})
    app_id = f"join-{uuid.uuid4().hex[:8]}"
    workers = [worker_factory(topics, app_id), worker_factory(topics, app_id)]
    for worker in workers:
        worker.wait_ready(90)

    def owned() -> list[list[int]]:
        out = []
        for worker in workers:
            health = worker.health()
            out.append(health["assigned_partitions"] if health else [])
        return out

    def settled() -> bool:
        now = owned()
        return all(now) and sorted(p for ps in now for p in ps) == list(range(PARTITIONS))

    wait_until(settled, 60, "two workers to share the partitions")
    assert sorted(len(ps) for ps in owned()) == [2, 2]
    workers.append(worker_factory(topics, app_id))
    workers[-1].wait_ready(90)
    wait_until(settled, 60, "the third worker to own a partition")
    assert sorted(len(ps) for ps in owned()) == [1, 1, 2]
    agents = [f"agent-{i}" for i in range(16)]
    send(kafka_bootstrap, topics["predictions"], agents, window_ahead() + 1_000, 2, 10)
    wait_until(
        lambda: total(workers, "mlwatcher_worker_rows_total") >= 16 * 2 * 10,
        30,
        "the three workers to apply every batch",
    )
    assert all(w.metrics()["mlwatcher_worker_rows_total"] > 0 for w in workers)


def test_sigterm_is_clean_and_commits_offsets(
    unique_topics: Callable[..., dict[str, str]],
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
) -> None:
    topics = unique_topics({"predictions": 2, "metrics": 2, "dead": 1})
    app_id = f"term-{uuid.uuid4().hex[:8]}"
    worker = worker_factory(topics, app_id)
    worker.wait_ready(90)
    send(kafka_bootstrap, topics["predictions"], ["a", "b", "c"], window_ahead(), 4, 20)
    wait_until(
        lambda: worker.metrics()["mlwatcher_worker_rows_total"] >= 3 * 4 * 20, 30, "rows applied"
    )
    wait_until(
        lambda: all(
            value == 0
            for name, value in worker.metrics().items()
            if name.startswith("mlwatcher_worker_consumer_lag")
        ),
        30,
        "no lag (control ticks included)",
    )
    assert worker.terminate(timeout=30) == 0
    log = worker.log()
    assert "Traceback" not in log and "CRITICAL" not in log, log[-3000:]
    # Everything processed is committed (ticks may follow the last batch; they are processed too).
    committed = _committed(kafka_bootstrap, app_id, topics["predictions"], 2)
    assert committed == end_offsets(kafka_bootstrap, topics["predictions"], 2)


def test_faust_command_line_runs_the_module_app(
    unique_topics: Callable[..., dict[str, str]], kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = unique_topics({"predictions": 2, "metrics": 2, "dead": 1})
    port = free_port()
    env = {
        **os.environ,
        "MLWATCHER_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MLWATCHER_PREDICTIONS_TOPIC": topics["predictions"],
        "MLWATCHER_METRICS_TOPIC": topics["metrics"],
        "MLWATCHER_DEAD_LETTER_TOPIC": topics["dead"],
        "MLWATCHER_APP_ID": f"faust-{uuid.uuid4().hex[:8]}",
        "MLWATCHER_WEB_PORT": str(port),
    }
    log_path = tmp_path / "faust.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faust",
                "-A",
                "mlwatcher.stream_app.app",
                "worker",
                "-l",
                "info",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except requests.RequestException:
                return False
            return response.status_code == 200 and response.json()["assigned_partitions"] == [0, 1]

        wait_until(healthy, 90, "the faust-launched worker", 0.2)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "mlwatcher_worker_window_close_delay_seconds_bucket" in metrics
    finally:
        process.terminate()
        process.wait(30)
