"""Delayed labels of one agent: join them to pending rows, count them, revise closed windows.

A :class:`~mlwatcher.schemas.LabelBatch` travels on the predictions topic with the agent's key,
so it reaches the partition (and the worker) holding the agent's predictions, after them.
Each label finds its prediction row by id hash among the agent's
:class:`~mlwatcher.stream_app.pending.PendingRows` and counts in the window of that row's
event time:

- window still open: its record at close (revision 0) counts it with the in-call labels;
- window closed: the window becomes *dirty*, and once ``revision_interval_ms`` has passed
  since its last record a *label revision* (``revision`` n >= 1) carries every
  label-dependent point recomputed over all of its labels so far.

What makes a replay after a crash exact (the changelog is a prefix of what was written):
every window's label state (:class:`LabelWindow`) records the offset of the last label batch
it counts (``through_offset``), so a label batch replayed after its window state became
durable adds nothing twice; the ``joined`` entry written after it restores which rows have a
label; a revision's number and content follow from the durable window state alone, so a
revision emitted again after a crash is byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwatcher.metrics import codec
from mlwatcher.metrics.compute import label_points
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.schemas import LabelBatch, MetricRecord
from mlwatcher.stream_app.actions import (
    INVALID_BATCH,
    LABEL_DUPLICATE,
    LABEL_EXPIRED,
    LABEL_UNMATCHED,
    Action,
    DeadLetter,
    DeleteState,
    EmitRecord,
    LabelsCounted,
    PutState,
)
from mlwatcher.stream_app.pending import PendingBatch, PendingRows
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.state_codec import (
    StateCodecError,
    joined_key,
    labels_key,
    pending_key,
)

JOINED = "joined"
#: label outcome codes, in the order of OUTCOMES
_JOIN, _INVALID, _DUPLICATE, _UNMATCHED, _EXPIRED = range(5)
OUTCOMES = (JOINED, INVALID_BATCH, LABEL_DUPLICATE, LABEL_UNMATCHED, LABEL_EXPIRED)
_WHY = {
    _INVALID: "labels outside [0, {n_classes}) (the agent's classes)",
    _DUPLICATE: "ids that already have a label (the first label stays)",
    _UNMATCHED: "ids that match no prediction of the agent",
    _EXPIRED: "ids whose prediction is past the label ttl or was evicted",
}
_PENDING_MAGIC = b"MLWP"
_JOINED_MAGIC = b"MLWJ"
_WINDOW_MAGIC = b"MLWL"


@dataclass
class ClosedWindow:
    """What a revision repeats from the window's record at close, and its in-call labels."""

    window_end_ms: int
    rows_seen: int
    rows_sampled: int
    batches: int
    model_version: str
    class_names: tuple[str, ...]
    in_call: ExactCounters  # label counters of the labels that came with the rows


@dataclass
class LabelWindow:
    start_ms: int
    delayed: ExactCounters  # label counters of labels joined after their rows
    through_offset: int = -1  # the last label batch counted in ``delayed``
    closed: ClosedWindow | None = None
    revisions: int = 0
    last_record_ms: int = 0  # message time of the window's latest record
    labelled_at_record: int = 0  # labelled rows counted in that record
    live_batches: int = field(default=0, compare=False)  # derived from the pending rows

    def total(self) -> ExactCounters:
        assert self.closed is not None
        counters = self.closed.in_call.labels_only()
        counters.add_labels(self.delayed)
        return counters

    @property
    def labelled_rows(self) -> int:
        in_call = 0 if self.closed is None else self.closed.in_call.labelled_rows
        return in_call + self.delayed.labelled_rows

    @property
    def dirty(self) -> bool:
        return self.closed is not None and self.labelled_rows > self.labelled_at_record

    @property
    def finished(self) -> bool:
        """Closed, nothing left to revise, and no row left that a label could still join."""
        return self.closed is not None and self.live_batches == 0 and not self.dirty

    def to_bytes(self) -> bytes:
        meta: dict[str, Any] = {
            "start_ms": self.start_ms,
            "n_classes": self.delayed.n_classes,
            "through_offset": self.through_offset,
            "revisions": self.revisions,
            "last_record_ms": self.last_record_ms,
            "labelled_at_record": self.labelled_at_record,
        }
        delayed_meta, arrays = self.delayed.to_parts("d_")
        meta["delayed"] = delayed_meta
        if self.closed is not None:
            closed = self.closed
            in_call_meta, in_call = closed.in_call.to_parts("i_")
            arrays.update(in_call)
            meta["closed"] = {
                "window_end_ms": closed.window_end_ms,
                "rows_seen": closed.rows_seen,
                "rows_sampled": closed.rows_sampled,
                "batches": closed.batches,
                "model_version": closed.model_version,
                "class_names": list(closed.class_names),
                "in_call": in_call_meta,
            }
        return codec.pack(_WINDOW_MAGIC, meta, arrays)

    @classmethod
    def from_bytes(cls, value: bytes) -> LabelWindow:
        try:
            meta, arrays = codec.unpack(_WINDOW_MAGIC, value)
            n_classes = int(meta["n_classes"])
            closed = None
            if "closed" in meta:
                c = meta["closed"]
                closed = ClosedWindow(
                    window_end_ms=int(c["window_end_ms"]),
                    rows_seen=int(c["rows_seen"]),
                    rows_sampled=int(c["rows_sampled"]),
                    batches=int(c["batches"]),
                    model_version=str(c["model_version"]),
                    class_names=tuple(c["class_names"]),
                    in_call=ExactCounters.from_parts(n_classes, 0, c["in_call"], arrays, "i_"),
                )
            return cls(
                start_ms=int(meta["start_ms"]),
                delayed=ExactCounters.from_parts(n_classes, 0, meta["delayed"], arrays, "d_"),
                through_offset=int(meta["through_offset"]),
                closed=closed,
                revisions=int(meta["revisions"]),
                last_record_ms=int(meta["last_record_ms"]),
                labelled_at_record=int(meta["labelled_at_record"]),
            )
        except (codec.DecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateCodecError(f"label window entry is not readable: {exc}") from exc


def pack_pending(
    batch: PendingBatch,
    data: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """A pending batch entry: with its (predicted, probs, labelled) while live, ids only after."""
    meta = {
        "window_start_ms": batch.window_start_ms,
        "event_time_ms": batch.event_time_ms,
        "live": data is not None,
    }
    arrays = {"ids": batch.ids}
    if data is not None:
        predicted, probs, labelled = data
        arrays.update(predicted=predicted, probs=probs, labelled=labelled)
    return codec.pack(_PENDING_MAGIC, meta, arrays)


PendingData = tuple[np.ndarray, np.ndarray, np.ndarray]  # predicted, probs, labelled


def unpack_pending(offset: int, value: bytes) -> tuple[PendingBatch, PendingData | None]:
    try:
        meta, arrays = codec.unpack(_PENDING_MAGIC, value)
        live = bool(meta["live"])
        batch = PendingBatch(
            offset=offset,
            window_start_ms=int(meta["window_start_ms"]),
            event_time_ms=int(meta["event_time_ms"]),
            ids=arrays["ids"],
            live=live,
        )
        data = (arrays["predicted"], arrays["probs"], arrays["labelled"]) if live else None
        return batch, data
    except (codec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateCodecError(f"pending rows entry is not readable: {exc}") from exc


def unpack_joined(value: bytes) -> np.ndarray:
    try:
        _, arrays = codec.unpack(_JOINED_MAGIC, value)
        return arrays["ids"]
    except (codec.DecodeError, KeyError) as exc:
        raise StateCodecError(f"joined ids entry is not readable: {exc}") from exc


class AgentLabels:
    """One agent's pending rows, the label state of its windows and its joins."""

    def __init__(self, partition: int, agent_id: str) -> None:
        self.partition = partition
        self.agent_id = agent_id
        self.pending: PendingRows | None = None  # created with the first batch's class count
        self.windows: dict[int, LabelWindow] = {}
        #: label batch offset -> the newest pending batch it labelled (its entry can go once
        #: every pending batch up to that one is forgotten)
        self.joins: dict[int, int] = {}
        self.dirty: set[int] = set()  # closed windows with labels their last record lacks

    # -- predictions --------------------------------------------------------------------------
    def add_predictions(
        self,
        offset: int,
        window_start_ms: int,
        event_time_ms: int,
        ids: np.ndarray,
        predicted: np.ndarray,
        probs: np.ndarray,
        labels: np.ndarray | None,
    ) -> list[Action]:
        """Keep a batch's rows for labels to come (nothing if restored already)."""
        if self.pending is not None and offset in self.pending:
            return []
        n_classes = probs.shape[1]
        pending, actions = self._rows_of(n_classes)
        batch = PendingBatch(
            offset=offset,
            window_start_ms=window_start_ms,
            event_time_ms=event_time_ms,
            ids=np.ascontiguousarray(ids, np.uint64),
        )
        data = (
            predicted.astype(np.int16),
            np.ascontiguousarray(probs, np.float32),
            np.zeros(ids.shape[0], bool) if labels is None else labels >= 0,
        )
        pending.add(batch, *data)
        self._window(window_start_ms, n_classes).live_batches += 1
        key = pending_key(self.partition, self.agent_id, offset)
        actions.append(PutState(key, pack_pending(batch, data)))
        return actions

    def _rows_of(self, n_classes: int) -> tuple[PendingRows, list[Action]]:
        """The pending rows, for a model of ``n_classes`` (a change expires the former rows)."""
        actions: list[Action] = []
        if self.pending is not None and self.pending.n_classes != n_classes:
            actions = self._restart_pending(n_classes)
        if self.pending is None:
            self.pending = PendingRows(n_classes)
        return self.pending, actions

    def _restart_pending(self, n_classes: int) -> list[Action]:
        """The agent's class count changed: its pending rows expire and their ids go."""
        assert self.pending is not None
        actions: list[Action] = []
        for batch in self.pending.expire_all():
            self.windows[batch.window_start_ms].live_batches -= 1
        for batch in [*self.pending.expired.values()]:
            actions.append(DeleteState(pending_key(self.partition, self.agent_id, batch.offset)))
        for offset in list(self.joins):
            actions.append(DeleteState(joined_key(self.partition, self.agent_id, offset)))
        self.joins.clear()
        self.pending = PendingRows(n_classes)
        actions.extend(self._retire(list(self.windows)))
        return actions

    def expire(self, stream_time_ms: int, policy: WindowPolicy) -> list[Action]:
        """Expire and forget pending rows by age and count; drop state nothing needs."""
        if self.pending is None:
            return []
        expiry = self.pending.expire_due(
            stream_time_ms, policy.label_ttl_ms, policy.max_pending_labels
        )
        actions: list[Action] = []
        forgotten = {b.offset for b in expiry.forgotten}
        touched = {b.window_start_ms for b in expiry.expired}
        for batch in expiry.expired:
            self.windows[batch.window_start_ms].live_batches -= 1
            if batch.offset not in forgotten:
                key = pending_key(self.partition, self.agent_id, batch.offset)
                actions.append(PutState(key, pack_pending(batch)))  # ids only from now on
        for batch in expiry.forgotten:
            actions.append(DeleteState(pending_key(self.partition, self.agent_id, batch.offset)))
        oldest = self.pending.oldest_offset()
        while self.joins:
            offset, newest = next(iter(self.joins.items()))
            if oldest is not None and newest >= oldest:
                break
            del self.joins[offset]
            actions.append(DeleteState(joined_key(self.partition, self.agent_id, offset)))
        actions.extend(self._retire(touched))
        return actions

    # -- labels -------------------------------------------------------------------------------
    def join(self, batch: LabelBatch, offset: int, n_classes: int) -> list[Action]:
        """Join a label batch; refused labels are dead-lettered as label batches of their own."""
        if offset in self.joins:
            return []  # applied before a crash: its joins were restored
        pending, actions = self._rows_of(n_classes)
        ids = np.asarray(batch.prediction_ids, np.uint64)
        labels = np.asarray(batch.labels, np.int64)
        outcome = np.full(ids.shape[0], _JOIN, np.int8)
        outcome[(labels < 0) | (labels >= n_classes)] = _INVALID
        # In id order: repeats are neighbours, and the index is searched in memory order.
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        repeat = np.concatenate(([False], sorted_ids[1:] == sorted_ids[:-1]))
        repeat &= outcome[order] == _JOIN
        outcome[order[repeat]] = _DUPLICATE
        candidates = order[outcome[order] == _JOIN]
        rows = pending.lookup(ids[candidates])
        known = rows >= 0
        outcome[candidates[~known]] = _UNMATCHED
        candidates, rows = candidates[known], rows[known]
        live = pending.is_live(rows)
        outcome[candidates[~live]] = _EXPIRED
        candidates, rows = candidates[live], rows[live]
        again = pending.labelled(rows)
        outcome[candidates[again]] = _DUPLICATE
        candidates, rows = candidates[~again], rows[~again]
        if rows.size:
            pending.mark_labelled(rows)
            probs, predicted, windows = pending.data(rows)
            joined_labels = labels[candidates]
            for start_ms in np.unique(windows).tolist():
                window = self.windows[start_ms]
                if window.through_offset >= offset:
                    continue  # counted before a crash; only the joined marks were lost
                mine = windows == start_ms
                window.delayed.add_labels(
                    ExactCounters.of_labels(
                        probs[mine].astype(np.float64), predicted[mine], joined_labels[mine]
                    )
                )
                window.through_offset = offset
                if window.closed is not None:
                    self.dirty.add(start_ms)
                actions.append(self._put_window(window))
            self.joins[offset] = pending.batch_of(int(rows.max())).offset
            actions.append(
                PutState(
                    joined_key(self.partition, self.agent_id, offset),
                    codec.pack(_JOINED_MAGIC, {}, {"ids": ids[candidates]}),
                )
            )
        counts = np.bincount(outcome, minlength=len(OUTCOMES))
        for code in (_INVALID, _DUPLICATE, _UNMATCHED, _EXPIRED):
            if counts[code]:
                actions.append(self._refused(batch, outcome == code, code, n_classes))
        actions.append(
            LabelsCounted({OUTCOMES[c]: int(counts[c]) for c in range(len(OUTCOMES)) if counts[c]})
        )
        return actions

    def _refused(
        self, batch: LabelBatch, mask: np.ndarray, code: int, n_classes: int
    ) -> DeadLetter:
        ids = np.asarray(batch.prediction_ids)[mask]
        shown = ", ".join(f"{int(i):#018x}" for i in ids[:5])
        more = f" and {ids.size - 5} more" if ids.size > 5 else ""
        subset = LabelBatch(
            agent_id=batch.agent_id,
            batch_id=batch.batch_id,
            sent_time_ms=batch.sent_time_ms,
            prediction_ids=ids,
            labels=np.asarray(batch.labels)[mask],
            n_classes=batch.n_classes,
        )
        return DeadLetter(
            OUTCOMES[code],
            f"agent {self.agent_id!r}: {ids.size} of {batch.n_rows} labels have "
            f"{_WHY[code].format(n_classes=n_classes)}: id hashes {shown}{more}",
            subset.encode(),
        )

    # -- windows ------------------------------------------------------------------------------
    def delayed_labels(self, start_ms: int) -> ExactCounters | None:
        window = self.windows.get(start_ms)
        return window.delayed if window is not None and window.delayed.labelled_rows else None

    def close(
        self,
        start_ms: int,
        record: MetricRecord,
        in_call: ExactCounters,
        class_names: tuple[str, ...],
        now_ms: int,
    ) -> list[Action]:
        """The window's record (revision 0) is out: from now on labels revise it."""
        window = self.windows.get(start_ms)
        if window is None:
            return []
        window.closed = ClosedWindow(
            window_end_ms=record.window_end_ms,
            rows_seen=record.rows_seen,
            rows_sampled=record.rows_sampled,
            batches=record.batches,
            model_version=record.model_version,
            class_names=class_names,
            in_call=in_call.labels_only(),
        )
        window.last_record_ms = now_ms
        window.labelled_at_record = window.labelled_rows
        if window.finished:
            del self.windows[start_ms]
            if window.through_offset >= 0:  # written before: its entry goes too
                return [DeleteState(labels_key(self.partition, self.agent_id, start_ms))]
            return []
        return [self._put_window(window)]

    def next_revision_ms(self, interval_ms: int) -> int | None:
        due = [self.windows[s].last_record_ms + interval_ms for s in self.dirty]
        return min(due, default=None)

    def revise(self, now_ms: int, interval_ms: int) -> list[Action]:
        """Label revisions of every dirty window whose interval has passed, oldest first."""
        actions: list[Action] = []
        revised = []
        for start_ms in sorted(self.dirty):
            window = self.windows[start_ms]
            if now_ms < window.last_record_ms + interval_ms:
                continue
            revised.append(start_ms)
            closed = window.closed
            assert closed is not None
            total = window.total()
            window.revisions += 1
            record = MetricRecord(
                agent_id=self.agent_id,
                window_start_ms=start_ms,
                window_end_ms=closed.window_end_ms,
                rows_seen=closed.rows_seen,
                rows_sampled=closed.rows_sampled,
                points=label_points(total, list(closed.class_names) or None),
                batches=closed.batches,
                model_version=closed.model_version,
                revision=window.revisions,
            )
            actions.append(EmitRecord(record, window.last_record_ms + interval_ms))
            window.last_record_ms = now_ms
            window.labelled_at_record = total.labelled_rows
            actions.append(self._put_window(window))
        self.dirty.difference_update(revised)
        actions.extend(self._retire(revised))
        return actions

    # -- restore ------------------------------------------------------------------------------
    @classmethod
    def restore(
        cls,
        partition: int,
        agent_id: str,
        pending: Iterable[tuple[PendingBatch, PendingData | None]],
        joined: Iterable[tuple[int, np.ndarray]],
        windows: Iterable[LabelWindow],
        open_starts: set[int],
    ) -> tuple[AgentLabels, list[Action]]:
        """The agent's label state from its entries, and deletes for the entries now stale."""
        labels = cls(partition, agent_id)
        stale: list[Action] = []
        for window in windows:
            if window.start_ms in open_starts:
                # Closed in an entry, but the meta entry marking it closed never got out: it
                # closes again on replay.
                window.closed, window.revisions = None, 0
            elif window.closed is None:  # neither open nor revisable
                stale.append(DeleteState(labels_key(partition, agent_id, window.start_ms)))
                continue
            labels.windows[window.start_ms] = window
            if window.dirty:
                labels.dirty.add(window.start_ms)
        labels._restore_rows(sorted(pending, key=lambda entry: entry[0].offset), joined)
        return labels, stale + labels._retire(list(labels.windows))

    def _restore_rows(
        self,
        batches: list[tuple[PendingBatch, PendingData | None]],
        joined: Iterable[tuple[int, np.ndarray]],
    ) -> None:
        if not batches:
            return
        live_classes = [data[1].shape[1] for _, data in batches if data is not None]
        self.pending = rows = PendingRows(live_classes[-1] if live_classes else 2)
        for batch, data in batches:
            if data is not None and data[1].shape[1] != rows.n_classes:
                batch.live, data = False, None  # from before a class-count change
            rows.add(batch, *(data or ()))
            if batch.live:
                self._window(batch.window_start_ms, rows.n_classes).live_batches += 1
        for offset, ids in sorted(joined, key=lambda j: j[0]):
            found = rows.lookup(ids)
            found = found[found >= 0]
            if found.size:
                self.joins[offset] = rows.batch_of(int(found.max())).offset
                found = found[rows.is_live(found)]
                rows.mark_labelled(found)
            else:
                self.joins[offset] = -1

    # -- internals ----------------------------------------------------------------------------
    def _window(self, start_ms: int, n_classes: int) -> LabelWindow:
        window = self.windows.get(start_ms)
        if window is None:
            window = self.windows[start_ms] = LabelWindow(start_ms, ExactCounters(n_classes, 0))
        return window

    def _put_window(self, window: LabelWindow) -> PutState:
        return PutState(
            labels_key(self.partition, self.agent_id, window.start_ms), window.to_bytes()
        )

    def _retire(self, starts: Iterable[int]) -> list[Action]:
        """Drop the label state of those of ``starts`` that nothing needs any more."""
        actions: list[Action] = []
        for start_ms in [s for s in starts if s in self.windows and self.windows[s].finished]:
            del self.windows[start_ms]
            actions.append(DeleteState(labels_key(self.partition, self.agent_id, start_ms)))
        return actions
