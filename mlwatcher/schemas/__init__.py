"""The Avro contract between MLWatcher processes (``*.avsc`` files beside this module)."""

from mlwatcher.schemas.codec import SchemaDecodeError, decode, encode, load_schema
from mlwatcher.schemas.messages import MetricRecord, PredictionBatch

__all__ = [
    "MetricRecord",
    "PredictionBatch",
    "SchemaDecodeError",
    "decode",
    "encode",
    "load_schema",
]
