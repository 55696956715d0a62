"""The Faust application: consumer group, agent, timers and web pages around a Processor.

Faust does what it does well: the consumer group and partition assignment, the agent that
takes messages in batches, the timers and the web server. The window state is ours (see
:mod:`mlwatcher.stream_app.processor`): Faust's table and its recovery lost table writes
and stalled across takeovers (docs/stream_app.md, "Why the worker owns its state").

Every blocking step (computing a batch, writing and awaiting its effects, reading a changelog
back) runs in one state thread, so Faust's event loop keeps heart-beating meanwhile and the
steps are serialised in the order they were submitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition
from faust.types import TP
from threadpoolctl import threadpool_limits

from mlwatcher.kafka_admin import create_topics, topic_partition_counts
from mlwatcher.metrics import ReferenceProfile, warm_up
from mlwatcher.outage_log import OutageLog, SummarisingFilter, quiet_client_config
from mlwatcher.stream_app import web
from mlwatcher.stream_app.changelog import (
    changelog_end_offsets,
    changelog_topic_name,
    ensure_changelog_topic,
    read_partitions,
)
from mlwatcher.stream_app.kafka_security import broker_credentials
from mlwatcher.stream_app.observability import WorkerStats
from mlwatcher.stream_app.outputs import CONTROL_HEADER, TICK, KafkaOutputs
from mlwatcher.stream_app.processor import Incoming, Processor
from mlwatcher.stream_app.settings import WorkerSettings
from mlwatcher.stream_app.watchdog import StallDetector

log = logging.getLogger(__name__)

T = TypeVar("T")

#: messages handed to the state thread at once (and acked together once durable)
TAKE_MAX = 500
TAKE_WITHIN_S = 0.01
CONSUMER_MAX_FETCH_BYTES = 8_000_000
#: exit code of a worker that stayed stalled after the remedy (the supervisor restarts it)
EXIT_STALLED = 75
#: exit code of a worker whose state writes or recovery failed
EXIT_STATE_FAILED = 70


def is_tick(headers: Any) -> bool:
    if not headers:
        return False
    items = headers.items() if isinstance(headers, dict) else headers
    return any(name == CONTROL_HEADER and value == TICK for name, value in items)


def prepare_topics(settings: WorkerSettings) -> int:
    """Create the worker's topics if needed; return the predictions topic's partition count.

    The state topic must have as many partitions as the predictions topic, so an existing
    topic's count wins over ``settings.partitions``.
    """
    options = dict(settings.kafka_options)
    if settings.create_topics:
        create_topics(
            settings.bootstrap_servers,
            {
                settings.predictions_topic: settings.partitions,
                settings.metrics_topic: settings.partitions,
                settings.dead_letter_topic: 1,
            },
            client_config=options,
        )
    counts = topic_partition_counts(settings.bootstrap_servers, client_config=options)
    if settings.predictions_topic not in counts:
        raise RuntimeError(
            f"predictions topic {settings.predictions_topic!r} does not exist on "
            f"{settings.bootstrap_servers} (create it, or run without --no-create-topics)"
        )
    partitions = counts[settings.predictions_topic]
    ensure_changelog_topic(
        settings.bootstrap_servers,
        changelog_topic_name(settings.app_id),
        partitions,
        options,
    )
    return partitions


class OffsetWatcher:
    """End offsets and committed offsets of the predictions partitions, for lag and stalls.

    Its own client in its own thread: it must answer while the consumer or the state thread
    is the thing that is stuck.
    """

    def __init__(
        self, settings: WorkerSettings, client_config: Mapping[str, Any] | None = None
    ) -> None:
        self.topic = settings.predictions_topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": settings.app_id,  # only to read the group's committed offsets
                "enable.auto.commit": False,
                "log_level": 3,
                **settings.kafka_options,
                **(client_config or {}),
            }
        )

    def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        ends = {}
        for p in partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=2.0, cached=False
                )
            except KafkaException:
                continue
            ends[p] = int(high)
        return ends

    def committed(self, partitions: Collection[int]) -> dict[int, int]:
        if not partitions:
            return {}
        try:
            offsets = self._consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=2.0
            )
        except KafkaException:
            return {}
        return {tp.partition: tp.offset for tp in offsets if tp.offset >= 0}

    def close(self) -> None:
        self._consumer.close()


class WorkerRuntime:
    """Per-process parts around the Faust app; ``app.mlwatcher`` is one."""

    def __init__(self, settings: WorkerSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.stats = WorkerStats()
        self.changelog_topic = changelog_topic_name(settings.app_id)
        options = dict(settings.kafka_options)
        # While Kafka is down: one line per interval instead of a flood, errors counted.
        self.outage = OutageLog(f"worker: Kafka ({settings.bootstrap_servers})", log)
        _summarise_client_logs(self.outage)
        quiet = quiet_client_config(self.outage)
        self.outputs = KafkaOutputs(
            settings.bootstrap_servers,
            changelog_topic=self.changelog_topic,
            metrics_topic=settings.metrics_topic,
            dead_letter_topic=settings.dead_letter_topic,
            predictions_topic=settings.predictions_topic,
            kafka_options={**options, **quiet},
            client_id=f"{settings.app_id}-{os.getpid()}",
        )
        self.watcher = OffsetWatcher(settings, quiet)
        self.processor = Processor(
            self.outputs,
            lambda wanted: read_partitions(
                settings.bootstrap_servers, self.changelog_topic, wanted, options
            ),
            self._changelog_ends,
            policy=settings.policy,
            baselines={
                agent: ReferenceProfile.load(path) for agent, path in settings.references.items()
            },
            stats=self.stats,
            last_written=self.outputs.last_state_offset.get,
            committed=self._committed,
        )
        self.detector = StallDetector(settings.stall_timeout_s)
        self.state_thread = ThreadPoolExecutor(1, thread_name_prefix="mlwatcher-state")
        self.watch_thread = ThreadPoolExecutor(1, thread_name_prefix="mlwatcher-watch")
        self.end_offsets: dict[int, int] = {}
        self.joined = False

    def _changelog_ends(self, partitions: Collection[int]) -> dict[int, int]:
        return changelog_end_offsets(
            self.settings.bootstrap_servers,
            self.changelog_topic,
            partitions,
            dict(self.settings.kafka_options),
        )

    def _committed(self, partitions: Collection[int]) -> dict[int, int]:
        watcher = OffsetWatcher(self.settings)  # the state thread's own client
        try:
            return watcher.committed(partitions)
        finally:
            watcher.close()

    async def in_state_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.state_thread, fn, *args)

    async def in_watch_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.watch_thread, fn, *args)


def _summarise_client_logs(outage: OutageLog) -> None:
    """aiokafka logs every failed fetch, heartbeat and commit while the broker is down, each
    from its own module's logger (a filter on the parent would not see them)."""
    import aiokafka  # noqa: F401 - loads the submodules whose loggers are filtered

    summarising = SummarisingFilter(outage)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logging.getLogger(name).addFilter(summarising)


def _warm_up_engine() -> None:
    log.info("metric engine's compiled loops ready (%.1f s)", warm_up())


def create_app(settings: WorkerSettings) -> faust.App:
    """A configured Faust app; ``app.mlwatcher`` holds its :class:`WorkerRuntime`."""
    # One BLAS thread: the engine's matrix products are small, and waking BLAS threads on
    # busy cores costs milliseconds per product (measured: a 25k-element dot 0.1 ms alone,
    # 4.7 ms with 2 threads under load). A worker scales by partitions and processes.
    threadpool_limits(limits=1, user_api="blas")
    # The metric engine's compiled loops, loaded from numba's cache (or compiled) beside the
    # app's start-up rather than before it, so they delay no worker's join. A batch that
    # comes first waits on numba's lock until the warm-up is done.
    threading.Thread(target=_warm_up_engine, name="mlwatcher-warm-up", daemon=True).start()
    # Before any connection: a bad -X option fails here, naming the option.
    credentials = broker_credentials(settings.kafka_options)
    partitions = prepare_topics(settings)
    # Faust creates "<app-id>-data" in the working directory by default; nothing durable goes
    # there, so keep it out of the user's directory. Faust makes only the last path component
    # (no parents), so the shared parent is created here.
    datadir = Path(tempfile.gettempdir()) / "mlwatcher-faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=credentials,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        # No standby replicas: the windows' state has its own changelog, not Faust tables.
        # With Faust's default of 1, its sticky assignor caps a member at ceil(partitions /
        # members) and keeps what each had, so a worker that joins a settled group (2 + 2 of
        # 4 partitions) gets none; with 0 it trims each to floor() first and deals the rest.
        table_standby_replicas=0,
        consumer_max_fetch_size=CONSUMER_MAX_FETCH_BYTES,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
    )
    runtime = WorkerRuntime(settings, partitions)
    app.mlwatcher = runtime  # type: ignore[attr-defined]
    processor = runtime.processor
    topic_name = settings.predictions_topic
    predictions = app.topic(
        topic_name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(predictions)
    async def process_predictions(stream: faust.StreamT) -> None:
        # take_events acks the events after this body returns: after their effects are durable.
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            batch = [
                Incoming(
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                    key=event.message.key,
                    value=event.message.value,
                    timestamp_ms=int(event.message.timestamp * 1000),
                    is_tick=is_tick(event.message.headers),
                )
                for event in events
            ]
            try:
                seeks = await runtime.in_state_thread(processor.process, batch)
            except Exception as exc:
                # The windows in memory may now be ahead of what is durable: only a restart
                # (recovery from the changelog, redelivery after the cursor) is correct.
                log.critical(
                    "state thread failed (%s: %s): exiting with status %d; nothing is lost, "
                    "the restarted worker resumes from the changelog",
                    type(exc).__name__,
                    exc,
                    EXIT_STATE_FAILED,
                    exc_info=True,
                )
                logging.shutdown()
                os._exit(EXIT_STATE_FAILED)
            for partition, offset in seeks:
                await app.consumer.seek(TP(topic_name, partition), offset)

    @app.timer(interval=settings.tick_interval_s)
    async def send_ticks() -> None:
        if not runtime.joined:
            return

        def due_ticks() -> list[tuple[int, int]]:
            now = time.time()
            for partition in processor.partitions_due_a_tick(now):
                runtime.outputs.send_tick(partition, int(now * 1000))
            return processor.take_seeks()

        # Also where a recovered partition's consumer is first moved to its cursor, even if
        # no message of it arrives.
        for partition, offset in await runtime.in_state_thread(due_ticks):
            await app.consumer.seek(TP(topic_name, partition), offset)

    @app.timer(interval=1.0)
    async def watch() -> None:
        runtime.outage.tick()
        runtime.stats.kafka_errors = runtime.outage.errors
        progress = processor.progress
        owned = sorted(progress.owned)
        runtime.end_offsets = ends = await runtime.in_watch_thread(
            runtime.watcher.end_offsets, owned
        )
        next_offsets = dict(progress.next_offsets)
        unknown = [p for p in owned if next_offsets.get(p) is None]
        if unknown:  # nothing applied yet since the cursor is unknown: the group's offset
            next_offsets.update(await runtime.in_watch_thread(runtime.watcher.committed, unknown))
        if not runtime.joined or progress.recovering:
            next_offsets = {}
        now = time.monotonic()
        stalled = runtime.detector.observe(
            now, next_offsets, ends, busy=processor.busy_since is not None
        )
        await _handle_stall(app, runtime, stalled, now)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        runtime.joined = False
        mine = {tp.partition for tp in revoked if tp.topic == topic_name}
        await runtime.in_state_thread(processor.revoke, mine)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == topic_name}
        await runtime.in_state_thread(processor.assign, mine)
        runtime.joined = True
        # Not awaited: a long recovery must not hold up the rebalance. The state thread runs
        # it before any batch submitted after it.
        asyncio.get_running_loop().run_in_executor(runtime.state_thread, processor.recover_pending)

    @app.page("/metrics")
    async def metrics_page(view: Any, request: Any) -> Any:
        text = web.metrics(runtime.stats, processor.progress, runtime.end_offsets)
        return view.text(text, content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_page(view: Any, request: Any) -> Any:
        body, status = web.health(
            settings.app_id, runtime.stats, processor.progress, joined=runtime.joined
        )
        return view.json(body, status=status)

    return app


async def _handle_stall(
    app: faust.App, runtime: WorkerRuntime, stalled: dict[int, int], now: float
) -> None:
    stats, detector = runtime.stats, runtime.detector
    if not stalled:
        if stats.stalled:
            log.warning("no longer stalled: progress resumed")
        stats.stalled = False
        return
    since = detector.stalled_since or now
    if not stats.stalled:
        stats.stalled = True
        stats.stalls += 1
        stats.stall_remedies += 1
        log.error(
            "STALLED: partitions %s have lag %s and nothing was applied for %.0f s; "
            "resuming and re-seeking the consumer",
            sorted(stalled),
            [stalled[p] for p in sorted(stalled)],
            detector.timeout_s,
        )
        consumer = app.consumer
        topic = runtime.settings.predictions_topic
        tps = {TP(topic, p) for p in stalled}
        try:
            consumer.resume_partitions(tps)
            app.flow_control.resume()
            consumer.resume_flow()
            committed = await runtime.in_watch_thread(runtime.watcher.committed, list(stalled))
            for p in stalled:
                next_offset = runtime.processor.progress.next_offsets.get(p)
                if next_offset is not None:
                    # Not past the committed offset: Faust commits nothing past a hole in its
                    # acks (see Processor.recover_pending); the gate skips what was applied.
                    target = min(next_offset, committed.get(p, next_offset))
                    await consumer.seek(TP(topic, p), target)
        except Exception as exc:  # the remedy is best effort; the exit below is not
            log.error("stall remedy failed: %s: %s", type(exc).__name__, exc)
    elif now - since >= 2 * detector.timeout_s:
        log.critical(
            "STALLED for %.0f s on partitions %s after the remedy: exiting with status %d so "
            "the supervisor restarts the worker (nothing is lost: state and offsets are durable)",
            now - since,
            sorted(stalled),
            EXIT_STALLED,
        )
        logging.shutdown()
        os._exit(EXIT_STALLED)
