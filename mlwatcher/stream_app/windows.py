"""The window lifecycle of one predictions-topic partition, free of Kafka and Faust.

A :class:`WindowManager` receives the partition's messages in offset order (prediction
batches and control ticks) and answers with :data:`Action` s for the Faust layer to carry
out in order: table writes/deletes, metric records to emit, input to dead-letter.

Why it is built this way:

- **Event time, per agent.** Each agent's tumbling windows have the agent's own length and are
  aligned to the epoch. Its stream time is the largest event time it has sent. A window closes
  once stream time reaches end + grace, or, if the agent went quiet, once a tick's wall-clock
  time reaches end + grace + idle delay. Windows close strictly in time order.
- **Deterministic replay.** Everything depends only on the sequence of messages: the
  reservoir's random draws are seeded from (agent, window, batch id), ticks carry the time
  they were sent, and closing decisions use that recorded time. After a crash, Kafka
  redelivers the uncommitted messages; the table (restored from its changelog, which is a
  prefix of what the lost worker wrote) says which of them were already applied, and a
  window closed again yields the same record bytes.
- **Bounded changelog.** One table entry per applied batch holding only its
  :class:`~mlwatcher.metrics.StateDelta`, deleted (tombstoned) once the window's record is out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mlwatcher.metrics import MetricInputError, ReferenceProfile, StateDelta, WindowState
from mlwatcher.metrics.inputs import predicted_classes
from mlwatcher.schemas import LabelBatch, MetricRecord, PredictionBatch, SchemaDecodeError
from mlwatcher.schemas.codec import HEADER_SIZE, MAGIC, known_fingerprints
from mlwatcher.stream_app.actions import (
    INVALID_BATCH,
    LABEL_UNMATCHED,
    LATE,
    SHAPE_CHANGED,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    WINDOW_CHANGED,
    Action,
    BatchApplied,
    DeadLetter,
    DeleteState,
    EmitRecord,
    LabelsCounted,
    PutState,
)
from mlwatcher.stream_app.labels import (
    AgentLabels,
    LabelWindow,
    PendingData,
    unpack_joined,
    unpack_pending,
)
from mlwatcher.stream_app.pending import PendingBatch
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.state_codec import (
    CURSOR,
    DELTA,
    JOINED,
    LABELS,
    META,
    PENDING,
    REFERENCE,
    AgentMeta,
    StateCodecError,
    WindowConfig,
    delta_key,
    meta_key,
    pack_delta,
    parse_key,
    reference_key,
    unpack_delta,
)

log = logging.getLogger(__name__)


def align(event_time_ms: int, window_ms: int) -> int:
    """Start of the epoch-aligned window containing ``event_time_ms``."""
    return event_time_ms - event_time_ms % window_ms


def reservoir_seed(agent_id: str, window_start_ms: int, batch_id: str) -> int:
    """Seed of a batch's reservoir draws: the same on every replay of the batch."""
    digest = hashlib.blake2b(
        f"{agent_id}\x00{window_start_ms}\x00{batch_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def config_of(batch: PredictionBatch) -> WindowConfig:
    return WindowConfig(
        window_ms=int(batch.window_ms),
        n_classes=batch.n_classes,
        n_features=batch.n_features,
        max_buffer_size=int(batch.max_buffer_size),
        categorical_features=tuple(sorted({int(i) for i in batch.categorical_features})),
        threshold=float(batch.threshold),
        model_version=batch.model_version,
        class_names=tuple(batch.class_names),
        feature_names=tuple(batch.feature_names),
    )


def new_state(config: WindowConfig) -> WindowState:
    return WindowState(
        config.n_classes,
        config.max_buffer_size,
        config.n_features,
        config.categorical_features,
        config.threshold,
        seed=0,
    )


@dataclass
class OpenWindow:
    config: WindowConfig
    state: WindowState
    batch_ids: set[str] = field(default_factory=set)
    delta_keys: list[bytes] = field(default_factory=list)


@dataclass
class AgentWindows:
    meta: AgentMeta
    open: dict[int, OpenWindow] = field(default_factory=dict)
    reference: ReferenceProfile | None = None  # profile of the previous non-empty window
    labels: AgentLabels | None = None  # rows waiting for delayed labels, if the agent sends ids


class WindowManager:
    """Window state and lifecycle of every agent whose batches land on one partition."""

    def __init__(
        self,
        partition: int,
        policy: WindowPolicy | None = None,
        baselines: Mapping[str, ReferenceProfile] | None = None,
    ) -> None:
        self.partition = partition
        self.policy = policy or WindowPolicy()
        self.baselines = dict(baselines or {})
        self.agents: dict[str, AgentWindows] = {}

    # -- queries ------------------------------------------------------------------------------
    @property
    def open_window_count(self) -> int:
        return sum(len(agent.open) for agent in self.agents.values())

    def next_wall_deadline_ms(self) -> int | None:
        """Earliest wall-clock time at which a tick would close a window, if any."""
        deadlines = []
        for agent in self.agents.values():
            candidate = self._next_candidate(agent)
            if candidate is not None:
                start, window_ms, _ = candidate
                deadlines.append(self._due(start, window_ms) + self.policy.idle_close_delay_ms)
            if agent.labels is not None:
                revision = agent.labels.next_revision_ms(self.policy.label_revision_interval_ms)
                if revision is not None:
                    deadlines.append(revision)
        return min(deadlines, default=None)

    @property
    def pending_label_rows(self) -> int:
        return sum(
            a.labels.pending.live_rows
            for a in self.agents.values()
            if a.labels is not None and a.labels.pending is not None
        )

    # -- input --------------------------------------------------------------------------------
    def on_message(self, value: bytes | None, offset: int) -> list[Action]:
        """Decode a predictions-topic value and process it; poison becomes a DeadLetter."""
        value = value or b""
        try:
            if value[2:HEADER_SIZE] in known_fingerprints("label_batch"):
                return self.on_labels(LabelBatch.decode(value), offset)
            batch = PredictionBatch.decode(value)
        except SchemaDecodeError as exc:
            return [DeadLetter(_decode_reason(value), str(exc))]
        except Exception as exc:  # any decoder crash on hostile bytes is poison, not fatal
            return [DeadLetter(UNDECODABLE, f"{type(exc).__name__}: {exc}")]
        return self.on_batch(batch, offset)

    def on_batch(self, batch: PredictionBatch, offset: int) -> list[Action]:
        agent = self.agents.get(batch.agent_id)
        if agent is not None and offset <= agent.meta.handled_offset:
            return []  # fully applied before a crash; Kafka redelivered it
        config = config_of(batch)
        start = align(batch.event_time_ms, config.window_ms)
        refusal = self._refusal(agent, batch, config, start)
        if refusal is not None:
            return [refusal]
        actions: list[Action] = []
        if agent is None:
            agent = self.agents[batch.agent_id] = AgentWindows(
                AgentMeta(agent_id=batch.agent_id, latest_config=config)
            )
        window = agent.open.get(start)
        if window is None or batch.batch_id not in window.batch_ids:
            fresh = window is None
            if fresh:
                window = OpenWindow(config, new_state(config))
            try:
                delta = window.state.update(
                    batch.probabilities,
                    batch.labels,
                    batch.features,
                    rng=np.random.default_rng(
                        reservoir_seed(batch.agent_id, start, batch.batch_id)
                    ),
                )
            except (MetricInputError, ValueError) as exc:
                if not agent.open and agent.meta.next_window_ms is None and fresh:
                    del self.agents[batch.agent_id]  # nothing of this agent was accepted yet
                return [DeadLetter(INVALID_BATCH, str(exc))]
            if fresh:
                agent.open[start] = window
                agent.meta.windows[start] = config
                agent.meta.latest_config = config
                agent.meta.handled_offset = max(agent.meta.handled_offset, offset - 1)
                # The meta entry goes first so a restored delta always finds its window config.
                actions.append(PutState(meta_key(self.partition, batch.agent_id), _meta(agent)))
            if batch.prediction_ids is not None:
                # before the delta: a batch restored as applied always has its pending rows
                actions.extend(self._keep_for_labels(agent, batch, config, start, offset))
            key = delta_key(self.partition, batch.agent_id, start, batch.batch_id)
            window.batch_ids.add(batch.batch_id)
            window.delta_keys.append(key)
            actions.append(PutState(key, pack_delta(offset, batch.event_time_ms, delta.to_bytes())))
            actions.append(BatchApplied(batch.agent_id, batch.n_rows))
            agent.meta.stream_time_ms = max(agent.meta.stream_time_ms, batch.event_time_ms)
            if agent.labels is not None:
                actions.extend(agent.labels.expire(agent.meta.stream_time_ms, self.policy))
        actions.extend(self._close_due(agent, None, offset))
        return actions

    def on_labels(self, batch: LabelBatch, offset: int) -> list[Action]:
        """Join delayed labels to the agent's pending rows; revise closed windows that are due."""
        agent = self.agents.get(batch.agent_id)
        if agent is not None and offset <= agent.meta.handled_offset:
            return []
        if agent is None or agent.labels is None:
            return _refuse_labels(
                batch,
                LABEL_UNMATCHED,
                f"agent {batch.agent_id!r} has no predictions with prediction_ids on "
                f"partition {self.partition}: none of its {batch.n_rows} labels can join",
            )
        n_classes = agent.meta.latest_config.n_classes
        if batch.n_classes not in (0, n_classes):
            return _refuse_labels(
                batch,
                INVALID_BATCH,
                f"agent {batch.agent_id!r}: the label batch says n_classes="
                f"{batch.n_classes}, the agent's predictions have {n_classes} classes",
            )
        actions = agent.labels.join(batch, offset, n_classes)
        actions.extend(
            agent.labels.revise(batch.sent_time_ms, self.policy.label_revision_interval_ms)
        )
        return actions

    def on_tick(self, now_ms: int, offset: int) -> list[Action]:
        """A control tick recorded at ``now_ms`` (worker clock): close windows of quiet agents."""
        actions: list[Action] = []
        for agent in self.agents.values():
            if offset > agent.meta.handled_offset:
                actions.extend(self._close_due(agent, now_ms, offset))
                if agent.labels is not None:
                    interval = self.policy.label_revision_interval_ms
                    actions.extend(agent.labels.revise(now_ms, interval))
        return actions

    def restore(self, entries: Iterable[tuple[bytes, bytes]]) -> list[Action]:
        """Rebuild from the table's entries; returns deletes for entries that are stale."""
        metas: dict[str, AgentMeta] = {}
        references: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        deltas: list[tuple[int, str, int, str, bytes, int, bytes]] = []
        pending: dict[str, list[tuple[PendingBatch, PendingData | None]]] = {}
        joined: dict[str, list[tuple[int, np.ndarray]]] = {}
        label_windows: dict[str, list[LabelWindow]] = {}
        label_keys: dict[str, list[bytes]] = {}
        actions: list[Action] = []
        for key, value in entries:
            try:
                kind, partition, agent_id, rest = parse_key(key)
                if partition != self.partition or value is None or kind == CURSOR:
                    continue
                if kind == META:
                    metas[agent_id] = AgentMeta.from_bytes(value)
                elif kind == REFERENCE:
                    references[agent_id, int(rest[0])] = (key, value)
                elif kind == PENDING:
                    pending.setdefault(agent_id, []).append(unpack_pending(int(rest[0]), value))
                    label_keys.setdefault(agent_id, []).append(key)
                elif kind == JOINED:
                    joined.setdefault(agent_id, []).append((int(rest[0]), unpack_joined(value)))
                    label_keys.setdefault(agent_id, []).append(key)
                elif kind == LABELS:
                    label_windows.setdefault(agent_id, []).append(LabelWindow.from_bytes(value))
                    label_keys.setdefault(agent_id, []).append(key)
                elif kind == DELTA:
                    offset, event_time_ms, delta_bytes = unpack_delta(value)
                    start, batch_id = int(rest[0]), str(rest[1])
                    deltas.append(
                        (offset, agent_id, start, batch_id, key, event_time_ms, delta_bytes)
                    )
            except (StateCodecError, IndexError, ValueError) as exc:
                log.error(
                    "partition %d: dropping unreadable state entry %r: %s",
                    self.partition,
                    key[:80],
                    exc,
                )
                actions.append(DeleteState(key))
        self.agents = {}
        for agent_id, meta in metas.items():
            agent = AgentWindows(meta)
            for start, config in meta.windows.items():
                agent.open[start] = OpenWindow(config, new_state(config))
            if (agent_id, meta.reference_window_ms) in references:
                _, value = references.pop((agent_id, meta.reference_window_ms))
                agent.reference = ReferenceProfile.from_bytes(value)
            self.agents[agent_id] = agent
        actions.extend(DeleteState(key) for key, _ in references.values())
        for _offset, agent_id, start, batch_id, key, event_time_ms, delta_bytes in sorted(deltas):
            agent = self.agents.get(agent_id)
            window = agent.open.get(start) if agent is not None else None
            if agent is None or window is None:
                actions.append(DeleteState(key))  # its window was already emitted
                continue
            try:
                window.state.apply(StateDelta.from_bytes(delta_bytes))
            except ValueError as exc:
                log.error(
                    "partition %d: agent %s window %d: cannot replay batch %s: %s",
                    self.partition,
                    agent_id,
                    start,
                    batch_id,
                    exc,
                )
                continue
            window.batch_ids.add(batch_id)
            window.delta_keys.append(key)
            agent.meta.stream_time_ms = max(agent.meta.stream_time_ms, event_time_ms)
        for agent_id in label_keys:
            agent = self.agents.get(agent_id)
            if agent is None:  # nothing of the agent was kept: its label state is stale
                actions.extend(DeleteState(key) for key in label_keys[agent_id])
                continue
            agent.labels, cleanup = AgentLabels.restore(
                self.partition,
                agent_id,
                pending.get(agent_id, ()),
                joined.get(agent_id, ()),
                label_windows.get(agent_id, ()),
                set(agent.open),
            )
            actions.extend(cleanup)
        return actions

    # -- internals ----------------------------------------------------------------------------
    def _keep_for_labels(
        self,
        agent: AgentWindows,
        batch: PredictionBatch,
        config: WindowConfig,
        start: int,
        offset: int,
    ) -> list[Action]:
        assert batch.prediction_ids is not None
        if agent.labels is None:
            agent.labels = AgentLabels(self.partition, batch.agent_id)
        probs = batch.probabilities
        return agent.labels.add_predictions(
            offset,
            start,
            batch.event_time_ms,
            batch.prediction_ids,
            predicted_classes(probs.astype(np.float64, copy=False), config.threshold),
            probs,
            batch.labels,
        )

    def _refusal(
        self,
        agent: AgentWindows | None,
        batch: PredictionBatch,
        config: WindowConfig,
        start: int,
    ) -> DeadLetter | None:
        if agent is None:
            return None
        meta = agent.meta
        end = start + config.window_ms
        window = agent.open.get(start)
        if meta.next_window_ms is not None and start < meta.next_window_ms:
            return DeadLetter(
                LATE,
                f"event_time_ms={batch.event_time_ms} falls in window [{start}, {end}) but "
                f"agent {batch.agent_id!r} has emitted its windows up to {meta.next_window_ms}",
            )
        if window is None and end + self._grace(config.window_ms) <= meta.stream_time_ms:
            return DeadLetter(
                LATE,
                f"event_time_ms={batch.event_time_ms}: window [{start}, {end}) plus grace "
                f"ended before the agent's stream time {meta.stream_time_ms}",
            )
        if window is not None:
            if window.config.window_ms != config.window_ms:
                return _window_changed(batch, window.config.window_ms, start)
            if window.config.shape != config.shape:
                return DeadLetter(
                    SHAPE_CHANGED,
                    f"agent {batch.agent_id!r} window {start}: (n_classes, n_features, "
                    f"max_buffer_size, categorical_features) = {config.shape}, earlier "
                    f"batches of the window had {window.config.shape}",
                )
            return None
        for other_start, other in agent.open.items():
            if other_start < end and start < other_start + other.config.window_ms:
                return _window_changed(batch, other.config.window_ms, other_start)
        return None

    def _grace(self, window_ms: int) -> int:
        return self.policy.grace_for(window_ms)

    def _due(self, start: int, window_ms: int) -> int:
        return start + window_ms + self._grace(window_ms)

    def _next_candidate(self, agent: AgentWindows) -> tuple[int, int, OpenWindow | None] | None:
        """The next window to emit: the oldest open one, or an empty one before it."""
        first_open = min(agent.open) if agent.open else None
        meta = agent.meta
        if meta.next_window_ms is not None and meta.last_data_end_ms is not None:
            window_ms = meta.latest_config.window_ms
            start = -(-meta.next_window_ms // window_ms) * window_ms
            within_limit = (
                start < meta.last_data_end_ms + self.policy.empty_window_limit * window_ms
            )
            fits = first_open is None or start + window_ms <= first_open
            if within_limit and fits:
                return start, window_ms, None
        if first_open is not None:
            window = agent.open[first_open]
            return first_open, window.config.window_ms, window
        return None

    def _close_due(self, agent: AgentWindows, wall_ms: int | None, offset: int) -> list[Action]:
        """Emit every due window of ``agent``, oldest first.

        Per window the writes go: record (acknowledged), its reference profile under a new key,
        the meta entry that marks the window closed and names that profile, then tombstones.
        A crash between any two leaves a state from which the window is either still open
        (and re-emitted identically, with the old reference still in place) or closed with
        only stale entries left, which :meth:`restore` deletes.
        """
        actions: list[Action] = []
        meta = agent.meta
        last_meta_index = -1
        while (candidate := self._next_candidate(agent)) is not None:
            start, window_ms, window = candidate
            due = self._due(start, window_ms)
            by_stream = meta.stream_time_ms >= due
            by_wall = wall_ms is not None and wall_ms >= due + self.policy.idle_close_delay_ms
            if not (by_stream or by_wall):
                break
            record = self._record(agent, start, window_ms, window)
            actions.append(EmitRecord(record, due))
            if window is not None and agent.labels is not None:
                # before the meta entry that marks the window closed: see LabelWindow
                actions.extend(
                    agent.labels.close(
                        start,
                        record,
                        window.state.counters,
                        window.config.class_names,
                        wall_ms if wall_ms is not None else meta.stream_time_ms,
                    )
                )
            meta.next_window_ms = start + window_ms
            stale: list[bytes] = []
            if window is not None:
                del agent.open[start]
                meta.windows.pop(start, None)
                meta.last_data_end_ms = start + window_ms
                stale = window.delta_keys
                if window.state.rows_seen > 0:
                    if meta.reference_window_ms is not None:
                        stale = [
                            reference_key(self.partition, meta.agent_id, meta.reference_window_ms),
                            *stale,
                        ]
                    agent.reference = ReferenceProfile.from_window(window.state)
                    meta.reference_window_ms = start
                    actions.append(
                        PutState(
                            reference_key(self.partition, meta.agent_id, start),
                            agent.reference.to_bytes(),
                        )
                    )
            last_meta_index = len(actions)
            actions.append(PutState(meta_key(self.partition, meta.agent_id), _meta(agent)))
            actions.extend(DeleteState(key) for key in stale)
        if last_meta_index >= 0:
            # Only the last meta write of the batch says the whole message was handled: a
            # replay after a crash in between closes the remaining windows again.
            meta.handled_offset = offset
            actions[last_meta_index] = PutState(
                meta_key(self.partition, meta.agent_id), _meta(agent)
            )
        return actions

    def _record(
        self, agent: AgentWindows, start: int, window_ms: int, window: OpenWindow | None
    ) -> MetricRecord:
        config = window.config if window is not None else agent.meta.latest_config
        state = window.state if window is not None else new_state(config)
        reference = self.baselines.get(agent.meta.agent_id, agent.reference)
        names = {
            "class_names": list(config.class_names) or None,
            "feature_names": list(config.feature_names) or None,
        }
        delayed = None
        if window is not None and agent.labels is not None:
            delayed = agent.labels.delayed_labels(start)
        try:
            columns = state.metric_columns(reference=reference, delayed_labels=delayed, **names)
        except (MetricInputError, ValueError) as exc:
            log.warning(
                "agent %s window %d: drift against the reference failed (%s); "
                "emitting the window without drift",
                agent.meta.agent_id,
                start,
                exc,
            )
            columns = state.metric_columns(delayed_labels=delayed, **names)
        return MetricRecord(
            agent_id=agent.meta.agent_id,
            window_start_ms=start,
            window_end_ms=start + window_ms,
            rows_seen=state.rows_seen,
            rows_sampled=state.rows_sampled,
            columns=columns,
            batches=len(window.batch_ids) if window is not None else 0,
            model_version=config.model_version,
        )


def _meta(agent: AgentWindows) -> bytes:
    return agent.meta.to_bytes()


def _window_changed(batch: PredictionBatch, open_window_ms: int, open_start: int) -> DeadLetter:
    return DeadLetter(
        WINDOW_CHANGED,
        f"agent {batch.agent_id!r}: window_ms={batch.window_ms} at event_time_ms="
        f"{batch.event_time_ms} overlaps the open window starting {open_start} of "
        f"window_ms={open_window_ms}",
    )


def _refuse_labels(batch: LabelBatch, reason: str, detail: str) -> list[Action]:
    """A whole label batch dead-lettered, its labels counted under ``reason``."""
    return [DeadLetter(reason, detail), LabelsCounted({reason: batch.n_rows})]


def _decode_reason(value: bytes) -> str:
    known = known_fingerprints("prediction_batch") | known_fingerprints("label_batch")
    if len(value) >= HEADER_SIZE and value[:2] == MAGIC and value[2:HEADER_SIZE] not in known:
        return UNKNOWN_SCHEMA
    return UNDECODABLE
