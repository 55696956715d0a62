"""Delayed labels in the worker (pure, the real executor over in-memory topics): joins, revisions,
refusals, bounds, and exact replay after a crash at any prefix of the writes."""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import pytest

from mlwatcher.schemas import LabelBatch, MetricRecord, PredictionBatch
from mlwatcher.stream_app.actions import (
    INVALID_BATCH,
    LABEL_DUPLICATE,
    LABEL_EXPIRED,
    LABEL_UNMATCHED,
)
from mlwatcher.stream_app.pending import PendingBatch, PendingRows
from mlwatcher.stream_app.processor import Incoming
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.state_codec import parse_key
from mlwatcher.stream_app.windows import WindowManager
from tests.stream_app.label_checks import assert_label_metrics, point_values
from tests.stream_app.memory_outputs import Crash, MemoryOutputs
from tests.stream_app.test_windows import T0, WINDOW, Table, _deliver, make_batch

POLICY = WindowPolicy(
    grace_ms=2_000,
    idle_close_delay_ms=1_000,
    empty_window_limit=0,
    label_ttl_ms=3 * WINDOW,
    max_pending_labels=10_000,
    label_revision_interval_ms=5_000,
)
C = 3


def predictions(event_time_ms: int, rows: int, seed: int, in_call: float = 0.0) -> PredictionBatch:
    """A batch with ids; a share ``in_call`` of its rows carries its label already."""
    batch = make_batch(event_time_ms, rows, seed=seed, n_classes=C, labels=in_call > 0)
    rng = np.random.default_rng(seed + 1000)
    batch.prediction_ids = rng.integers(0, 2**64, rows, dtype=np.uint64)
    if batch.labels is not None:
        labels = batch.labels.copy()
        labels[rng.random(rows) >= in_call] = -1
        batch.labels = labels
    return batch


def labels_for(
    batch: PredictionBatch, rows: np.ndarray, sent_ms: int, seed: int, n_classes: int = C
) -> LabelBatch:
    rng = np.random.default_rng(seed)
    return LabelBatch(
        agent_id=batch.agent_id,
        batch_id=uuid.UUID(int=seed + 1).hex,
        sent_time_ms=sent_ms,
        prediction_ids=batch.prediction_ids[rows],  # type: ignore[index]
        labels=rng.integers(0, C, rows.size).astype(np.int32),
        n_classes=n_classes,
    )


class Feed:
    def __init__(self, policy: WindowPolicy = POLICY) -> None:
        self.manager = WindowManager(0, policy)
        self.table = Table()
        self.offset = 0

    def send(self, message: PredictionBatch | LabelBatch) -> None:
        self.table.execute(self.manager.on_message(message.encode(), self.offset))
        self.offset += 1

    def tick(self, now_ms: int) -> None:
        self.table.execute(self.manager.on_tick(now_ms, self.offset))
        self.offset += 1

    def records(self, start: int) -> list[MetricRecord]:
        return [r for r in self.table.records if r.window_start_ms == start]


# float32 probabilities sum to 1 within 1e-7; scikit-learn warns, the values are unaffected
pytestmark = pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")


def test_labels_in_the_open_window_count_in_its_first_record_with_in_call_labels() -> None:
    feed = Feed()
    a = predictions(T0 + 1_000, 40, seed=1, in_call=0.3)
    b = predictions(T0 + 2_000, 40, seed=2)
    feed.send(a)
    feed.send(b)
    unlabelled_a = np.flatnonzero(a.labels < 0)[:10]  # type: ignore[operator]
    late_a = labels_for(a, unlabelled_a, T0 + 3_000, seed=3)
    late_b = labels_for(b, np.arange(25), T0 + 3_000, seed=4)
    feed.send(late_a)
    feed.send(late_b)
    feed.send(predictions(T0 + WINDOW + 2_000, 5, seed=5))  # closes the window
    [record] = feed.records(T0)
    assert record.revision == 0
    in_call = a.labels >= 0  # type: ignore[operator]
    probs = np.concatenate([a.probabilities[in_call], a.probabilities[unlabelled_a],
                            b.probabilities[:25]])  # fmt: skip
    y = np.concatenate([a.labels[in_call], late_a.labels, late_b.labels])  # type: ignore[index]
    assert_label_metrics(record, probs, y, C)
    assert feed.table.dead == []
    assert feed.manager.agents["agent"].labels.pending.live_rows == 85  # type: ignore[union-attr]


def test_labels_after_close_become_a_rate_limited_revision_of_label_points_only() -> None:
    feed = Feed()
    a = predictions(T0 + 1_000, 60, seed=1, in_call=0.2)
    feed.send(a)
    feed.send(predictions(T0 + WINDOW + 2_000, 5, seed=2))  # closes window T0
    [first] = feed.records(T0)
    unlabelled = np.flatnonzero(a.labels < 0)  # type: ignore[operator]
    l1 = labels_for(a, unlabelled[:10], T0 + WINDOW + 3_000, seed=3)
    feed.send(l1)
    assert len(feed.records(T0)) == 1  # within the interval of the close: no revision yet
    deadline = feed.manager.next_wall_deadline_ms()
    assert deadline == T0 + WINDOW + 2_000 + POLICY.label_revision_interval_ms
    l2 = labels_for(a, unlabelled[10:30], T0 + WINDOW + 4_000, seed=4)
    feed.send(l2)
    feed.tick(deadline - 1)
    assert len(feed.records(T0)) == 1
    feed.tick(deadline)
    first_again, revision = feed.records(T0)
    assert first_again is first and revision.revision == 1
    # Same window, same header; only label-dependent points, over every label so far.
    assert (revision.window_end_ms, revision.rows_seen, revision.rows_sampled, revision.batches) \
        == (first.window_end_ms, first.rows_seen, first.rows_sampled, first.batches)  # fmt: skip
    whats = {p.what for p in revision.points}
    assert "prediction_count" not in whats and "rows_seen" not in whats
    assert {"accuracy", "confusion_count", "log_loss", "brier_score"} <= whats
    in_call = a.labels >= 0  # type: ignore[operator]
    probs = np.concatenate([a.probabilities[in_call], a.probabilities[unlabelled[:30]]])
    y = np.concatenate([a.labels[in_call], l1.labels, l2.labels])  # type: ignore[index]
    assert_label_metrics(revision, probs, y, C)
    # Nothing new: no further revision, however many ticks.
    feed.tick(deadline + 10 * POLICY.label_revision_interval_ms)
    assert len(feed.records(T0)) == 2


def test_refused_labels_are_dead_lettered_by_reason_and_the_rest_join() -> None:
    feed = Feed()
    a = predictions(T0 + 1_000, 30, seed=1, in_call=0.5)
    feed.send(a)
    labelled = np.flatnonzero(a.labels >= 0)  # type: ignore[operator]
    free = np.flatnonzero(a.labels < 0)  # type: ignore[operator]
    good = labels_for(a, free[:6], T0 + 2_000, seed=2)
    feed.send(good)
    ids = np.concatenate([
        free[6:8],  # joins
        free[:2],  # already labelled by `good`
        labelled[:2],  # labelled in the call itself
        free[8:9],  # invalid label below
    ])  # fmt: skip
    mixed = labels_for(a, ids, T0 + 3_000, seed=3)
    mixed.labels = mixed.labels.copy()
    mixed.labels[-1] = C  # out of range
    unknown = np.array([1, 2, 3], np.uint64)
    mixed.prediction_ids = np.concatenate([mixed.prediction_ids, unknown])
    mixed.labels = np.concatenate([mixed.labels, np.zeros(3, np.int32)])
    # a repeated id inside one batch: the first label stays
    mixed.prediction_ids = np.concatenate([mixed.prediction_ids, mixed.prediction_ids[:1]])
    mixed.labels = np.concatenate([mixed.labels, [(mixed.labels[0] + 1) % C]]).astype(np.int32)
    feed.send(mixed)
    reasons = Counter(d.reason for d in feed.table.dead)
    assert reasons == {LABEL_DUPLICATE: 1, LABEL_UNMATCHED: 1, INVALID_BATCH: 1}
    sources = feed.table.outputs.dead_sources
    refused = {
        d.reason: LabelBatch.decode(s.value or b"")
        for d, s in zip(feed.table.dead, sources, strict=True)
    }
    assert refused[LABEL_DUPLICATE].n_rows == 5  # 2 + 2 in-call + the repeat
    assert set(refused[LABEL_UNMATCHED].prediction_ids.tolist()) == {1, 2, 3}
    assert refused[INVALID_BATCH].labels.tolist() == [C]
    assert "outside [0, 3)" in next(d.detail for d in feed.table.dead if d.reason == INVALID_BATCH)
    # A label batch whose width contradicts the agent's classes is refused whole.
    feed.send(labels_for(a, free[10:12], T0 + 4_000, seed=4, n_classes=C + 1))
    assert feed.table.dead[-1].reason == INVALID_BATCH
    assert "n_classes=4" in feed.table.dead[-1].detail
    feed.send(predictions(T0 + WINDOW + 2_000, 5, seed=5))
    [record] = feed.records(T0)
    assert point_values(record)[("labelled_rows", None, ())] == labelled.size + 6 + 2


def test_labels_past_ttl_or_evicted_expire_and_state_is_bounded() -> None:
    policy = WindowPolicy(
        grace_ms=2_000, empty_window_limit=0, label_ttl_ms=3 * WINDOW, max_pending_labels=100
    )
    feed = Feed(policy)
    first = predictions(T0 + 1_000, 40, seed=1)
    feed.send(first)
    for w in range(1, 3):
        feed.send(predictions(T0 + w * WINDOW + 1_000, 40, seed=w + 1))
    labels = feed.manager.agents["agent"].labels
    assert labels is not None
    assert labels.pending.live_rows == 80  # 120 > 100: the oldest batch was evicted
    feed.send(labels_for(first, np.arange(5), T0 + 3 * WINDOW, seed=9))
    assert [d.reason for d in feed.table.dead] == [LABEL_EXPIRED]
    # Much later, everything has expired and is forgotten: no pending, join or label entry left.
    feed.send(predictions(T0 + 10 * WINDOW, 10, seed=20))
    feed.send(predictions(T0 + 20 * WINDOW, 10, seed=21))
    kinds = Counter(parse_key(k)[0] for k in feed.table.data)
    assert kinds["j"] == 0 and kinds["l"] <= 1 and kinds["p"] <= 2  # the two newest batches
    assert labels.pending.live_rows == 10


def test_pending_rows_lookup_matches_a_dict_through_merges_expiry_and_forgetting() -> None:
    rng = np.random.default_rng(7)
    rows, reference = PendingRows(2), {}
    probs_of: dict[int, np.ndarray] = {}
    expired: set[int] = set()
    forgotten: set[int] = set()
    for offset in range(200):
        ids = np.unique(rng.integers(0, 5_000, int(rng.integers(1, 60)), dtype=np.uint64))
        probs = rng.dirichlet(np.ones(2), ids.size).astype(np.float32)
        batch = PendingBatch(offset, offset * 7, offset * 10, ids)
        rows.add(batch, np.zeros(ids.size, np.int16), probs, np.zeros(ids.size, bool))
        for row, i in enumerate(ids.tolist()):
            reference[i] = (offset, row)  # the newest prediction of an id wins (ids collide)
        probs_of[offset] = probs
        expiry = rows.expire_due(offset * 10, ttl_ms=300, max_rows=1_500)
        expired |= {b.offset for b in expiry.expired}
        forgotten |= {b.offset for b in expiry.forgotten}
        probe = rng.integers(0, 5_000, 300, dtype=np.uint64)
        found = rows.lookup(probe)
        live = rows.is_live(np.maximum(found, 0)) & (found >= 0)
        for k, i in enumerate(probe.tolist()):
            want = reference.get(i)
            if want is None or want[0] in forgotten:
                assert found[k] == -1
                continue
            batch_found = rows.batch_of(int(found[k]))
            assert (batch_found.offset, int(found[k]) - batch_found.first_row) == want
            assert live[k] == (want[0] not in expired)
        hits = found[live]
        got_probs, _, windows = rows.data(hits)
        for row, p, w in zip(hits.tolist(), got_probs, windows.tolist(), strict=True):
            batch_found = rows.batch_of(row)
            assert w == batch_found.window_start_ms
            assert (p == probs_of[batch_found.offset][row - batch_found.first_row]).all()
    assert rows.live_rows <= 1_500 and forgotten and expired - forgotten


def _label_messages() -> list[Incoming]:
    """Three windows of predictions with ids; labels for open and closed windows; ticks."""
    messages: list[Incoming] = []

    def add(value: bytes, tick: bool = False) -> None:
        messages.append(Incoming("predictions", 0, len(messages), None, value, 0, tick))

    sent: list[PredictionBatch] = []
    for w in range(3):
        for i in range(3):
            batch = predictions(T0 + w * WINDOW + 2_000 * i, 40, seed=10 * w + i, in_call=0.25)
            batch.max_buffer_size = 50  # reservoir draws matter
            sent.append(batch)
            add(batch.encode())
        own = sent[3 * w + 1]
        free = np.flatnonzero(own.labels < 0)  # type: ignore[operator]
        add(labels_for(own, free[:12], T0 + w * WINDOW + 5_000, seed=100 + w).encode())
        if w:
            old = sent[3 * (w - 1)]
            free = np.flatnonzero(old.labels < 0)  # type: ignore[operator]
            late = labels_for(old, free[5:25], T0 + w * WINDOW + 6_000, seed=200 + w)
            add(late.encode())
            add(str(T0 + w * WINDOW + 9_000).encode(), tick=True)
    add(str(T0 + 3 * WINDOW + 9_000).encode(), tick=True)
    add(str(T0 + 3 * WINDOW + 20_000).encode(), tick=True)
    return messages


def _processor(outputs: MemoryOutputs):
    from tests.stream_app.test_windows import _processor as windows_processor

    processor = windows_processor(outputs)
    processor.policy = POLICY
    for state in processor.partitions.values():
        state.manager.policy = POLICY
    return processor


def _by_revision(outputs: MemoryOutputs) -> dict[tuple[str, int], bytes]:
    out: dict[tuple[str, int], bytes] = {}
    for record, raw in zip(outputs.records, outputs.record_bytes, strict=True):
        key = (record.window_id, record.revision)
        assert out.setdefault(key, raw) == raw  # a re-emission is byte-identical
    return out


@pytest.mark.parametrize("crash_after_writes", range(0, 64, 2))  # 62 writes in all
def test_crash_replay_with_labels_reemits_identical_records_and_revisions(
    crash_after_writes: int,
) -> None:
    messages = _label_messages()
    reference = MemoryOutputs()
    _deliver(_processor(reference), messages, 0, batch=1)
    expected = _by_revision(reference)
    assert sum(1 for _, revision in expected if revision) >= 2
    assert reference.dead == []

    counting = MemoryOutputs()
    _deliver(_processor(counting), messages, 0, batch=2)
    assert _by_revision(counting) == expected  # batching does not change a byte
    crashed = MemoryOutputs(fail_after_state_writes=crash_after_writes % len(counting.state_log[0]))
    with pytest.raises(Crash):
        _deliver(_processor(crashed), messages, 0, batch=2)
    successor = crashed.copy_state()
    processor = _processor(successor)
    cursor = processor.partitions[0].gate.next_offset or 0
    _deliver(processor, messages, max(0, cursor - 3), batch=3)
    got = _by_revision(crashed)
    for key, raw in _by_revision(successor).items():
        assert got.setdefault(key, raw) == raw
    assert got == expected
    assert successor.dead == []  # no label was taken for a duplicate after the replay


def test_labels_for_a_restored_agent_without_pending_rows_are_unmatched_not_fatal() -> None:
    feed = Feed()
    a = predictions(T0 + 1_000, 10, seed=1)
    feed.send(a)
    feed.send(predictions(T0 + WINDOW + 2_000, 5, seed=2))  # closes T0
    feed.send(labels_for(a, np.arange(3), T0 + WINDOW + 2_500, seed=3))  # dirty, not yet due
    kept = {k: v for k, v in feed.table.data.items() if parse_key(k)[0] != "p"}
    successor = WindowManager(0, POLICY)  # the pending entries are gone, the window's stays
    successor.restore(list(kept.items()))
    labels = successor.agents["agent"].labels
    assert labels is not None and labels.pending is None and labels.dirty == {T0}
    table = Table()
    table.execute(successor.on_message(labels_for(a, np.arange(3, 5), T0 + 30_000, 4).encode(), 9))
    assert [d.reason for d in table.dead] == [LABEL_UNMATCHED]
    [revision] = table.records  # the labels joined before still make their revision
    assert revision.revision == 1 and point_values(revision)[("labelled_rows", None, ())] == 3
