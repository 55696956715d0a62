"""The local brokers and the topic helpers, exercised with real Kafka clients."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from mlwatcher.brokers import (
    ApacheKafkaBroker,
    BrokerError,
    KafkaJarFetchError,
    TansuBroker,
    ensure_kafka_jars,
    free_port,
    local_broker,
)
from mlwatcher.kafka_admin import (
    BrokerUnavailableError,
    create_topics,
    delete_topics,
    topic_partition_counts,
    wait_for_broker,
)

Message = tuple[int, bytes, bytes]  # (partition, key, value)


def _produce(bootstrap: str, topic: str, count: int, partitions: int) -> list[Message]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    sent: list[Message] = []
    for index in range(count):
        key = f"k{index}".encode()
        # Distinct, non-trivial payloads so a mix-up or truncation cannot go unnoticed.
        value = bytes([index % 256]) * (index % 50) + uuid.uuid4().bytes
        partition = index % partitions
        producer.produce(topic, value=value, key=key, partition=partition)
        sent.append((partition, key, value))
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    return sent


def _consume(
    bootstrap: str, topic: str, expected: int, *, timeout: float = 60.0, session_ms: int = 6000
) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": session_ms,
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            received.append((message.partition(), message.key(), message.value()))
    finally:
        consumer.close()
    return received


def _assert_same_per_partition(sent: list[Message], received: list[Message]) -> None:
    assert len(received) == len(sent)
    for partition in {p for p, _, _ in sent}:
        assert [m for m in received if m[0] == partition] == [m for m in sent if m[0] == partition]


def test_round_trip_with_confluent_kafka(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(3, "roundtrip")
    sent = _produce(kafka_bootstrap, topic, 300, partitions=3)
    _assert_same_per_partition(sent, _consume(kafka_bootstrap, topic, len(sent)))


def test_round_trip_on_tansu(tansu_broker: TansuBroker) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    create_topics(bootstrap, {"roundtrip": 2})
    sent = _produce(bootstrap, "roundtrip", 100, partitions=2)
    _assert_same_per_partition(sent, _consume(bootstrap, "roundtrip", len(sent)))


def test_topics_get_exactly_the_requested_partitions(kafka_bootstrap: str) -> None:
    names = {f"parts-{n}-{uuid.uuid4().hex[:8]}": n for n in (1, 4, 7)}
    create_topics(kafka_bootstrap, names)
    try:
        counts = topic_partition_counts(kafka_bootstrap)
        assert {name: counts.get(name) for name in names} == names
        # Idempotent: creating again (even asking for another count) keeps the topic as is.
        create_topics(kafka_bootstrap, dict.fromkeys(names, 2))
        counts = topic_partition_counts(kafka_bootstrap)
        assert {name: counts.get(name) for name in names} == names
    finally:
        delete_topics(kafka_bootstrap, names)
    assert not set(names) & set(topic_partition_counts(kafka_bootstrap))


def test_unique_topics_fixture_creates_distinct_topics(
    kafka_bootstrap: str, unique_topics: Callable[..., dict[str, str]]
) -> None:
    names = unique_topics({"predictions": 3, "metrics": 1})
    assert names["predictions"].startswith("predictions-")
    assert names["predictions"] != names["metrics"]
    counts = topic_partition_counts(kafka_bootstrap)
    assert counts[names["predictions"]] == 3
    assert counts[names["metrics"]] == 1


@pytest.mark.parametrize(
    ("topics", "complaint"),
    [({"t": 0}, "partition count for topic 't'"), ({"": 1}, "topic names")],
)
def test_bad_topic_requests_are_refused(
    topics: dict[str, int], complaint: str, kafka_bootstrap: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        create_topics(kafka_bootstrap, topics)


def test_no_auto_created_topics(kafka_broker_kind: str, kafka_bootstrap: str) -> None:
    if kafka_broker_kind != "apache-kafka":
        pytest.skip("auto-create is configured off only on the suite's Apache Kafka node")
    topic = f"never-created-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 2000})
    producer.produce(topic, b"x")
    producer.flush(10)
    assert topic not in topic_partition_counts(kafka_bootstrap)


def test_wait_for_broker_gives_up_on_a_dead_port() -> None:
    port = free_port()
    began = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        wait_for_broker(f"127.0.0.1:{port}", timeout=1.5)
    assert time.monotonic() - began < 6.0


def test_restart_with_persistent_log_dir_keeps_messages(
    fresh_kafka_broker: Callable[..., ApacheKafkaBroker],
) -> None:
    broker = fresh_kafka_broker(persistent=True)
    bootstrap = broker.bootstrap_servers
    create_topics(bootstrap, {"durable": 2})
    sent = _produce(bootstrap, "durable", 200, partitions=2)

    broker.restart()  # graceful
    assert broker.bootstrap_servers == bootstrap
    _assert_same_per_partition(sent, _consume(bootstrap, "durable", len(sent)))

    broker.kill()  # a crash: SIGKILL, then recovery from the same log dir
    assert not broker.is_running()
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker(bootstrap, timeout=1.0)
    # A producer that keeps going while the broker is down delivers once it is back.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 0})
    queued = [(i % 2, f"late{i}".encode(), f"while-down-{i}".encode()) for i in range(50)]
    for partition, key, value in queued:
        producer.produce("durable", value=value, key=key, partition=partition)
    assert producer.flush(0.5) == len(queued), "nothing can be delivered while down"
    broker.start()
    assert producer.flush(30) == 0
    _assert_same_per_partition(sent + queued, _consume(bootstrap, "durable", len(sent) + 50))


def test_a_second_broker_object_reopens_a_persistent_log_dir(
    fresh_kafka_broker: Callable[..., ApacheKafkaBroker], tmp_path_factory: pytest.TempPathFactory
) -> None:
    log_dir = tmp_path_factory.mktemp("shared-log-dir")
    first = fresh_kafka_broker(log_dir=log_dir)
    create_topics(first.bootstrap_servers, {"kept": 1})
    sent = _produce(first.bootstrap_servers, "kept", 20, partitions=1)
    first.close()
    assert log_dir.is_dir(), "a given log dir must survive close()"

    second = fresh_kafka_broker(log_dir=log_dir)
    _assert_same_per_partition(sent, _consume(second.bootstrap_servers, "kept", len(sent)))


def test_startup_failure_names_the_cause(
    fresh_kafka_broker: Callable[..., ApacheKafkaBroker],
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = squatter.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(BrokerError, match=r"(?s)exited with code.*Address already in use"):
            fresh_kafka_broker(persistent=False, port=taken_port)
    assert time.monotonic() - began < 30, "a broker that cannot bind must fail fast"


def test_bad_setting_is_reported_before_startup(
    fresh_kafka_broker: Callable[..., ApacheKafkaBroker],
) -> None:
    with pytest.raises(BrokerError, match=r"num\.network\.threads: Not a number"):
        fresh_kafka_broker(persistent=False, extra_settings={"num.network.threads": "many"})


def test_tansu_restart_comes_back_on_the_same_port_empty(tansu_broker: TansuBroker) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    create_topics(bootstrap, {"lost": 1})
    tansu_broker.restart()
    assert tansu_broker.bootstrap_servers == bootstrap
    wait_for_broker(bootstrap, timeout=5)
    assert "lost" not in topic_partition_counts(bootstrap)  # memory storage


def test_closed_broker_cannot_start_again() -> None:
    broker = TansuBroker()
    broker.close()
    with pytest.raises(BrokerError, match="closed"):
        broker.start()


def test_unfetchable_kafka_version_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLWATCHER_CACHE_DIR", str(tmp_path))
    with pytest.raises(KafkaJarFetchError, match=r"kafka_2\.13:0\.0\.1-no-such-version"):
        ensure_kafka_jars("0.0.1-no-such-version")
    assert not list(tmp_path.rglob(".complete"))


def test_aiokafka_produces_and_consumes_with_a_group(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """Faust talks to Kafka through aiokafka: check it works against this broker."""
    topic = topic_factory(2, "aiokafka")
    values = [f"value-{i}".encode() for i in range(50)]

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for index, value in enumerate(values):
                await producer.send_and_wait(topic, value, partition=index % 2)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"aio-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        received: list[bytes] = []
        try:
            async with asyncio.timeout(60):
                async for message in consumer:
                    received.append(message.value)
                    if len(received) == len(values):
                        break
            await consumer.commit()
            committed = {
                partition: await consumer.committed(partition)
                for partition in consumer.assignment()
            }
        finally:
            await consumer.stop()
        assert sorted(committed.values()) == [25, 25]
        return received

    assert sorted(asyncio.run(scenario())) == sorted(values)


def test_concurrent_fetches_share_one_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLWATCHER_CACHE_DIR", str(tmp_path))
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda _: ensure_kafka_jars(), range(3)))
    except KafkaJarFetchError as error:
        pytest.skip(f"Maven cannot fetch here: {error}")
    assert len(set(results)) == 1
    libs = results[0]
    assert (libs / ".complete").is_file()
    assert any(libs.glob("kafka_2.13-*.jar"))
    assert any(libs.glob("log4j-slf4j2-impl-*.jar"))
    # Only the final directory remains: no half-filled staging directories left behind.
    assert sorted(p.name for p in libs.parent.iterdir() if p.is_dir()) == ["libs"]


def test_broker_dies_with_its_parent_process() -> None:
    """A parent that crashes (SIGKILL, no cleanup) must not leave an orphan broker."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from mlwatcher.brokers import TansuBroker;"
            "broker = TansuBroker().start();"
            "print(broker.pid, broker.work_dir, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid_text, work_dir = parent.stdout.readline().split()
        broker_pid = int(pid_text)
        assert psutil.pid_exists(broker_pid)
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 10
    while _process_alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_alive(broker_pid), f"broker pid {broker_pid} outlived its parent"
    shutil.rmtree(work_dir)  # the killed parent had no chance to clean up


def _process_alive(pid: int) -> bool:
    try:
        # An orphan that was killed but not yet reaped by init is a zombie: dead.
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_local_broker_choice() -> None:
    assert isinstance(local_broker("tansu"), TansuBroker)
    assert isinstance(local_broker("apache-kafka"), ApacheKafkaBroker)
    with pytest.raises(ValueError, match="broker choice must be"):
        local_broker("zookeeper")  # type: ignore[arg-type]
