from __future__ import annotations

import numpy as np
import pytest

from mlwatcher.metrics.points import Point
from mlwatcher.schemas import MetricRecord, PredictionBatch, SchemaDecodeError, load_schema


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
