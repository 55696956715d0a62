"""The Parquet layout of metric points (pure: records in, Arrow tables and names out).

Long format, one row per point. ``agent_id`` is dictionary-encoded in the files so that
pyarrow and pandas can merge it with the ``agent_id=...`` hive directory without a type
clash; ``extra`` is a JSON object string (``{}`` when empty), which pandas, pyarrow and
DuckDB all read as a plain string (DuckDB: ``extra->>'value'``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pyarrow as pa

SCHEMA = pa.schema(
    [
        pa.field("agent_id", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("window_start", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("what", pa.string(), nullable=False),
        pa.field("class_name", pa.string()),
        pa.field("feat_name", pa.string()),
        pa.field("stat", pa.string()),
        pa.field("target_type", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("extra", pa.string(), nullable=False),
        pa.field("rows_seen", pa.int64(), nullable=False),
        pa.field("rows_sampled", pa.int64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

_FILE_NAME = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")


@dataclass(frozen=True)
class FileRange:
    """What a data file holds: records ``first..last`` (inclusive) of one topic partition."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def file_name(self) -> str:
        return f"{self.topic}-{self.partition}-{self.first:020d}-{self.last:020d}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileRange | None:
        """The range of a data file name, or None for any other file."""
        match = _FILE_NAME.match(name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def partition_dir(agent_id: str, window_start_ms: int) -> str:
    """``agent_id=<percent-encoded>/date=YYYY-MM-DD`` (UTC date of the window start)."""
    day = datetime.fromtimestamp(window_start_ms / 1000, tz=UTC).date().isoformat()
    return f"agent_id={quote(agent_id, safe='')}/date={day}"


def epoch_ms(value: Any) -> int:
    """fastavro hands timestamp-millis back as aware datetimes; we keep integers."""
    if isinstance(value, int):
        return value
    return round(value.timestamp() * 1000)


def _extra_json(extra: dict[str, str]) -> str:
    return json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else "{}"


@dataclass
class ColumnBuffer:
    """Columns of the rows of one agent and one UTC day, filled record by record."""

    agent_id: str
    window_start: list[int] = field(default_factory=list)
    window_end: list[int] = field(default_factory=list)
    what: list[str] = field(default_factory=list)
    class_name: list[str | None] = field(default_factory=list)
    feat_name: list[str | None] = field(default_factory=list)
    stat: list[str | None] = field(default_factory=list)
    target_type: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    rows_seen: list[int] = field(default_factory=list)
    rows_sampled: list[int] = field(default_factory=list)
    model_version: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.value)

    def add_record(self, record: dict[str, Any]) -> int:
        """Append the points of one decoded metric record (fastavro dict); returns rows added."""
        points = record["points"]
        n = len(points)
        if n == 0:
            return 0
        self.window_start.extend([epoch_ms(record["window_start_ms"])] * n)
        self.window_end.extend([epoch_ms(record["window_end_ms"])] * n)
        self.rows_seen.extend([record["rows_seen"]] * n)
        self.rows_sampled.extend([record["rows_sampled"]] * n)
        self.model_version.extend([record["model_version"]] * n)
        self.what.extend([p["what"] for p in points])
        self.class_name.extend([p["class_name"] for p in points])
        self.feat_name.extend([p["feat_name"] for p in points])
        self.stat.extend([p["stat"] for p in points])
        self.target_type.extend([p["target_type"] for p in points])
        self.value.extend([p["value"] for p in points])
        self.extra.extend([_extra_json(p["extra"]) for p in points])
        return n

    def to_table(self) -> pa.Table:
        n = len(self)
        agent = pa.DictionaryArray.from_arrays(
            pa.array([0] * n, pa.int32()), pa.array([self.agent_id], pa.string())
        )
        columns = [
            agent,
            pa.array(self.window_start, SCHEMA.field("window_start").type),
            pa.array(self.window_end, SCHEMA.field("window_end").type),
            pa.array(self.what, pa.string()),
            pa.array(self.class_name, pa.string()),
            pa.array(self.feat_name, pa.string()),
            pa.array(self.stat, pa.string()),
            pa.array(self.target_type, pa.string()),
            pa.array(self.value, pa.float64()),
            pa.array(self.extra, pa.string()),
            pa.array(self.rows_seen, pa.int64()),
            pa.array(self.rows_sampled, pa.int64()),
            pa.array(self.model_version, pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)
