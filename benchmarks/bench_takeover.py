"""Takeover benchmark: kill -9 stream workers at random moments and check every window.

    python -m benchmarks.bench_takeover [--rounds 50] [--seed 1] [--keep-logs DIR]

Each round runs 2–3 ``mlwatcher worker`` processes in one group on a 4-partition predictions
topic while 8 agents send live traffic, and kills workers with SIGKILL in one of three ways:

- ``traffic``: one worker, at a random moment while batches flow;
- ``recovery``: one worker, then a survivor as soon as its ``/metrics`` shows it in the
  takeover (its partitions revoked for the rebalance, or the victim's just read back): a kill
  during the survivor's own recovery;
- ``double``: two workers within 1.5 s of each other.

A supervisor restarts every killed worker after 0–3 s, as ``restart: always`` would. Every
window of every agent is then checked against what was sent: ``rows_seen``, ``batches`` and
each class's ``prediction_count``. A round is *exact* when all match and every re-emitted
record is byte-identical. The takeover time is the time from the (last) kill until the group
has committed every partition past the offset its end had at the kill; a takeover that has
not finished after 60 s is a *stall*. Not part of the CI test run (≈ 40 s a round).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from confluent_kafka import Consumer, TopicPartition

from benchmarks._common import local_kafka, print_table, wait_for
from mlwatcher.brokers import free_port
from mlwatcher.kafka_admin import create_topics, delete_topics, topic_partition_counts
from mlwatcher.producer.agent import MonitoringAgent
from mlwatcher.schemas import MetricRecord
from mlwatcher.stream_app.observability import parse_prometheus

WORKER = [sys.executable, "-m", "mlwatcher", "worker"]
PARTITIONS = 4
AGENTS = 8
WINDOW_MS = 10_000
CLASSES = 3
TRAFFIC_S = 22.0
STEP_S = 0.1
TAKEOVER_LIMIT_S = 60.0
MODES = ("traffic", "recovery", "double")


class Worker:
    def __init__(self, bootstrap: str, topics: dict[str, str], app_id: str, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"worker-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [*WORKER, "-b", bootstrap, "--predictions-topic", topics["predictions"],
             "--metrics-topic", topics["metrics"], "--dead-letter-topic", topics["dead"],
             "--app-id", app_id, "--web-port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process.poll() is None

    def metrics(self) -> dict[str, float]:
        try:
            text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=1).text
        except requests.RequestException:
            return {}
        return parse_prometheus(text)

    def owned(self) -> int:
        return int(self.metrics().get("mlwatcher_worker_assigned_partitions", 0))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Sent:
    rows: Counter[tuple[str, int]] = field(default_factory=Counter)
    batches: Counter[tuple[str, int]] = field(default_factory=Counter)
    predicted: dict[tuple[str, int], Counter[int]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    undelivered: int = 0


def traffic(bootstrap: str, topic: str, start_ms: int, stop: threading.Event, seed: int) -> Sent:
    """8 agents, one batch each per step; event time runs with the wall clock from start_ms."""
    rng = np.random.default_rng(seed)
    sent = Sent()
    clock = {"ms": start_ms}
    agents = [
        MonitoringAgent(
            frequency=WINDOW_MS / 60_000,
            max_buffer_size=40,
            n_classes=CLASSES,
            agent_id=f"agent-{i}",
            bootstrap_servers=bootstrap,
            topic=topic,
            clock=lambda: clock["ms"] / 1000,
        )
        for i in range(AGENTS)
    ]
    began = time.monotonic()
    while not stop.is_set():
        clock["ms"] = start_ms + int((time.monotonic() - began) * 1000)
        window = clock["ms"] - clock["ms"] % WINDOW_MS
        for agent in agents:
            rows = int(rng.integers(1, 40))
            proba = rng.dirichlet(np.ones(CLASSES), size=rows).astype(np.float32)
            agent.collect_data(proba, rng.normal(size=(rows, 2)))
            key = (agent.agent_id, window)
            sent.rows[key] += rows
            sent.batches[key] += 1
            sent.predicted[key].update(np.argmax(proba, axis=1).tolist())
        time.sleep(STEP_S)
    # One last batch per agent far ahead closes every window sent so far (it is not checked).
    clock["ms"] = start_ms + 100 * WINDOW_MS
    for agent in agents:
        agent.collect_data(rng.dirichlet(np.ones(CLASSES), size=1).astype(np.float32))
    for agent in agents:
        agent.close(60)
        stats = agent.stats()
        sent.undelivered += (
            stats["delivery_failures"] + stats["dropped_queue_full"] + stats["queued"]
        )
    return sent


def committed_past(bootstrap: str, app_id: str, topic: str, targets: dict[int, int]) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in targets], timeout=5)
    finally:
        consumer.close()
    return all(tp.offset >= targets[tp.partition] for tp in offsets)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-takeover-ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def read_records(bootstrap: str, topic: str) -> list[tuple[MetricRecord, bytes]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-takeover-reader",
         "enable.auto.commit": False}
    )  # fmt: skip
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(PARTITIONS)}  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS) if ends[p] > 0])
    remaining = {p for p in range(PARTITIONS) if ends[p] > 0}
    out = []
    deadline = time.monotonic() + 30
    while remaining and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            if message.error() is None:
                out.append((MetricRecord.decode(message.value()), message.value()))
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.discard(message.partition())
    consumer.close()
    return out


@dataclass
class RoundResult:
    mode: str
    workers: int
    exact: bool
    rows_lost: int
    rows_extra: int
    windows_wrong: int
    stall: bool
    takeover_s: float | None
    watchdog_stalls: int
    detail: str = ""


@contextlib.contextmanager
def supervised(
    bootstrap: str, topics: dict[str, str], app_id: str, log_dir: Path, n: int, seed: int
) -> Iterator[tuple[list[Worker], Any]]:
    """n workers; ``kill(i)`` SIGKILLs worker i and restarts it after 0–3 s."""
    rng = np.random.default_rng(seed)
    workers = [Worker(bootstrap, topics, app_id, log_dir) for _ in range(n)]
    restarts: list[threading.Timer] = []

    def kill(i: int) -> None:
        workers[i].kill()

        def restart() -> None:
            workers[i] = Worker(bootstrap, topics, app_id, log_dir)

        timer = threading.Timer(float(rng.uniform(0, 3)), restart)
        restarts.append(timer)
        timer.start()

    try:
        yield workers, kill
    finally:
        for timer in restarts:
            timer.join()
        for worker in workers:
            worker.stop()


def run_round(bootstrap: str, index: int, rng: np.random.Generator, log_root: Path) -> RoundResult:
    mode = MODES[index % len(MODES)]
    n_workers = int(rng.integers(2, 4))
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "predictions": f"takeover-pred-{suffix}",
        "metrics": f"takeover-metrics-{suffix}",
        "dead": f"takeover-dead-{suffix}",
    }
    create_topics(
        bootstrap, {topics["predictions"]: PARTITIONS, topics["metrics"]: PARTITIONS,
                    topics["dead"]: 1}
    )  # fmt: skip
    app_id = f"takeover-{suffix}"
    log_dir = log_root / f"round-{index:02d}-{mode}"
    log_dir.mkdir(parents=True)
    ahead = int(time.time() * 1000) + 300_000
    start_ms = ahead - ahead % WINDOW_MS
    stop = threading.Event()
    takeover_s: float | None = None
    stall = False
    with supervised(bootstrap, topics, app_id, log_dir, n_workers, index) as (workers, kill):
        try:
            wait_for(lambda: sum(w.owned() for w in workers) == PARTITIONS
                     and all(w.owned() for w in workers), 120, "a settled group")  # fmt: skip
        except TimeoutError:  # a failed round, not a failed run: the next rounds still count
            owned = [w.owned() for w in workers]
            return RoundResult(mode, n_workers, False, 0, 0, 0, True, None, 0,
                               f"group never settled: partitions owned {owned}")  # fmt: skip
        result: dict[str, Sent] = {}
        sender = threading.Thread(
            target=lambda: result.setdefault(
                "sent", traffic(bootstrap, topics["predictions"], start_ms, stop, index)
            )
        )
        sender.start()
        time.sleep(float(rng.uniform(1.0, 8.0)))
        victim = int(rng.integers(n_workers))
        kill(victim)
        if mode == "recovery":
            # The survivor's takeover: its partitions are revoked for the rebalance (0 owned),
            # or it has just read the victim's partitions back. Kill it right then.
            others = [i for i in range(n_workers) if i != victim]
            before = {i: workers[i].metrics().get("mlwatcher_worker_recoveries_total", 0)
                      for i in others}  # fmt: skip
            deadline = time.monotonic() + 30
            second = None
            while second is None and time.monotonic() < deadline:
                for i in others:
                    now = workers[i].metrics()
                    if now and (
                        now.get("mlwatcher_worker_assigned_partitions", 1) == 0
                        or now.get("mlwatcher_worker_recoveries_total", 0) > before[i]
                    ):
                        second = i
                        break
                time.sleep(0.01)
            kill(second if second is not None else others[0])
        elif mode == "double":
            time.sleep(float(rng.uniform(0, 1.5)))
            kill(int((victim + 1 + rng.integers(n_workers - 1)) % n_workers))
        killed_at = time.monotonic()
        targets = end_offsets(bootstrap, topics["predictions"])
        try:
            wait_for(
                lambda: committed_past(bootstrap, app_id, topics["predictions"], targets),
                TAKEOVER_LIMIT_S,
                "the takeover",
                step=0.25,
            )
            takeover_s = time.monotonic() - killed_at
        except TimeoutError:
            stall = True
        remaining = TRAFFIC_S - (time.monotonic() - killed_at)
        if remaining > 0:
            time.sleep(remaining)
        stop.set()
        sender.join()
        sent = result["sent"]
        expected = set(sent.rows)

        def complete() -> bool:
            got = {(r.agent_id, r.window_start_ms) for r, _ in
                   read_records(bootstrap, topics["metrics"])}  # fmt: skip
            return expected <= got

        try:
            wait_for(complete, 90, "a record of every window", step=1.0)
        except TimeoutError:
            stall = True
        records = read_records(bootstrap, topics["metrics"])
    watchdog_stalls = sum(p.read_text(errors="replace").count("STALLED:")
                          for p in log_dir.glob("*.log"))  # fmt: skip
    by_window: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    decoded: dict[tuple[str, int], MetricRecord] = {}
    for record, raw in records:
        key = (record.agent_id, record.window_start_ms)
        by_window[key].add(raw)
        decoded[key] = record
    lost = extra = wrong = 0
    problems = []
    for key in sorted(expected):
        record = decoded.get(key)
        if record is None:
            lost += sent.rows[key]
            wrong += 1
            problems.append(f"{key}: no record")
            continue
        if len(by_window[key]) > 1:
            wrong += 1
            problems.append(f"{key}: {len(by_window[key])} different records")
        counts = {
            int(p.class_name.split("_")[1]): p.value
            for p in record.points
            if p.what == "prediction_count"
        }
        predicted = {c: float(sent.predicted[key][c]) for c in range(CLASSES)}
        if (record.rows_seen, record.batches) != (sent.rows[key], sent.batches[key]) or (
            counts != predicted
        ):
            wrong += 1
            lost += max(0, sent.rows[key] - record.rows_seen)
            extra += max(0, record.rows_seen - sent.rows[key])
            problems.append(
                f"{key}: rows_seen {record.rows_seen} (sent {sent.rows[key]}), batches "
                f"{record.batches} (sent {sent.batches[key]})"
            )
    with contextlib.suppress(Exception):
        names = [n for n in topic_partition_counts(bootstrap) if suffix in n]
        delete_topics(bootstrap, names, wait=False)
    exact = wrong == 0 and not stall and sent.undelivered == 0
    if exact:
        shutil.rmtree(log_dir, ignore_errors=True)
    return RoundResult(mode, n_workers, exact, lost, extra, wrong, stall, takeover_s,
                       watchdog_stalls, "; ".join(problems[:5]))  # fmt: skip


def run(rounds: int = 50, seed: int = 1, keep_logs: Path | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    log_root = keep_logs or Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    results: list[RoundResult] = []
    with local_kafka() as bootstrap:
        for index in range(rounds):
            r = run_round(bootstrap, index, rng, log_root)
            results.append(r)
            took = "-" if r.takeover_s is None else f"{r.takeover_s:.1f} s"
            print(
                f"round {index + 1:>2}/{rounds} {r.mode:<8} {r.workers} workers: "
                f"{'exact' if r.exact else 'NOT EXACT'}, takeover {took}"
                + (f", lost {r.rows_lost} rows" if r.rows_lost else "")
                + (", STALL" if r.stall else "")
                + (f" [{r.detail}]" if r.detail else ""),
                flush=True,
            )
    times = [r.takeover_s for r in results if r.takeover_s is not None]
    figures: dict[str, Any] = {
        "rounds": rounds,
        "rounds_exact": sum(r.exact for r in results),
        "rows_lost": sum(r.rows_lost for r in results),
        "rows_counted_twice": sum(r.rows_extra for r in results),
        "windows_wrong": sum(r.windows_wrong for r in results),
        "stalls": sum(r.stall for r in results),
        "watchdog_stall_reports": sum(r.watchdog_stalls for r in results),
        "takeover_s_median": statistics.median(times) if times else float("nan"),
        "takeover_s_max": max(times) if times else float("nan"),
        "logs_of_failed_rounds": str(log_root),
    }
    for mode in MODES:
        of_mode = [r for r in results if r.mode == mode]
        figures[f"rounds_exact_{mode}"] = f"{sum(r.exact for r in of_mode)}/{len(of_mode)}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", type=Path, default=None)
    args = parser.parse_args()
    figures = run(args.rounds, args.seed, args.keep_logs)
    print_table(
        "Takeover: kill -9 of stream workers at random moments (target: all exact, 0 lost, "
        "0 stalls, takeover <= 15 s)",
        [(k, f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in figures.items()],
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
