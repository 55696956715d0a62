"""WindowManager (pure, no Kafka): window lifecycle, late data, empty windows, poison, replay."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable

import numpy as np
import pytest

from mlwatcher.metrics import compute_metrics
from mlwatcher.schemas import MetricRecord, PredictionBatch
from mlwatcher.schemas.codec import MAGIC
from mlwatcher.stream_app.executor import ActionExecutor, Step
from mlwatcher.stream_app.outputs import SourceMessage
from mlwatcher.stream_app.processor import Incoming, OffsetGate, Processor, Verdict
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.state_codec import parse_key
from mlwatcher.stream_app.windows import (
    INVALID_BATCH,
    LATE,
    SHAPE_CHANGED,
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    WINDOW_CHANGED,
    Action,
    DeadLetter,
    WindowManager,
    align,
)
from tests.stream_app.memory_outputs import Crash, MemoryOutputs

WINDOW = 10_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW  # an aligned window start
POLICY = WindowPolicy(grace_ms=2_000, idle_close_delay_ms=1_000, empty_window_limit=3)


def make_batch(
    event_time_ms: int,
    rows: int = 20,
    *,
    agent_id: str = "agent",
    n_classes: int = 3,
    n_features: int = 4,
    window_ms: int = WINDOW,
    buffer: int = 1_000,
    seed: int = 0,
    labels: bool = True,
) -> PredictionBatch:
    rng = np.random.default_rng(seed)
    return PredictionBatch(
        agent_id=agent_id,
        batch_id=uuid.UUID(int=int(rng.integers(2**62)) * 7 + event_time_ms).hex,
        event_time_ms=event_time_ms,
        window_ms=window_ms,
        max_buffer_size=buffer,
        probabilities=rng.dirichlet(np.ones(n_classes), size=rows).astype(np.float32),
        labels=rng.integers(0, n_classes, rows).astype(np.int32) if labels else None,
        features=rng.normal(size=(rows, n_features)) if n_features else None,
    )


class Table:
    """The real ActionExecutor writing to in-memory topics: what a successor would read back."""

    def __init__(self) -> None:
        self.outputs = MemoryOutputs()
        self.executor = ActionExecutor(self.outputs)

    def execute(self, actions: Iterable[Action]) -> None:
        self.executor.execute(0, [Step(NO_SOURCE, list(actions))], None)

    @property
    def data(self) -> dict[bytes, bytes]:
        return self.outputs.table(0)

    @property
    def records(self) -> list[MetricRecord]:
        return self.outputs.records

    @property
    def dead(self) -> list[DeadLetter]:
        return self.outputs.dead


NO_SOURCE = SourceMessage("predictions", 0, -1, None, None)


def feed(manager: WindowManager, table: Table, batches: list[PredictionBatch], first: int = 0):
    for offset, batch in enumerate(batches, start=first):
        table.execute(manager.on_message(batch.encode(), offset))


def test_align_is_epoch_aligned_also_before_1970() -> None:
    assert align(T0 + 1234, WINDOW) == T0
    assert align(-1, WINDOW) == -WINDOW


def test_window_closes_on_stream_time_with_exact_counts_and_metrics() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    batches = [make_batch(T0 + 1_000 * i, seed=i) for i in range(5)]
    feed(manager, table, batches)
    assert table.records == []  # stream time T0+4s < end + grace
    # A batch at end + grace - 1 ms belongs to the next window and does not close the first.
    table.execute(manager.on_message(make_batch(T0 + WINDOW + 1_999, seed=9).encode(), 5))
    assert table.records == []
    table.execute(manager.on_message(make_batch(T0 + WINDOW + 2_000, seed=10).encode(), 6))
    [record] = table.records
    assert (record.window_start_ms, record.window_end_ms) == (T0, T0 + WINDOW)
    assert record.rows_seen == record.rows_sampled == 100
    assert record.batches == 5
    expected = compute_metrics(
        np.concatenate([b.probabilities for b in batches]),
        np.concatenate([b.labels for b in batches]),
        np.concatenate([b.features for b in batches]),
    )
    assert _as_dict(record.points) == pytest.approx(_as_dict(expected), rel=1e-9, abs=1e-12)
    # The emitted window's deltas are gone from the table; the open window's remain.
    kinds = sorted(parse_key(k)[0] for k in table.data)
    assert kinds == ["d", "d", "m", "r"]


def test_late_batch_is_dead_lettered_not_merged() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    feed(manager, table, [make_batch(T0 + 5_000), make_batch(T0 + WINDOW + 2_500, seed=1)])
    assert [r.window_start_ms for r in table.records] == [T0]
    table.execute(manager.on_message(make_batch(T0 + 9_000, seed=2).encode(), 2))
    assert [d.reason for d in table.dead] == [LATE]
    assert "emitted its windows up to" in table.dead[0].detail
    # A batch within grace of a still-open window is accepted.
    table.execute(manager.on_message(make_batch(T0 + WINDOW + 100, seed=3).encode(), 3))
    assert len(table.dead) == 1
    assert manager.agents["agent"].open[T0 + WINDOW].state.rows_seen == 40


def test_quiet_agent_window_closes_on_tick_after_grace_plus_idle_delay() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    feed(manager, table, [make_batch(T0 + 1_000)])
    deadline = T0 + WINDOW + 2_000 + 1_000
    assert manager.next_wall_deadline_ms() == deadline
    table.execute(manager.on_tick(deadline - 1, 1))
    assert table.records == []
    table.execute(manager.on_tick(deadline, 2))
    assert [r.rows_seen for r in table.records] == [20]


def test_empty_windows_between_active_windows_and_limited_after_the_last() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    feed(manager, table, [make_batch(T0 + 1_000), make_batch(T0 + 3 * WINDOW + 1_000, seed=1)])
    table.execute(manager.on_tick(T0 + 100 * WINDOW, 2))
    starts = [(r.window_start_ms - T0) // WINDOW for r in table.records]
    rows = [r.rows_seen for r in table.records]
    # windows 0 and 3 had rows; 1, 2 are empty; after 3, exactly empty_window_limit=3 empties.
    assert starts == [0, 1, 2, 3, 4, 5, 6]
    assert rows == [20, 0, 0, 20, 0, 0, 0]
    empty = table.records[1]
    assert empty.batches == 0 and empty.rows_sampled == 0
    counts = {p.class_name: p.value for p in empty.points if p.what == "prediction_count"}
    assert counts == {"class_0": 0, "class_1": 0, "class_2": 0}
    assert manager.next_wall_deadline_ms() is None  # dormant: no more ticks needed
    # The agent returns much later: no backlog of empty windows, the new window is accepted.
    table.execute(manager.on_message(make_batch(T0 + 200 * WINDOW, seed=2).encode(), 3))
    assert table.dead == []


def test_poison_messages_are_dead_lettered_with_reasons() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    good = make_batch(T0 + 1_000)
    table.execute(manager.on_message(good.encode(), 0))
    table.execute(manager.on_message(b"not avro at all", 1))
    table.execute(manager.on_message(MAGIC + b"\x01" * 8 + b"body", 2))
    table.execute(manager.on_message(good.encode()[:-7], 3))  # truncated
    table.execute(manager.on_message(None, 4))
    table.execute(manager.on_message(make_batch(T0 + 2_000, n_classes=4).encode(), 5))
    table.execute(manager.on_message(make_batch(T0 + 2_000, n_features=5).encode(), 6))
    table.execute(manager.on_message(make_batch(T0 + 2_000, window_ms=20_000).encode(), 7))
    bad_labels = make_batch(T0 + 2_000, seed=3)
    bad_labels.labels = np.full(20, 7, np.int32)
    table.execute(manager.on_message(bad_labels.encode(), 8))
    reasons = [d.reason for d in table.dead]
    assert reasons == [
        UNDECODABLE,
        UNKNOWN_SCHEMA,
        UNDECODABLE,
        UNDECODABLE,
        SHAPE_CHANGED,
        SHAPE_CHANGED,
        WINDOW_CHANGED,
        INVALID_BATCH,
    ]
    assert "n_classes" in table.dead[4].detail
    assert "labels" in table.dead[7].detail
    # Nothing of the poison reached the window.
    assert manager.agents["agent"].open[T0].state.rows_seen == 20
    # Shape and window length may change in a new window.
    table.execute(manager.on_message(make_batch(T0 + WINDOW + 2_500, n_classes=4).encode(), 9))
    assert len(table.dead) == 8 and len(table.records) == 1


def test_duplicate_batch_id_is_applied_once() -> None:
    manager, table = WindowManager(0, POLICY), Table()
    batch = make_batch(T0 + 1_000)
    feed(manager, table, [batch, batch])
    assert manager.agents["agent"].open[T0].state.rows_seen == 20


def _run(messages: list[tuple[str, object]], manager: WindowManager, table: Table, start: int):
    for offset in range(start, len(messages)):
        kind, payload = messages[offset]
        if kind == "tick":
            table.execute(manager.on_tick(int(payload), offset))  # type: ignore[call-overload]
        else:
            table.execute(manager.on_message(payload, offset))  # type: ignore[arg-type]


def _messages() -> list[Incoming]:
    """Three windows of 4 batches that overflow the buffer (reservoir draws matter), ticks."""
    messages: list[Incoming] = []

    def add(value: bytes, tick: bool) -> None:
        messages.append(Incoming("predictions", 0, len(messages), None, value, 0, tick))

    for window in range(3):
        for i in range(4):
            batch = make_batch(
                T0 + window * WINDOW + 2_000 * i, rows=60, buffer=50, seed=window * 10 + i
            )
            add(batch.encode(), False)
        add(str(T0 + window * WINDOW + 1_000).encode(), True)
    add(str(T0 + 10 * WINDOW).encode(), True)
    return messages


def _processor(outputs: MemoryOutputs, committed: int | None = None) -> Processor:
    processor = Processor(
        outputs,
        outputs.recover,
        outputs.end_offsets,
        policy=POLICY,
        last_written=outputs.last_written,
        committed=lambda partitions: {} if committed is None else {0: committed},
    )
    processor.assign([0])
    processor.recover_pending()
    return processor


def _deliver(processor: Processor, messages: list[Incoming], start: int, batch: int) -> int:
    """What the consumer does: deliver from ``start`` in batches, honouring seeks, and ack
    every delivered offset after its batch. Returns the offset it can commit at the end:
    like Faust's, commits advance only through acks without a hole after the committed
    offset (``Consumer._new_offset``)."""
    position = start
    acked: set[int] = set()
    for _, offset in processor.take_seeks():  # the timer hands these over after a recovery
        position = offset
    while position < len(messages):
        delivered = messages[position : position + batch]
        seeks = processor.process(delivered)
        acked.update(m.offset for m in delivered)
        position += batch
        if seeks:
            [(_, position)] = seeks
    commit = start
    while commit in acked:
        commit += 1
    return commit


@pytest.mark.parametrize("crash_after_writes", range(0, 60, 3))
@pytest.mark.parametrize("redelivery", ["behind", "ahead"])
def test_crash_replay_reemits_identical_records(
    crash_after_writes: int, redelivery: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker dies after an arbitrary prefix of its state writes; its successor recovers
    that prefix, the consumer redelivers from the group's committed offset (behind the cursor,
    or ahead of it, which must not lose anything) and every record comes out with the same
    bytes."""
    messages = _messages()
    reference = MemoryOutputs()
    _deliver(_processor(reference), messages, 0, batch=1)
    expected = {
        r.window_id: b for r, b in zip(reference.records, reference.record_bytes, strict=True)
    }
    assert len(expected) == 3 + POLICY.empty_window_limit

    counting = MemoryOutputs()
    _deliver(_processor(counting), messages, 0, batch=2)
    total_writes = len(counting.state_log[0])
    crashed = MemoryOutputs(fail_after_state_writes=crash_after_writes % total_writes)
    with pytest.raises(Crash):
        _deliver(_processor(crashed), messages, 0, batch=2)
    cursor = _processor(crashed.copy_state()).partitions[0].gate.next_offset or 0

    # Offsets are committed only after a cursor covers them, so without a cursor nothing is.
    if redelivery == "behind" or cursor == 0:
        committed = max(0, cursor - 3)
    else:  # a consumer that committed messages it skipped (after a rebalance) is ahead
        committed = min(len(messages), cursor + 3)

    successor = crashed.copy_state()
    commit = _deliver(_processor(successor, committed), messages, committed, batch=3)
    assert commit == len(messages)  # the successor's commits reach the end: no stall
    got = {r.window_id: b for r, b in zip(crashed.records, crashed.record_bytes, strict=True)}
    for record, raw in zip(successor.records, successor.record_bytes, strict=True):
        assert raw == expected[record.window_id]  # a re-emission is byte-identical
        got[record.window_id] = raw
    assert got == expected
    assert successor.dead == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # Nothing stale is left once everything is emitted: the cursor, the meta, the last reference.
    assert sorted(parse_key(k)[0] for k in successor.table(0)) == ["c", "m", "r"]


def test_offset_gate_admits_each_offset_once_and_seeks_back_over_a_gap() -> None:
    gate = OffsetGate(applied_offset=9)
    assert [gate.admit(o) for o in (8, 9)] == [Verdict.SKIP, Verdict.SKIP]  # redelivered
    assert gate.admit(10) is Verdict.PROCESS
    assert gate.admit(13) is Verdict.SEEK and gate.next_offset == 11  # 11, 12 never applied
    assert [gate.admit(o) for o in (14, 15)] == [Verdict.SKIP, Verdict.SKIP]  # fetched before
    assert [gate.admit(o) for o in (11, 12, 13, 14)] == [Verdict.PROCESS] * 4  # the re-read
    hole = OffsetGate(applied_offset=4)
    assert hole.admit(7) is Verdict.SEEK
    assert hole.admit(7) is Verdict.PROCESS  # the re-read starts at 7: offsets 5, 6 do not exist
    assert OffsetGate(None).admit(42) is Verdict.PROCESS  # no cursor: trust the group offset


def test_reassigned_partition_keeps_memory_only_if_nobody_else_wrote() -> None:
    messages = _messages()[:5]
    outputs = MemoryOutputs()
    processor = _processor(outputs)
    processor.process(messages[:3])
    held = processor.partitions[0]
    processor.revoke([0])
    processor.assign([0])
    assert processor.partitions[0] is held and not processor.pending_recovery
    processor.revoke([0])
    other = _processor(outputs.another_producer())  # another worker owned it meanwhile
    other.process(messages[3:5])
    processor.assign([0])
    assert processor.pending_recovery == {0}
    processor.recover_pending()
    assert processor.partitions[0].gate.next_offset == 5


def test_changelog_bytes_grow_like_reservoir_replacements() -> None:
    """Deltas hold only rows that entered the reservoir: about buffer*(1+ln(rows/buffer))."""
    buffer, rows_per_batch, n_batches, n_features = 500, 500, 200, 20
    manager, table = WindowManager(0, POLICY), Table()
    for i in range(n_batches):
        batch = make_batch(
            T0 + i * 10,
            rows=rows_per_batch,
            n_classes=10,
            n_features=n_features,
            buffer=buffer,
            seed=i,
        )
        table.execute(manager.on_message(batch.encode(), i))
    delta_bytes = sum(
        len(value) for key, value in table.outputs.state_log[0] if key.startswith(b'["d"') and value
    )
    rows = rows_per_batch * n_batches
    expected_rows = buffer * (1 + math.log(rows / buffer))
    row_bytes = 10 * 8 + 8 + n_features * 8 + 8  # probs, label, features, slot
    full_rewrite = n_batches * buffer * row_bytes
    assert delta_bytes < 1.5 * expected_rows * row_bytes + n_batches * 4_000
    # each delta also carries fixed-size counters (~2.9 KB here: confusion, expected
    # confusion, confidence bins per class, reliability bins), hence 15 rather than 20
    assert delta_bytes < full_rewrite / 15


def _as_dict(points) -> dict:
    return {
        (p.what, p.class_name, p.feat_name, p.stat, tuple(sorted(p.extra.items()))): p.value
        for p in points
    }


def test_ticks_go_only_to_owned_partitions_with_a_due_window_at_most_once_a_second() -> None:
    outputs = MemoryOutputs()
    processor = _processor(outputs)
    processor.process([Incoming("predictions", 0, 0, None, make_batch(T0 + 1_000).encode(), 0)])
    due_s = (T0 + WINDOW + POLICY.grace_for(WINDOW) + POLICY.idle_close_delay_ms) / 1000
    assert processor.partitions_due_a_tick(due_s - 0.001) == []
    assert processor.partitions_due_a_tick(due_s) == [0]
    assert processor.partitions_due_a_tick(due_s + 0.5) == []  # one in flight
    assert processor.partitions_due_a_tick(due_s + 1.0) == [0]
    processor.revoke([0])
    assert processor.partitions_due_a_tick(due_s + 5.0) == []
