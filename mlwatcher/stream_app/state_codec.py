"""How window state is laid out in the worker's changelog topic.

The changelog (a compacted topic with as many partitions as the predictions topic; partition
``p`` holds the state of predictions partition ``p``) holds seven kinds of entries, all keyed by
the predictions-topic partition they belong to:

- ``["d", partition, agent, window_start, batch_id]`` → one applied batch: the source offset
  (replay order), the batch's event time and the :class:`~mlwatcher.metrics.state.StateDelta`
  bytes. Its size grows with the rows that entered the reservoir, never with the buffer size,
  so a window's changelog bytes grow like its reservoir replacements.
- ``["m", partition, agent]`` → :class:`AgentMeta` as JSON: per-agent cursors and the config of
  each open window. Small, written when a window opens or closes.
- ``["r", partition, agent, window_start]`` → the reference profile (drift baseline) made from
  that closed window; the meta entry names the one in use, older ones are deleted.
- ``["p", partition, agent, offset]`` → the prediction rows of the batch at ``offset`` that wait
  for a delayed label (:mod:`~mlwatcher.stream_app.pending`); rewritten with its ids only once
  it expires, deleted once forgotten.
- ``["j", partition, agent, offset]`` → the id hashes the label batch at ``offset`` joined:
  restores which pending rows have a label (a second label for one is a duplicate).
- ``["l", partition, agent, window_start]`` → a window's delayed-label state
  (:class:`~mlwatcher.stream_app.labels.LabelWindow`): the label counters joined so far, the
  offset of the last label batch they count, and its revisions.
- ``["c", partition, ""]`` → the partition's *cursor*: the predictions offset up to which every
  message is applied in the entries before it. It is written after a batch's other entries,
  in the same changelog partition, so a durable cursor implies durable entries; a worker that
  takes the partition over resumes consumption right after it.

Keys are JSON arrays so any agent id (even one containing separators) round-trips.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

DELTA = "d"
META = "m"
REFERENCE = "r"
CURSOR = "c"
PENDING = "p"
JOINED = "j"
LABELS = "l"
_KINDS = (DELTA, META, REFERENCE, CURSOR, PENDING, JOINED, LABELS)

_DELTA_HEADER = struct.Struct("<qq")  # source offset, event time (ms)
_CURSOR = struct.Struct("<q")  # last applied source offset


class StateCodecError(ValueError):
    """A table entry that this version of the worker cannot read."""


def delta_key(partition: int, agent_id: str, window_start_ms: int, batch_id: str) -> bytes:
    return json.dumps([DELTA, partition, agent_id, window_start_ms, batch_id]).encode()


def meta_key(partition: int, agent_id: str) -> bytes:
    return json.dumps([META, partition, agent_id]).encode()


def reference_key(partition: int, agent_id: str, window_start_ms: int) -> bytes:
    return json.dumps([REFERENCE, partition, agent_id, window_start_ms]).encode()


def pending_key(partition: int, agent_id: str, offset: int) -> bytes:
    return json.dumps([PENDING, partition, agent_id, offset]).encode()


def joined_key(partition: int, agent_id: str, offset: int) -> bytes:
    return json.dumps([JOINED, partition, agent_id, offset]).encode()


def labels_key(partition: int, agent_id: str, window_start_ms: int) -> bytes:
    return json.dumps([LABELS, partition, agent_id, window_start_ms]).encode()


def cursor_key(partition: int) -> bytes:
    return json.dumps([CURSOR, partition, ""]).encode()


def pack_cursor(applied_offset: int) -> bytes:
    return _CURSOR.pack(applied_offset)


def unpack_cursor(value: bytes) -> int:
    if len(value) != _CURSOR.size:
        raise StateCodecError(f"cursor entry of {len(value)} bytes, expected {_CURSOR.size}")
    return int(_CURSOR.unpack(value)[0])


def parse_key(key: bytes) -> tuple[str, int, str, list[Any]]:
    """(kind, partition, agent_id, rest) of a table key."""
    try:
        parts = json.loads(key)
        kind, partition, agent_id, *rest = parts
    except (ValueError, TypeError) as exc:
        raise StateCodecError(f"table key {key[:80]!r} is not a worker state key") from exc
    if kind not in _KINDS or not isinstance(partition, int):
        raise StateCodecError(f"table key {key[:80]!r}: unknown kind {kind!r}")
    return kind, partition, agent_id, rest


def pack_delta(source_offset: int, event_time_ms: int, delta_bytes: bytes) -> bytes:
    return _DELTA_HEADER.pack(source_offset, event_time_ms) + delta_bytes


def unpack_delta(value: bytes) -> tuple[int, int, bytes]:
    """(source offset, event time ms, StateDelta bytes)."""
    if len(value) < _DELTA_HEADER.size:
        raise StateCodecError(f"delta entry of {len(value)} bytes is too short")
    offset, event_time_ms = _DELTA_HEADER.unpack_from(value)
    return offset, event_time_ms, value[_DELTA_HEADER.size :]


@dataclass(frozen=True)
class WindowConfig:
    """Everything a window needs besides its rows; fixed by the window's first batch."""

    window_ms: int
    n_classes: int
    n_features: int
    max_buffer_size: int
    categorical_features: tuple[int, ...] = ()
    threshold: float = 0.5
    model_version: str = ""
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int, tuple[int, ...]]:
        """What later batches of the same window must agree with."""
        return (self.n_classes, self.n_features, self.max_buffer_size, self.categorical_features)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowConfig:
        return cls(
            window_ms=int(data["window_ms"]),
            n_classes=int(data["n_classes"]),
            n_features=int(data["n_features"]),
            max_buffer_size=int(data["max_buffer_size"]),
            categorical_features=tuple(int(i) for i in data["categorical_features"]),
            threshold=float(data["threshold"]),
            model_version=str(data["model_version"]),
            class_names=tuple(data["class_names"]),
            feature_names=tuple(data["feature_names"]),
        )


@dataclass
class AgentMeta:
    """Per-agent cursors, persisted whenever a window opens or closes.

        ``handled_offset``: every message of the agent's partition up to this offset has been fully
        applied (a replayed batch at or below it is skipped). ``next_window_ms``: the end of the
        last emitted window; nothing before it is accepted any more. ``last_data_end_ms``: end of
        the latest closed window that had rows (empty windows are emitted for a limited time after
        it). ``reference_window_ms``: the window whose profile is the drift reference of the next
    one. ``latest_config``: the config of the newest batch, used for empty windows.
    """

    agent_id: str
    latest_config: WindowConfig
    stream_time_ms: int = 0
    handled_offset: int = -1
    next_window_ms: int | None = None
    last_data_end_ms: int | None = None
    reference_window_ms: int | None = None
    windows: dict[int, WindowConfig] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["windows"] = {str(start): asdict(cfg) for start, cfg in self.windows.items()}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, value: bytes) -> AgentMeta:
        try:
            data = json.loads(value)
            return cls(
                agent_id=data["agent_id"],
                latest_config=WindowConfig.from_json(data["latest_config"]),
                stream_time_ms=int(data["stream_time_ms"]),
                handled_offset=int(data["handled_offset"]),
                next_window_ms=data["next_window_ms"],
                last_data_end_ms=data["last_data_end_ms"],
                reference_window_ms=data.get("reference_window_ms"),
                windows={
                    int(start): WindowConfig.from_json(cfg)
                    for start, cfg in data["windows"].items()
                },
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateCodecError(f"agent meta entry is not readable: {exc}") from exc
