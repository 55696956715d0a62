from __future__ import annotations

import json

import numpy as np
import pytest

from mlwatcher.point import Point
from mlwatcher.schemas import (
    MetricRecord,
    PointColumns,
    PredictionBatch,
    SchemaDecodeError,
    encode,
    load_schema,
)
from mlwatcher.schemas.point_columns import concat


def sample_batch() -> PredictionBatch:
    rng = np.random.default_rng(1)
    proba = rng.random((7, 3)).astype(np.float32)
    return PredictionBatch(
        agent_id="a",
        batch_id="b1",
        event_time_ms=1_764_000_000_123,
        window_ms=60_000,
        max_buffer_size=100,
        probabilities=proba,
        labels=np.array([0, 1, 2, 0, -1, 1, 2], dtype=np.int32),
        features=rng.normal(size=(7, 4)),
        feature_names=["w", "x", "y", "z"],
        categorical_features=[3],
        class_names=["cat", "dog", "eel"],
        threshold=0.25,
        model_version="v7",
    )


def test_prediction_batch_round_trip_is_exact() -> None:
    batch = sample_batch()
    decoded = PredictionBatch.decode(batch.encode())
    np.testing.assert_array_equal(decoded.probabilities, batch.probabilities)
    np.testing.assert_array_equal(decoded.labels, batch.labels)
    assert decoded.features.dtype == np.float64
    np.testing.assert_array_equal(decoded.features, batch.features)
    for name in (
        "agent_id",
        "batch_id",
        "event_time_ms",
        "window_ms",
        "threshold",
        "feature_names",
        "categorical_features",
        "class_names",
        "model_version",
    ):
        assert getattr(decoded, name) == getattr(batch, name), name


def test_metric_record_round_trip() -> None:
    record = MetricRecord(
        agent_id="a",
        window_start_ms=60_000,
        window_end_ms=120_000,
        rows_seen=10,
        rows_sampled=5,
        batches=2,
        points=[
            Point("prediction_count", "counter", 3.0, class_name="class_1"),
            Point("feature_value", "gauge", 0.5, feat_name="x", stat="mean"),
            Point("feature_value_count", "counter", 2.0, feat_name="c", extra={"value": "7"}),
        ],
    )
    decoded = MetricRecord.decode(record.encode())
    assert decoded == record
    assert record.key == b"a"
    assert record.window_id == "a|60000"


def test_message_starts_with_single_object_header() -> None:
    message = sample_batch().encode()
    schema = load_schema("prediction_batch")
    assert message[:2] == b"\xc3\x01"
    assert message[2:10] == schema.fingerprint


def test_unknown_fingerprint_is_refused_clearly() -> None:
    message = bytearray(sample_batch().encode())
    message[2:10] = b"\x00" * 8
    with pytest.raises(SchemaDecodeError, match="unknown schema fingerprint 0000000000000000"):
        PredictionBatch.decode(bytes(message))


def test_metric_record_is_not_read_as_a_batch() -> None:
    record = MetricRecord("a", 0, 1, 0, 0, [])
    with pytest.raises(SchemaDecodeError, match="expects prediction_batch"):
        PredictionBatch.decode(record.encode())


@pytest.mark.parametrize("cut", [0, 1, 5, 10, 11, 40, -1])
def test_truncated_message_gives_a_decode_error(cut: int) -> None:
    message = sample_batch().encode()
    with pytest.raises(SchemaDecodeError):
        PredictionBatch.decode(message[:cut])


def test_not_avro_at_all() -> None:
    with pytest.raises(SchemaDecodeError, match="not an Avro single-object message"):
        PredictionBatch.decode(b'{"json": true}')


def many_points(n: int = 300) -> list[Point]:
    rng = np.random.default_rng(3)
    points = []
    for i in range(n):
        points.append(
            Point(
                what=["feature_value", "prediction_count", "confusion_count"][i % 3],
                target_type=["gauge", "counter"][i % 2],
                value=float(rng.normal()),
                class_name=None if i % 4 else f"class_{i % 7}",
                feat_name=None if i % 5 else f"f{i % 11}",
                stat=None if i % 3 else "mean",
                extra={} if i % 6 else {"pred_class": f"class_{i % 5}", "average": "x"},
            )
        )
    return points


def test_points_round_trip_through_columns() -> None:
    record = MetricRecord("agent", 0, 5000, 10, 5, many_points())
    assert MetricRecord.decode(record.encode()) == record


def test_column_fast_path_matches_points() -> None:
    points = many_points()
    header, columns = MetricRecord.decode_columns(MetricRecord("a", 1, 2, 3, 4, points).encode())
    assert header["agent_id"] == "a" and header["window_start_ms"] == 1

    def text(indices: np.ndarray) -> list[str | None]:
        return [None if i < 0 else columns.strings[i] for i in indices]

    assert text(columns.what) == [p.what for p in points]
    assert text(columns.class_name) == [p.class_name for p in points]
    assert [json.loads(e) if e else {} for e in text(columns.extra)] == [
        dict(p.extra) for p in points
    ]
    np.testing.assert_array_equal(columns.value, [p.value for p in points])


def test_concat_merges_string_dictionaries() -> None:
    first, second = many_points(10), many_points(25)[::-1]
    merged = concat([PointColumns.from_points(first), PointColumns.from_points(second)])
    assert merged.to_points() == first + second


@pytest.mark.parametrize(
    ("column", "data", "fragment"),
    [
        ("what", (-1).to_bytes(4, "little", signed=True), "points.what: indices"),
        ("stat", (99).to_bytes(4, "little"), "points.stat: indices"),
        ("value", b"\x00" * 7, "points.value: 7 bytes, expected 8"),
        ("target_type", b"\x05", "points.target_type"),
    ],
)
def test_corrupt_point_columns_are_refused(column: str, data: bytes, fragment: str) -> None:
    record = MetricRecord("a", 0, 1, 1, 1, [Point("x", "gauge", 1.0, stat="mean")]).to_avro()
    record["points"][column] = data
    message = encode(load_schema("metric_record"), record)
    with pytest.raises(SchemaDecodeError, match=fragment):
        MetricRecord.decode(message)
