"""What the pure window logic asks the worker to do, in order, and why input is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlwatcher.schemas import MetricRecord

# Dead-letter reasons (the ``mlwatcher.reason`` header, see docs/dead_letters.md).
UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown-schema"
LATE = "late"
SHAPE_CHANGED = "shape-changed"
WINDOW_CHANGED = "window-changed"
INVALID_BATCH = "invalid-batch"
LABEL_UNMATCHED = "label-unmatched"
LABEL_EXPIRED = "label-expired"
LABEL_DUPLICATE = "label-duplicate"


@dataclass(frozen=True)
class PutState:
    key: bytes
    value: bytes


@dataclass(frozen=True)
class DeleteState:
    key: bytes


@dataclass(frozen=True)
class EmitRecord:
    """Send ``record`` to the metrics topic (and wait for it) before the actions that follow."""

    record: MetricRecord
    due_ms: int  # window end + grace (revision 0), or when the revision fell due


@dataclass(frozen=True)
class DeadLetter:
    """Dead-letter the input message, or ``value`` in its place (e.g. the refused labels of a
    label batch whose other labels were joined)."""

    reason: str
    detail: str
    value: bytes | None = None


@dataclass(frozen=True)
class BatchApplied:
    """Informational: a batch's rows entered a window."""

    agent_id: str
    rows: int


@dataclass(frozen=True)
class LabelsCounted:
    """Informational: what became of a label batch's labels (``joined`` or a reason)."""

    outcomes: Mapping[str, int]


Action = PutState | DeleteState | EmitRecord | DeadLetter | BatchApplied | LabelsCounted
