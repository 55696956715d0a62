"""The Parquet layout of metric points (pure: records in, Arrow tables and names out).

The one schema of the metrics data set, whoever writes it (the Parquet sink, the offline demo,
any future writer: they all fill a :class:`ColumnBuffer`). Long format, one row per point, in
hive partitions ``agent_id=<percent-encoded>/date=YYYY-MM-DD``. ``agent_id`` and ``date`` live
only in the directory names, so every hive reader (pandas, ``pyarrow.dataset(partitioning=
"hive")``, DuckDB ``hive_partitioning=true``, polars ``hive_partitioning=True``) gets them as
columns without a type clash; ``extra`` is a JSON object string (``{}`` when empty), which
they all read as a plain string (DuckDB: ``extra->>'value'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from mlwatcher.schemas import MetricRecord
from mlwatcher.schemas.point_columns import TARGET_TYPES, PointColumns, concat

#: schema version, in the files' key-value metadata (version 1 stored agent_id in the files;
#: version 2 had no ``revision`` column: its rows are all revision 0)
SCHEMA_VERSION = "3"

SCHEMA = pa.schema(
    [
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
        # 0: the window's record at close; n >= 1: its n-th label revision (label points only)
        pa.field("revision", pa.int32(), nullable=False),
    ],
    metadata={"mlwatcher.schema_version": SCHEMA_VERSION},
)

#: the hive directory columns; tell a reader when agent ids look like numbers ("01" is no int)
PARTITION_SCHEMA = pa.schema([("agent_id", pa.string()), ("date", pa.date32())])


def hive_partitioning() -> ds.PartitioningFactory:
    """How our readers (report, replay) open the data set: ``agent_id`` as a string
    dictionary (never inferred as a number; also merges with the ``agent_id`` column that
    version 1 files held), ``date`` as a string."""
    return ds.HivePartitioning.discover(
        schema=pa.schema(
            [("agent_id", pa.dictionary(pa.int32(), pa.string())), ("date", pa.string())]
        )
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


@dataclass
class ColumnBuffer:
    """The points of one agent and one UTC day, gathered record by record as columns."""

    agent_id: str
    parts: list[PointColumns] = field(default_factory=list)
    window_start: list[np.ndarray] = field(default_factory=list)
    window_end: list[np.ndarray] = field(default_factory=list)
    rows_seen: list[np.ndarray] = field(default_factory=list)
    rows_sampled: list[np.ndarray] = field(default_factory=list)
    model_version: list[str] = field(default_factory=list)
    revision: list[np.ndarray] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(self.counts)

    def add_record(self, header: dict[str, Any], points: PointColumns) -> int:
        """Append the points of one decoded metric record; returns rows added."""
        n = len(points)
        if n == 0:
            return 0
        self.parts.append(points)
        self.counts.append(n)
        self.window_start.append(np.full(n, epoch_ms(header["window_start_ms"]), np.int64))
        self.window_end.append(np.full(n, epoch_ms(header["window_end_ms"]), np.int64))
        self.rows_seen.append(np.full(n, header["rows_seen"], np.int64))
        self.rows_sampled.append(np.full(n, header["rows_sampled"], np.int64))
        self.model_version.append(header["model_version"])
        self.revision.append(np.full(n, header.get("revision", 0), np.int32))
        return n

    def add_metric_record(self, record: MetricRecord) -> int:
        """Append a MetricRecord object (writers that hold records, not their Avro bytes)."""
        if record.agent_id != self.agent_id:
            raise ValueError(f"record of agent {record.agent_id!r} in {self.agent_id!r}'s buffer")
        header = {
            "window_start_ms": record.window_start_ms,
            "window_end_ms": record.window_end_ms,
            "rows_seen": record.rows_seen,
            "rows_sampled": record.rows_sampled,
            "model_version": record.model_version,
            "revision": record.revision,
        }
        return self.add_record(header, PointColumns.from_points(record.points))

    def to_table(self) -> pa.Table:
        points = concat(self.parts)
        versions = sorted(set(self.model_version))
        version_index = np.repeat(
            [versions.index(v) for v in self.model_version], self.counts
        ).astype(np.int32)
        strings = pa.array(points.strings, pa.string())

        def text(indices: np.ndarray) -> pa.Array:
            # Dictionary-decoding in Arrow's C++ is far faster than building Python strings.
            return pa.DictionaryArray.from_arrays(
                pa.array(indices, pa.int32(), mask=indices < 0), strings
            ).dictionary_decode()

        extra = text(points.extra).fill_null("{}")
        columns = [
            pa.array(np.concatenate(self.window_start), SCHEMA.field("window_start").type),
            pa.array(np.concatenate(self.window_end), SCHEMA.field("window_end").type),
            text(points.what),
            text(points.class_name),
            text(points.feat_name),
            text(points.stat),
            pa.DictionaryArray.from_arrays(
                pa.array(points.target_type.astype(np.int32)), pa.array(list(TARGET_TYPES))
            ).dictionary_decode(),
            pa.array(points.value, pa.float64()),
            extra,
            pa.array(np.concatenate(self.rows_seen), pa.int64()),
            pa.array(np.concatenate(self.rows_sampled), pa.int64()),
            pa.DictionaryArray.from_arrays(
                pa.array(version_index), pa.array(versions, pa.string())
            ).dictionary_decode(),
            pa.array(np.concatenate(self.revision), pa.int32()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


#: the columns that identify a window in the data set, with ``what`` the group a revision
#: replaces (a label revision carries every point of the label-dependent ``what``s)
WINDOW_KEY = ("agent_id", "window_start")


def latest_revisions(table: pa.Table) -> pa.Table:
    """The latest state of every window: each ``what`` from the highest revision that has it.

    A label revision n >= 1 carries every label-dependent point of its window recomputed
    over all labels so far, so per (window, ``what``) the highest revision wins: label
    metrics come from the window's latest revision, everything else from revision 0. Exact
    duplicate rows (a re-emission read by two sink processes) are dropped first. The same
    rule as the DuckDB/pandas queries of docs/sinks.md.
    """
    keys = [*WINDOW_KEY, "what"]
    if table.num_rows == 0:
        return table
    table = table.group_by(table.column_names, use_threads=False).aggregate([])
    top = table.group_by(keys, use_threads=False).aggregate([("revision", "max")])
    top = top.rename_columns([*keys, "revision"])
    return table.join(top, [*keys, "revision"], join_type="inner", use_threads=False)
