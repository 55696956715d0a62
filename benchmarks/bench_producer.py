"""Cost of ``collect_data`` and produce→consume throughput on a local Apache Kafka."""

from __future__ import annotations

import time
import uuid

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks._common import local_kafka, median, percentile, print_table, time_calls
from mlwatcher.kafka_admin import create_topics
from mlwatcher.producer import MonitoringAgent

ROWS, CLASSES, FEATURES = 1000, 10, 20


def _collect_cost(agent: MonitoringAgent, proba: np.ndarray, features: np.ndarray | None) -> dict:
    samples = time_calls(lambda: agent.collect_data(proba, features), repeat=1000)
    agent.flush(60)
    return {"median_us": median(samples) * 1e6, "p99_us": percentile(samples, 99) * 1e6}


def _throughput(bootstrap: str, topic: str, proba: np.ndarray, batches: int) -> dict:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    # Assigning partitions directly keeps a consumer-group join out of the measurement.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    agent = MonitoringAgent(
        n_classes=CLASSES,
        agent_id="bench",
        bootstrap_servers=bootstrap,
        topic=topic,
        queue_full_policy="block",
        queue_full_timeout=30,
    )
    start = time.perf_counter()
    for _ in range(batches):
        agent.collect_data(proba)
    produced_at = time.perf_counter()
    agent.flush(120)
    flushed_at = time.perf_counter()
    rows = 0
    deadline = time.monotonic() + 120
    while rows < batches * ROWS and time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=1.0):
            if message.error() is None:
                rows += ROWS
    consumed_at = time.perf_counter()
    consumer.close()
    agent.close()
    return {
        "collect_rows_per_s": batches * ROWS / (produced_at - start),
        "acked_rows_per_s": batches * ROWS / (flushed_at - start),
        "end_to_end_rows_per_s": rows / (consumed_at - start),
        "rows_consumed": rows,
    }


def run() -> dict[str, float]:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(CLASSES), size=ROWS)
    features = rng.normal(size=(ROWS, FEATURES))
    results: dict[str, float] = {}
    with local_kafka() as bootstrap:
        cost_topic, flow_topic = (
            f"bench-cost-{uuid.uuid4().hex[:6]}",
            f"bench-flow-{uuid.uuid4().hex[:6]}",
        )
        create_topics(bootstrap, {cost_topic: 6, flow_topic: 6})
        with MonitoringAgent(
            n_classes=CLASSES,
            agent_id="bench",
            bootstrap_servers=bootstrap,
            topic=cost_topic,
            queue_full_policy="block",
        ) as agent:
            for label, feats in (("proba", None), ("proba_features", features)):
                for key, value in _collect_cost(agent, proba, feats).items():
                    results[f"collect_{label}_{key}"] = value
        results.update(_throughput(bootstrap, flow_topic, proba, batches=3000))
    return results


def main() -> None:
    r = run()
    print_table(
        f"collect_data cost, {ROWS}x{CLASSES} probabilities (1000 calls, real broker)",
        [
            (
                "probabilities only",
                f"{r['collect_proba_median_us']:.0f}",
                f"{r['collect_proba_p99_us']:.0f}",
            ),
            (
                f"+ {ROWS}x{FEATURES} features",
                f"{r['collect_proba_features_median_us']:.0f}",
                f"{r['collect_proba_features_p99_us']:.0f}",
            ),
        ],
        ("batch", "median µs", "p99 µs"),
    )
    print_table(
        "Produce → consume, 3000 batches of 1000x10 (one producer process, one consumer)",
        [
            ("collect_data (queued)", f"{r['collect_rows_per_s']:,.0f}"),
            ("acknowledged by broker (acks=all)", f"{r['acked_rows_per_s']:,.0f}"),
            ("consumed end to end", f"{r['end_to_end_rows_per_s']:,.0f}"),
        ],
        ("stage", "rows/s"),
    )
    print("targets: median ≤ 100 µs for 1000x10; ≥ 1,000,000 rows/s produced")


if __name__ == "__main__":
    main()
