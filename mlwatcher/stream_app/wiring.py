"""The Faust application: wires :class:`WindowManager` s to topics, a table and a web page.

Faust is used for what it does well (consumer group, partition assignment, changelog-backed
tables, recovery, offset commits, web server). Windowing is ours: Faust's windowed tables
close windows on wall-clock sweeps and miss ``on_window_close`` callbacks across partitions.

Every table write happens while processing a message of the partition it belongs to, so it
lands in that partition of the changelog. To close windows of agents that went quiet, a timer
appends a small control *tick* (header ``mlwatcher-control: tick``, value = send time in ms) to
each owned predictions partition whose next deadline has passed; processing the tick closes
the due windows, in order with the data and reproducibly on replay.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, EventT

from mlwatcher.kafka_admin import create_topics, topic_partition_counts
from mlwatcher.metrics import ReferenceProfile
from mlwatcher.stream_app.kafka_security import broker_credentials
from mlwatcher.stream_app.observability import WorkerStats, render_prometheus
from mlwatcher.stream_app.settings import WorkerSettings
from mlwatcher.stream_app.windows import (
    Action,
    BatchApplied,
    DeadLetter,
    DeleteState,
    EmitRecord,
    PutState,
    WindowManager,
)

log = logging.getLogger(__name__)

CONTROL_HEADER = "mlwatcher-control"
TICK = b"tick"
TABLE_NAME = "window-state"
#: a tick is re-sent to a partition at most this often while the previous one is in flight
TICK_RESEND_S = 1.0
MAX_BATCH_BYTES = 1_000_000
PRODUCER_BUFFER_MESSAGES = 2_000
MAX_MESSAGE_BYTES = 16_000_000


def is_tick(headers: Any) -> bool:
    if not headers:
        return False
    items = headers.items() if isinstance(headers, dict) else headers
    return any(name == CONTROL_HEADER and value == TICK for name, value in items)


def prepare_topics(settings: WorkerSettings) -> int:
    """Create the worker's topics if needed; return the predictions topic's partition count.

    The table's changelog must have as many partitions as the predictions topic, so an existing
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
    return counts[settings.predictions_topic]


class WorkerRuntime:
    """Per-process state around the managers: one WindowManager per owned partition."""

    def __init__(self, settings: WorkerSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.stats = WorkerStats()
        self.baselines = {
            agent: ReferenceProfile.load(path) for agent, path in settings.references.items()
        }
        self.managers: dict[int, WindowManager] = {}
        self.last_offset: dict[int, int] = {}
        self.tick_sent_at: dict[int, float] = {}
        self.ready = False

    def manager(self, partition: int, table: faust.Table, actions: list[Action]) -> WindowManager:
        manager = self.managers.get(partition)
        if manager is None:
            manager = WindowManager(partition, self.settings.policy, self.baselines)
            actions.extend(manager.restore(list(table.data.items())))
            self.managers[partition] = manager
            log.info(
                "partition %d: restored %d agents, %d open windows",
                partition,
                len(manager.agents),
                manager.open_window_count,
            )
        return manager

    def forget_partitions(self) -> None:
        """After a rebalance, rebuild every manager from the (recovered) table on next use."""
        self.managers.clear()
        self.tick_sent_at.clear()

    @property
    def open_windows(self) -> int:
        return sum(m.open_window_count for m in self.managers.values())


def create_app(settings: WorkerSettings) -> faust.App:
    """A configured Faust app; ``app.mlwatcher`` holds its :class:`WorkerRuntime`."""
    # Before any connection: a bad -X option fails here, naming the option.
    credentials = broker_credentials(settings.kafka_options)
    partitions = prepare_topics(settings)
    # Faust creates "<app-id>-data" in the working directory by default; with the memory
    # store nothing durable goes there, so keep it out of the user's directory. Faust makes
    # only the last path component (no parents), so the shared parent is created here.
    datadir = Path(tempfile.gettempdir()) / "mlwatcher-faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=credentials,
        store="memory://",  # state is rebuilt from the changelog topic
        datadir=str(datadir),
        topic_partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        table_standby_replicas=settings.standby_replicas,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # aiokafka keeps one open batch per partition and waits for it to be sent before
        # starting another: with Faust's 16 KB default every large delta costs a round trip
        # (measured: 10 s instead of 3 s for 1.2 M rows). Deltas of big first batches can
        # exceed 1 MB, hence the larger request size (the changelog topic allows it).
        producer_max_batch_size=MAX_BATCH_BYTES,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        producer_linger=0.005,
    )
    # Table writes queue in Faust's ProducerBuffer; past 100 queued messages Faust stops the
    # stream until the queue drains, which stalled us for ~1 s at a time under load.
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    runtime = WorkerRuntime(settings, partitions)
    app.mlwatcher = runtime  # type: ignore[attr-defined]
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    predictions = app.topic(settings.predictions_topic, partitions=partitions, **raw)
    metrics_topic = app.topic(settings.metrics_topic, **raw)
    dead_letter = app.topic(settings.dead_letter_topic, **raw)
    table = app.Table(
        TABLE_NAME,
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
    )

    async def execute(actions: list[Action], event: EventT) -> None:
        stats = runtime.stats
        for action in actions:
            if isinstance(action, PutState):
                table[action.key] = action.value
                stats.changelog_bytes += len(action.value)
            elif isinstance(action, DeleteState):
                if action.key in table:
                    del table[action.key]
            elif isinstance(action, EmitRecord):
                record = action.record
                # Wait for the broker's ack: the table writes that follow (tombstones, cursor)
                # must never be durable without the record they account for.
                sent = await metrics_topic.send(key=record.key, value=record.encode())
                await sent
                stats.records_emitted += 1
                if record.rows_seen == 0:
                    stats.empty_records_emitted += 1
                stats.observe_close_delay(max(0.0, time.time() - action.due_ms / 1000))
            elif isinstance(action, DeadLetter):
                message = event.message
                stats.dead_letters[action.reason] += 1
                log.warning(
                    "dead-lettered %s[%d]@%d: %s: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    action.reason,
                    action.detail,
                )
                await dead_letter.send(
                    key=message.key,
                    value=message.value,
                    headers=[
                        ("mlwatcher-error", action.reason.encode()),
                        ("mlwatcher-error-detail", action.detail[:1000].encode()),
                        ("mlwatcher-source-topic", message.topic.encode()),
                        ("mlwatcher-source-partition", str(message.partition).encode()),
                        ("mlwatcher-source-offset", str(message.offset).encode()),
                    ],
                )
            elif isinstance(action, BatchApplied):
                stats.batches += 1
                stats.rows += action.rows

    @app.agent(predictions)
    async def process_predictions(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            partition, offset = message.partition, message.offset
            runtime.stats.messages += 1
            began = time.perf_counter()
            actions: list[Action] = []
            manager = runtime.manager(partition, table, actions)
            if is_tick(message.headers):
                runtime.stats.ticks += 1
                runtime.tick_sent_at.pop(partition, None)
                try:
                    now_ms = int(message.value)
                except (TypeError, ValueError):
                    now_ms = message.timestamp * 1000
                actions.extend(manager.on_tick(int(now_ms), offset))
            else:
                actions.extend(manager.on_message(message.value, offset))
            computed = time.perf_counter()
            await execute(actions, event)
            runtime.stats.compute_seconds += computed - began
            runtime.stats.execute_seconds += time.perf_counter() - computed
            runtime.last_offset[partition] = offset

    @app.timer(interval=settings.tick_interval_s)
    async def send_ticks() -> None:
        if not runtime.ready:
            return
        now = time.time()
        for tp in app.consumer.assignment():
            if tp.topic != settings.predictions_topic:
                continue
            sent_at = runtime.tick_sent_at.get(tp.partition)
            if sent_at is not None and now - sent_at < TICK_RESEND_S:
                continue
            manager = runtime.managers.get(tp.partition)
            deadline = None if manager is None else manager.next_wall_deadline_ms()
            if manager is not None and (deadline is None or now * 1000 < deadline):
                continue
            runtime.tick_sent_at[tp.partition] = now
            await predictions.send(
                key=None,
                value=str(int(now * 1000)).encode(),
                partition=tp.partition,
                headers=[(CONTROL_HEADER, TICK)],
            )

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        runtime.ready = False
        runtime.forget_partitions()

    @app.on_rebalance_complete.connect
    async def on_rebalanced(sender: Any, **kwargs: Any) -> None:
        runtime.ready = True

    @app.page("/metrics")
    async def metrics_page(view: Any, request: Any) -> Any:
        lag: dict[int, int] = {}
        assigned = _assigned(app, settings.predictions_topic)
        for tp in assigned:
            try:
                highwater = app.consumer.highwater(tp)
            except Exception:  # consumer not ready during a rebalance
                continue
            if highwater is not None:
                lag[tp.partition] = max(
                    0, highwater - runtime.last_offset.get(tp.partition, -1) - 1
                )
        text = render_prometheus(
            runtime.stats,
            open_windows=runtime.open_windows,
            lag_by_partition=lag,
            assigned_partitions=len(assigned),
        )
        return view.text(text, content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_page(view: Any, request: Any) -> Any:
        assigned = _assigned(app, settings.predictions_topic)
        body = {
            "status": "ok" if runtime.ready else "starting",
            "app_id": settings.app_id,
            "assigned_partitions": sorted(tp.partition for tp in assigned),
            "open_windows": runtime.open_windows,
            "records_emitted": runtime.stats.records_emitted,
        }
        return view.json(body, status=200 if runtime.ready else 503)

    return app


def _assigned(app: faust.App, topic: str) -> list[TP]:
    try:
        return [tp for tp in app.consumer.assignment() if tp.topic == topic]
    except Exception:  # no consumer yet
        return []
