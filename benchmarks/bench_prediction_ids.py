"""Cost of prediction ids: hashing them (vectorised numpy vs a per-row Python loop, same run),
and what ids add to ``collect_data`` and cost in ``collect_labels`` on a local Apache Kafka.

Baselines, measured on the same ids in the same process:

* ``python_fnv_loop``: the spec written row by row and byte by byte in Python (what a simple
  port does; it gives the same hashes, checked here);
* ``python_blake2b_loop``: one ``hashlib.blake2b(digest_size=8)`` call per id, i.e. the fastest
  per-row hashing the standard library offers (C code per id, a Python step per row; different
  hashes, so only its speed is comparable).

The ``collect_*`` figures reuse the same ids in every call: the producer does not check ids
across calls (the worker does), so this measures the cost of the call, nothing else.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np

from benchmarks._common import local_kafka, median, print_table, time_calls
from mlwatcher.kafka_admin import create_topics
from mlwatcher.prediction_ids import hash_prediction_ids
from mlwatcher.producer import MonitoringAgent

MASK = (1 << 64) - 1
ROWS, CLASSES = 1000, 10
BULK = 100_000


def python_fnv_loop(ids: list) -> list[int]:
    hashes = []
    for identifier in ids:
        text = identifier if isinstance(identifier, str) else str(int(identifier))
        h = 0xCBF29CE484222325
        for byte in text.encode():
            h = ((h ^ byte) * 0x100000001B3) & MASK
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & MASK
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & MASK
        hashes.append(h ^ (h >> 31))
    return hashes


def python_blake2b_loop(ids: list) -> list[int]:
    return [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
        for i in ids
    ]


def _id_sets() -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "uuid_str": [str(uuid.UUID(int=int(v))) for v in rng.integers(0, 2**63, BULK)],
        "int64_array": _unique_ints(rng, BULK),
        "short_str_1k": [f"order-{i}" for i in range(ROWS)],
        "int64_array_1k": _unique_ints(rng, ROWS),
    }


def _unique_ints(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.unique(rng.integers(0, 10**12, size=2 * n))[:n][rng.permutation(n)]


def _hashing(results: dict[str, float]) -> None:
    for name, ids in _id_sets().items():
        n = len(ids)
        as_list = ids.tolist() if isinstance(ids, np.ndarray) else ids
        assert hash_prediction_ids(ids).tolist() == python_fnv_loop(as_list), name
        repeat = 15 if n >= BULK else 300
        vectorised = median(time_calls(lambda ids=ids: hash_prediction_ids(ids), repeat, 3))
        loop = median(time_calls(lambda ids=as_list: python_fnv_loop(ids), 3, 1))
        blake = median(time_calls(lambda ids=as_list: python_blake2b_loop(ids), repeat, 3))
        results[f"{name}_ids_per_s"] = n / vectorised
        results[f"{name}_python_fnv_loop_ids_per_s"] = n / loop
        results[f"{name}_python_blake2b_loop_ids_per_s"] = n / blake


def _producer(results: dict[str, float]) -> None:
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(CLASSES), size=ROWS)
    str_ids = [f"order-{i}" for i in range(ROWS)]
    int_ids = np.arange(10**9, 10**9 + ROWS)
    labels = rng.integers(0, CLASSES, ROWS)
    with local_kafka() as bootstrap:
        topic = f"bench-ids-{uuid.uuid4().hex[:6]}"
        create_topics(bootstrap, {topic: 6})
        with MonitoringAgent(
            n_classes=CLASSES,
            agent_id="bench",
            bootstrap_servers=bootstrap,
            topic=topic,
            queue_full_policy="block",
        ) as agent:
            calls = {
                "collect_data": lambda: agent.collect_data(proba),
                "collect_data_str_ids": lambda: agent.collect_data(proba, prediction_ids=str_ids),
                "collect_data_int_ids": lambda: agent.collect_data(proba, prediction_ids=int_ids),
                "collect_labels_str_ids": lambda: agent.collect_labels(str_ids, labels),
                "collect_labels_int_ids": lambda: agent.collect_labels(int_ids, labels),
            }
            for name, call in calls.items():
                results[f"{name}_median_us"] = median(time_calls(call, 1000)) * 1e6
                agent.flush(60)
            assert agent.stats()["delivery_failures"] == 0


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    _hashing(results)
    _producer(results)
    return results


def main() -> None:
    r = run()
    print_table(
        "hash_prediction_ids (median; baselines in the same run)",
        [
            (
                name,
                f"{r[f'{name}_ids_per_s']:,.0f}",
                f"{r[f'{name}_python_fnv_loop_ids_per_s']:,.0f}",
                f"{r[f'{name}_python_blake2b_loop_ids_per_s']:,.0f}",
                f"{r[f'{name}_ids_per_s'] / r[f'{name}_python_fnv_loop_ids_per_s']:.0f}x",
            )
            for name in ("uuid_str", "int64_array", "short_str_1k", "int64_array_1k")
        ],
        ("ids", "numpy ids/s", "Python FNV loop", "Python blake2b loop", "vs FNV loop"),
    )
    print_table(
        f"{ROWS}x{CLASSES} batch / {ROWS} labels, median of 1000 calls (real broker)",
        [
            (name, f"{r[f'{name}_median_us']:.0f}")
            for name in (
                "collect_data",
                "collect_data_str_ids",
                "collect_data_int_ids",
                "collect_labels_str_ids",
                "collect_labels_int_ids",
            )
        ],
        ("call", "median µs"),
    )


if __name__ == "__main__":
    main()
