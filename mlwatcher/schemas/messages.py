"""Typed views of the Avro messages: prediction batches, label batches and metric records."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from mlwatcher.point import Point
from mlwatcher.schemas.codec import SchemaDecodeError, decode, encode, load_schema
from mlwatcher.schemas.point_columns import PointColumns

_DTYPES = {"FLOAT32": np.dtype("<f4"), "FLOAT64": np.dtype("<f8")}
_DTYPE_NAMES = {value: key for key, value in _DTYPES.items()}


def pack_matrix(matrix: np.ndarray) -> dict[str, Any]:
    """Pack a 2-D float32/float64 array as an Avro Matrix (row-major, little-endian)."""
    dtype = matrix.dtype.newbyteorder("<")
    if dtype not in _DTYPE_NAMES:
        raise TypeError(f"matrix dtype must be float32 or float64, got {matrix.dtype}")
    rows, cols = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=dtype).tobytes()
    return {"rows": rows, "cols": cols, "dtype": _DTYPE_NAMES[dtype], "data": data}


def unpack_matrix(packed: dict[str, Any], field_name: str) -> np.ndarray:
    dtype = _DTYPES[packed["dtype"]]
    rows, cols, data = packed["rows"], packed["cols"], packed["data"]
    if rows < 0 or cols < 0 or len(data) != rows * cols * dtype.itemsize:
        raise SchemaDecodeError(
            f"{field_name}: {len(data)} data bytes do not hold a {rows}x{cols} "
            f"{packed['dtype']} matrix ({rows * cols * dtype.itemsize} bytes expected)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(rows, cols)


@dataclass
class PredictionBatch:
    """One batch of predictions as it travels on the predictions topic."""

    agent_id: str
    batch_id: str
    event_time_ms: int
    window_ms: int
    max_buffer_size: int
    probabilities: np.ndarray  # (n_rows, n_classes) float32
    threshold: float = 0.5
    model_version: str = ""
    class_names: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # (n_rows,) int32, -1 = no label
    features: np.ndarray | None = None  # (n_rows, n_features) float32/float64
    feature_names: list[str] = field(default_factory=list)
    categorical_features: list[int] = field(default_factory=list)
    prediction_ids: np.ndarray | None = None  # (n_rows,) uint64 id hashes

    @property
    def n_rows(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.probabilities.shape[1])

    @property
    def n_features(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def to_avro(self) -> dict[str, Any]:
        labels = None
        if self.labels is not None:
            labels = np.ascontiguousarray(self.labels, dtype="<i4").tobytes()
        return {
            "agent_id": self.agent_id,
            "model_version": self.model_version,
            "batch_id": self.batch_id,
            "event_time_ms": int(self.event_time_ms),
            "window_ms": int(self.window_ms),
            "max_buffer_size": int(self.max_buffer_size),
            "n_rows": self.n_rows,
            "n_classes": self.n_classes,
            "threshold": float(self.threshold),
            "class_names": list(self.class_names),
            "probabilities": pack_matrix(self.probabilities),
            "labels": labels,
            "features": None if self.features is None else pack_matrix(self.features),
            "feature_names": list(self.feature_names),
            "categorical_features": [int(i) for i in self.categorical_features],
            "prediction_ids": _pack_ids(self.prediction_ids),
        }

    def encode(self) -> bytes:
        return encode(load_schema("prediction_batch"), self.to_avro())

    @classmethod
    def decode(cls, message: bytes) -> PredictionBatch:
        """Decode and check internal consistency; SchemaDecodeError names the bad field."""
        record = decode(load_schema("prediction_batch"), message)
        n_rows, n_classes = record["n_rows"], record["n_classes"]
        probabilities = unpack_matrix(record["probabilities"], "probabilities")
        if probabilities.shape != (n_rows, n_classes):
            raise SchemaDecodeError(
                f"probabilities: shape {probabilities.shape} contradicts "
                f"n_rows={n_rows}, n_classes={n_classes}"
            )
        labels = None
        if record["labels"] is not None:
            if len(record["labels"]) != 4 * n_rows:
                raise SchemaDecodeError(
                    f"labels: {len(record['labels'])} bytes, expected {4 * n_rows} "
                    f"(n_rows={n_rows} int32 values)"
                )
            labels = np.frombuffer(record["labels"], dtype="<i4")
        features = None
        if record["features"] is not None:
            features = unpack_matrix(record["features"], "features")
            if features.shape[0] != n_rows:
                raise SchemaDecodeError(
                    f"features: {features.shape[0]} rows, expected n_rows={n_rows}"
                )
        prediction_ids = None
        if record["prediction_ids"] is not None:
            prediction_ids = _unpack_ids(record["prediction_ids"], n_rows, "prediction_ids")
        if record["window_ms"] <= 0:
            raise SchemaDecodeError(f"window_ms: must be > 0, got {record['window_ms']}")
        if record["max_buffer_size"] <= 0:
            raise SchemaDecodeError(
                f"max_buffer_size: must be > 0, got {record['max_buffer_size']}"
            )
        return cls(
            agent_id=record["agent_id"],
            batch_id=record["batch_id"],
            event_time_ms=_epoch_ms(record["event_time_ms"]),
            window_ms=record["window_ms"],
            max_buffer_size=record["max_buffer_size"],
            probabilities=probabilities,
            threshold=record["threshold"],
            model_version=record["model_version"],
            class_names=record["class_names"],
            labels=labels,
            features=features,
            feature_names=record["feature_names"],
            categorical_features=record["categorical_features"],
            prediction_ids=prediction_ids,
        )


@dataclass
class LabelBatch:
    """True labels sent after their predictions, as they travel on the predictions topic."""

    agent_id: str
    batch_id: str
    sent_time_ms: int
    prediction_ids: np.ndarray  # (n_rows,) uint64 id hashes
    labels: np.ndarray  # (n_rows,) int32 class indices
    n_classes: int = 0  # 0: not known to the sender

    @property
    def n_rows(self) -> int:
        return int(self.prediction_ids.shape[0])

    @property
    def key(self) -> bytes:
        """The agent, as for its prediction batches: same partition, after its predictions."""
        return self.agent_id.encode()

    def to_avro(self) -> dict[str, Any]:
        if self.labels.shape != self.prediction_ids.shape:
            raise ValueError(
                f"labels: {self.labels.shape[0]} labels for {self.n_rows} prediction ids"
            )
        return {
            "agent_id": self.agent_id,
            "batch_id": self.batch_id,
            "sent_time_ms": int(self.sent_time_ms),
            "n_rows": self.n_rows,
            "n_classes": int(self.n_classes),
            "prediction_ids": _pack_ids(self.prediction_ids),
            "labels": np.ascontiguousarray(self.labels, dtype="<i4").tobytes(),
        }

    def encode(self) -> bytes:
        return encode(load_schema("label_batch"), self.to_avro())

    @classmethod
    def decode(cls, message: bytes) -> LabelBatch:
        """Decode and check internal consistency; SchemaDecodeError names the bad field."""
        record = decode(load_schema("label_batch"), message)
        n_rows = record["n_rows"]
        if n_rows < 0 or record["n_classes"] < 0:
            raise SchemaDecodeError(
                f"n_rows/n_classes: must be >= 0, got {n_rows}/{record['n_classes']}"
            )
        ids = _unpack_ids(record["prediction_ids"], n_rows, "prediction_ids")
        if len(record["labels"]) != 4 * n_rows:
            raise SchemaDecodeError(
                f"labels: {len(record['labels'])} bytes, expected {4 * n_rows} "
                f"(n_rows={n_rows} int32 values)"
            )
        return cls(
            agent_id=record["agent_id"],
            batch_id=record["batch_id"],
            sent_time_ms=_epoch_ms(record["sent_time_ms"]),
            prediction_ids=ids,
            labels=np.frombuffer(record["labels"], dtype="<i4"),
            n_classes=record["n_classes"],
        )


#: The label-dependent ``what``s: a label revision (``MetricRecord.revision`` >= 1) carries
#: every point of these, recomputed over all labels joined to its window so far, and no other
#: (``mlwatcher.metrics.compute.label_points``; a test keeps the two in step).
LABEL_WHATS = frozenset(
    {
        "labelled_rows",
        "label_count",
        "label_freq",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "overall_accuracy",
        "overall_accuracy_stderr",
        "confusion_count",
        "log_loss",
        "brier_score",
        "expected_calibration_error",
        "calibration_bin_rows",
        "calibration_bin_confidence",
        "calibration_bin_accuracy",
    }
)


class _RecordPoints:
    """``MetricRecord.points``: a field (``dataclasses.replace`` and ``==`` see a list of
    points) that a record made of columns decodes only when someone reads it."""

    def __get__(self, record: MetricRecord | None, owner: type | None = None) -> Any:
        if record is None:
            return None  # the field's default: give points or columns
        if record._points is None and record._columns is not None:
            record._points, record._columns = record._columns.to_points(), None
        return record._points

    def __set__(self, record: MetricRecord, points: list[Point] | None) -> None:
        record._points = points
        if points is not None:
            record._columns = None


@dataclass
class MetricRecord:
    """The metrics of one agent for one closed window, as on the metrics topic.

    Its points are given either as ``points`` (a list of :class:`Point`) or, by the window
    close, as ``columns`` (:class:`PointColumns`, encoded as they are, without one object
    per point). ``record.points`` always works: for a record made of columns it decodes them
    once into a list, which from then on is the record's content (changes are encoded).
    """

    agent_id: str
    window_start_ms: int
    window_end_ms: int
    rows_seen: int
    rows_sampled: int
    points: list[Point] = _RecordPoints()  # type: ignore[assignment]
    batches: int = 0
    model_version: str = ""
    revision: int = 0  # 0: the record at close; n >= 1: the n-th label revision
    columns: InitVar[PointColumns | None] = None
    # storage behind ``points`` (class defaults, not fields: __init__ must not reset them)
    _points = None
    _columns = None

    def __post_init__(self, columns: PointColumns | None) -> None:
        if (self._points is None) == (columns is None):
            raise TypeError("MetricRecord: give exactly one of points= and columns=")
        if columns is not None:
            self._columns = columns

    def point_columns(self) -> PointColumns:
        """The points as columns (built from ``points`` when the record holds a list)."""
        if self._columns is not None:
            return self._columns
        return PointColumns.from_points(self.points)

    @property
    def key(self) -> bytes:
        """Kafka key: the agent, so all of an agent's records share one partition and sinks see
        its windows in order. A re-emitted record has the same key and content; de-duplicate on
        ``window_id``."""
        return self.agent_id.encode()

    @property
    def window_id(self) -> str:
        return window_id(self.agent_id, self.window_start_ms)

    def to_avro(self) -> dict[str, Any]:
        return {**self._header(), "points": self.point_columns().to_avro()}

    def _header(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "model_version": self.model_version,
            "window_start_ms": int(self.window_start_ms),
            "window_end_ms": int(self.window_end_ms),
            "rows_seen": int(self.rows_seen),
            "rows_sampled": int(self.rows_sampled),
            "batches": int(self.batches),
            "revision": int(self.revision),
        }

    def encode(self) -> bytes:
        return encode(load_schema("metric_record"), self.to_avro())

    @classmethod
    def decode(cls, message: bytes) -> MetricRecord:
        header, columns = cls.decode_columns(message)
        return cls(points=columns.to_points(), **header)

    @staticmethod
    def decode_columns(message: bytes) -> tuple[dict[str, Any], PointColumns]:
        """Fast path for bulk consumers: the record's fields and its points as columns."""
        record = decode(load_schema("metric_record"), message)
        columns = PointColumns.from_avro(record.pop("points"))
        record["window_start_ms"] = _epoch_ms(record["window_start_ms"])
        record["window_end_ms"] = _epoch_ms(record["window_end_ms"])
        return record, columns


def _pack_ids(ids: np.ndarray | None) -> bytes | None:
    return None if ids is None else np.ascontiguousarray(ids, dtype="<u8").tobytes()


def _unpack_ids(data: bytes, n_rows: int, field_name: str) -> np.ndarray:
    if len(data) != 8 * n_rows:
        raise SchemaDecodeError(
            f"{field_name}: {len(data)} bytes, expected {8 * n_rows} "
            f"(n_rows={n_rows} uint64 values)"
        )
    return np.frombuffer(data, dtype="<u8")


def window_id(agent_id: str, window_start_ms: int) -> str:
    """Identifies a window across re-emissions: ``agent_id|window_start_ms``."""
    return f"{agent_id}|{window_start_ms}"


def _epoch_ms(value: Any) -> int:
    """fastavro turns timestamp-millis into datetimes when reading; we keep epoch ms."""
    if isinstance(value, int):
        return value
    return round(value.timestamp() * 1000)
