"""Helpers shared by test modules of several areas: waiting on conditions, producing to and
reading topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something true and return that; fail after
    ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def read_topic(
    bootstrap: str, topic: str, expected: int, *, timeout: float = 30.0, linger: float = 0.0
) -> list[Message]:
    """Messages of ``topic`` from its beginning (a fresh consumer group): until ``expected``
    have arrived or ``timeout`` passed, then ``linger`` seconds more to catch extra ones."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []

    def poll_until(stop: Callable[[], bool]) -> None:
        while not stop():
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)

    try:
        deadline = time.monotonic() + timeout
        poll_until(lambda: len(messages) >= expected or time.monotonic() >= deadline)
        end = time.monotonic() + linger
        poll_until(lambda: time.monotonic() >= end)
    finally:
        consumer.close()
    return messages


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offset on each partition of ``topic`` (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The end (high watermark) offset of each partition of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def ordered_producer(bootstrap: str, **config: Any) -> Producer:
    """A producer that keeps each partition in the order produced.

    Idempotence is what guarantees it: without it librdkafka keeps several batches in
    flight, and a batch retried (e.g. on NOT_LEADER of a topic created a moment ago) lands
    behind the batch sent after it.
    """
    return Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, **config}
    )
