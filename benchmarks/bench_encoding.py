"""Which matrix encoding for the prediction batch: Avro float arrays or packed float32 bytes?

Both variants are real fastavro encodings of the same 1000x10 (+1000x20 features) batch; the
packed layout is the one in ``mlwatcher/schemas/prediction_batch.avsc``.
"""

from __future__ import annotations

import io
import json

import fastavro
import numpy as np

from benchmarks._common import median, print_table, time_calls
from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord, PredictionBatch

ARRAY_SCHEMA = fastavro.parse_schema(
    json.loads(
        """{"type": "record", "name": "ArrayBatch", "fields": [
      {"name": "agent_id", "type": "string"},
      {"name": "probabilities", "type": {"type": "array", "items": "float"}},
      {"name": "features", "type": {"type": "array", "items": "float"}}]}"""
    )
)


def _packed(proba: np.ndarray, features: np.ndarray) -> tuple[bytes, object, object]:
    batch = PredictionBatch(
        agent_id="bench",
        batch_id="x" * 32,
        event_time_ms=0,
        window_ms=60_000,
        max_buffer_size=500,
        probabilities=proba,
        features=features,
    )
    message = batch.encode()
    return message, batch.encode, lambda: PredictionBatch.decode(message)


def _arrays(proba: np.ndarray, features: np.ndarray) -> tuple[bytes, object, object]:
    def encode() -> bytes:
        buffer = io.BytesIO()
        record = {
            "agent_id": "bench",
            "probabilities": proba.ravel().tolist(),
            "features": features.ravel().tolist(),
        }
        fastavro.schemaless_writer(buffer, ARRAY_SCHEMA, record)
        return buffer.getvalue()

    message = encode()

    def decode() -> object:
        record = fastavro.schemaless_reader(io.BytesIO(message), ARRAY_SCHEMA)
        return np.asarray(record["probabilities"], dtype=np.float32).reshape(proba.shape)

    return message, encode, decode


POINT_RECORDS_SCHEMA = fastavro.parse_schema(
    json.loads(
        """{"type": "record", "name": "PointRecords", "fields": [
      {"name": "points", "type": {"type": "array", "items": {
        "type": "record", "name": "P", "fields": [
          {"name": "what", "type": "string"},
          {"name": "target_type", "type": {"type": "enum", "name": "T",
                                           "symbols": ["gauge", "counter"]}},
          {"name": "value", "type": "double"},
          {"name": "class_name", "type": ["null", "string"]},
          {"name": "feat_name", "type": ["null", "string"]},
          {"name": "stat", "type": ["null", "string"]},
          {"name": "extra", "type": {"type": "map", "values": "string"}}]}}}]}"""
    )
)


def _window_points(n_features: int = 60) -> list[Point]:
    stats = ("range", "mean", "std", "median", "q25", "q50", "q75", "iqr")
    return [
        Point("feature_value", "gauge", 0.5 + i, feat_name=f"pixel_{f}", stat=stat)
        for f in range(n_features)
        for i, stat in enumerate(stats)
    ]


def _metric_points(results: dict[str, float]) -> None:
    """A metric record's points as one Avro record each vs as packed columns (ours)."""
    points = _window_points()
    record = MetricRecord("bench", 0, 60_000, 1000, 500, points)
    columns_message = record.encode()
    as_records = {
        "points": [
            {
                "what": p.what,
                "target_type": p.target_type,
                "value": p.value,
                "class_name": p.class_name,
                "feat_name": p.feat_name,
                "stat": p.stat,
                "extra": dict(p.extra),
            }
            for p in points
        ]
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, POINT_RECORDS_SCHEMA, as_records)
    records_message = buffer.getvalue()
    n = len(points)
    decode_columns = median(time_calls(lambda: MetricRecord.decode_columns(columns_message), 200))
    decode_records = median(
        time_calls(
            lambda: fastavro.schemaless_reader(io.BytesIO(records_message), POINT_RECORDS_SCHEMA),
            200,
        )
    )
    results["points_per_record"] = float(n)
    results["point_columns_decode_points_per_s"] = n / decode_columns
    results["point_records_decode_points_per_s"] = n / decode_records
    results["point_columns_bytes"] = float(len(columns_message))
    results["point_records_bytes"] = float(len(records_message))


def run() -> dict[str, float]:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(10), size=1000).astype(np.float32)
    features = rng.normal(size=(1000, 20)).astype(np.float32)
    results: dict[str, float] = {}
    for name, make in (("packed_bytes", _packed), ("avro_float_arrays", _arrays)):
        message, encode, decode = make(proba, features)
        results[f"{name}_encode_us"] = median(time_calls(encode, 200)) * 1e6
        results[f"{name}_decode_us"] = median(time_calls(decode, 200)) * 1e6
        results[f"{name}_bytes"] = float(len(message))
    _metric_points(results)
    return results


def main() -> None:
    results = run()
    rows = [
        (
            name,
            f"{results[f'{name}_encode_us']:.1f}",
            f"{results[f'{name}_decode_us']:.1f}",
            f"{results[f'{name}_bytes']:.0f}",
        )
        for name in ("packed_bytes", "avro_float_arrays")
    ]
    print_table(
        "Matrix encoding, 1000x10 probabilities + 1000x20 float32 features (median of 200)",
        rows,
        ("encoding", "encode µs", "decode µs", "bytes"),
    )
    speedup = results["avro_float_arrays_encode_us"] / results["packed_bytes_encode_us"]
    print(f"packed bytes encode {speedup:.0f}x faster than Avro float arrays")
    print_table(
        f"Metric record points ({results['points_per_record']:.0f} points), decode",
        [
            (
                "packed columns (ours)",
                f"{results['point_columns_decode_points_per_s']:,.0f}",
                f"{results['point_columns_bytes']:.0f}",
            ),
            (
                "one Avro record per point",
                f"{results['point_records_decode_points_per_s']:,.0f}",
                f"{results['point_records_bytes']:.0f}",
            ),
        ],
        ("encoding", "points/s", "bytes"),
    )


if __name__ == "__main__":
    main()
