"""Carries out a batch of :class:`~mlwatcher.stream_app.windows.WindowManager` actions.

One call handles the actions of many input messages of one partition, in two phases:

1. metric records and dead letters are written and acknowledged (one flush);
2. state entries are written in their original order, then the partition's cursor (the last
   input offset the batch covers), then a second flush.

So a window's record is on the broker before any entry that marks it closed, and the cursor
is durable only if every entry before it is (same changelog partition, one idempotent
producer). A crash anywhere leaves a changelog from which a successor resumes after the last
durable cursor and, replaying deterministically, re-emits byte-identical records at worst.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mlwatcher.stream_app.actions import (
    Action,
    BatchApplied,
    DeadLetter,
    DeleteState,
    EmitRecord,
    LabelsCounted,
    PutState,
)
from mlwatcher.stream_app.observability import WorkerStats
from mlwatcher.stream_app.outputs import Outputs, SourceMessage
from mlwatcher.stream_app.state_codec import cursor_key, pack_cursor


@dataclass(frozen=True)
class Step:
    """The actions one input message produced."""

    source: SourceMessage
    actions: Sequence[Action]


class ActionExecutor:
    def __init__(self, outputs: Outputs, stats: WorkerStats | None = None) -> None:
        self.outputs = outputs
        self.stats = stats or WorkerStats()

    def execute(self, partition: int, steps: Sequence[Step], applied_offset: int | None) -> None:
        """Write the steps' effects; with ``applied_offset`` also move the cursor there."""
        outputs, stats = self.outputs, self.stats
        sent_output = False
        for step in steps:
            for action in step.actions:
                if isinstance(action, EmitRecord):
                    record = action.record
                    outputs.emit_record(record.key, record.encode())
                    sent_output = True
                elif isinstance(action, DeadLetter):
                    source = step.source
                    if action.value is not None:
                        source = dataclasses.replace(source, value=action.value)
                    outputs.dead_letter(source, action.reason, action.detail)
                    stats.dead_letters[action.reason] += 1
                    sent_output = True
        if sent_output:
            outputs.flush()
            now = time.time()
            for step in steps:
                for action in step.actions:
                    if isinstance(action, EmitRecord) and action.record.revision:
                        stats.label_revisions += 1
                    elif isinstance(action, EmitRecord):
                        stats.records_emitted += 1
                        if action.record.rows_seen == 0:
                            stats.empty_records_emitted += 1
                        stats.observe_close_delay(max(0.0, now - action.due_ms / 1000))
        wrote_state = False
        for step in steps:
            for action in step.actions:
                if isinstance(action, PutState):
                    outputs.put_state(partition, action.key, action.value)
                    stats.changelog_bytes += len(action.value)
                    wrote_state = True
                elif isinstance(action, DeleteState):
                    outputs.put_state(partition, action.key, None)
                    wrote_state = True
                elif isinstance(action, BatchApplied):
                    stats.batches += 1
                    stats.rows += action.rows
                elif isinstance(action, LabelsCounted):
                    stats.labels.update(action.outcomes)
        if applied_offset is not None:
            outputs.put_state(partition, cursor_key(partition), pack_cursor(applied_offset))
            wrote_state = True
        if wrote_state:
            outputs.flush()
