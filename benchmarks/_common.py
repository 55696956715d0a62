"""Helpers shared by the benchmarks: a broker to run against, timing, and table printing."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from confluent_kafka import Producer


@contextlib.contextmanager
def local_kafka() -> Iterator[str]:
    """``MLWATCHER_BOOTSTRAP_SERVERS`` if set, else a local Apache Kafka node for the run."""
    external = os.environ.get("MLWATCHER_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from mlwatcher.brokers import ApacheKafkaBroker

    with ApacheKafkaBroker() as broker:
        yield broker.bootstrap_servers


def wait_for(condition: Callable[[], object], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``condition`` until it is true; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        time.sleep(step)


def produce_all(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    compression: str = "lz4",
) -> None:
    """Produce ``(key, value)`` messages as fast as the local queue takes them, then flush."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "compression.type": compression,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:  # local queue full: let librdkafka deliver some first
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"benchmark: messages for {topic} were not delivered")


def time_calls(call: Callable[[], object], repeat: int, warmup: int = 20) -> list[float]:
    """Seconds per call, one sample per call."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def print_table(title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
