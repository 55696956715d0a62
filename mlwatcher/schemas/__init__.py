"""The Avro contract between MLWatcher processes (``*.avsc`` files beside this module)."""

from mlwatcher.schemas.codec import SchemaDecodeError, decode, encode, load_schema
from mlwatcher.schemas.messages import LabelBatch, MetricRecord, PredictionBatch
from mlwatcher.schemas.point_columns import PointColumns

__all__ = [
    "LabelBatch",
    "MetricRecord",
    "PointColumns",
    "PredictionBatch",
    "SchemaDecodeError",
    "decode",
    "encode",
    "load_schema",
]
