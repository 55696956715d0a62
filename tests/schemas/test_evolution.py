"""Schema evolution: messages written with the earlier schema versions (schemas/previous/) are
read into the current ones; the label batch round-trips; unknown fingerprints stay refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlwatcher.point import Point
from mlwatcher.schemas import (
    LabelBatch,
    MetricRecord,
    PredictionBatch,
    SchemaDecodeError,
    encode,
    load_schema,
)
from mlwatcher.schemas.codec import UNKNOWN_SCHEMA, known_fingerprints, previous_versions

# The fingerprints of the schemas released before prediction ids and revisions existed: a
# topic written by that release holds messages with exactly these headers.
V1_FINGERPRINTS = {
    "prediction_batch": "1687ffd0f5112912",
    "metric_record": "d89cee3d2e84abf4",
}


def v1_schema(name: str):
    (schema,) = previous_versions(name).values()
    return schema


@pytest.mark.parametrize("name", sorted(V1_FINGERPRINTS))
def test_the_v1_schemas_are_the_released_ones(name: str) -> None:
    assert v1_schema(name).fingerprint.hex() == V1_FINGERPRINTS[name]
    assert known_fingerprints(name) == {load_schema(name).fingerprint, v1_schema(name).fingerprint}
    assert load_schema(name).fingerprint != v1_schema(name).fingerprint


def v1_batch() -> PredictionBatch:
    rng = np.random.default_rng(5)
    return PredictionBatch(
        agent_id="old-agent",
        batch_id="b-1",
        event_time_ms=1_700_000_000_000,
        window_ms=300_000,
        max_buffer_size=500,
        probabilities=rng.dirichlet(np.ones(3), size=6).astype(np.float32),
        labels=np.array([0, 2, -1, 1, 1, 0], dtype=np.int32),
        features=rng.normal(size=(6, 2)),
        feature_names=["a", "b"],
        threshold=0.4,
        model_version="2019",
    )


def test_a_v1_prediction_batch_decodes_without_prediction_ids() -> None:
    batch = v1_batch()
    record = batch.to_avro()
    del record["prediction_ids"]  # the v1 writer has no such field
    message = encode(v1_schema("prediction_batch"), record)
    assert message[2:10].hex() == V1_FINGERPRINTS["prediction_batch"]
    decoded = PredictionBatch.decode(message)
    assert decoded.prediction_ids is None
    np.testing.assert_array_equal(decoded.probabilities, batch.probabilities)
    np.testing.assert_array_equal(decoded.labels, batch.labels)
    np.testing.assert_array_equal(decoded.features, batch.features)
    assert (decoded.agent_id, decoded.event_time_ms, decoded.threshold) == (
        "old-agent",
        1_700_000_000_000,
        0.4,
    )


def test_a_current_prediction_batch_carries_its_ids() -> None:
    batch = v1_batch()
    batch.prediction_ids = np.arange(6, dtype=np.uint64) * np.uint64(2**61 + 3)
    decoded = PredictionBatch.decode(batch.encode())
    assert decoded.prediction_ids.dtype == np.dtype("<u8")
    np.testing.assert_array_equal(decoded.prediction_ids, batch.prediction_ids)


def test_a_v1_metric_record_decodes_as_revision_0() -> None:
    record = MetricRecord(
        agent_id="old-agent",
        window_start_ms=60_000,
        window_end_ms=120_000,
        rows_seen=9,
        rows_sampled=9,
        batches=3,
        model_version="2019",
        points=[Point("accuracy", "gauge", 0.75), Point("prediction_count", "counter", 9.0)],
        revision=0,
    )
    fields = record.to_avro()
    del fields["revision"]
    message = encode(v1_schema("metric_record"), fields)
    assert message[2:10].hex() == V1_FINGERPRINTS["metric_record"]
    assert MetricRecord.decode(message) == record
    header, _ = MetricRecord.decode_columns(message)
    assert header["revision"] == 0


def test_a_revision_round_trips() -> None:
    record = MetricRecord("a", 0, 60_000, 5, 5, [Point("accuracy", "gauge", 0.5)], revision=3)
    assert MetricRecord.decode(record.encode()).revision == 3


def label_batch() -> LabelBatch:
    return LabelBatch(
        agent_id="a",
        batch_id="l-1",
        sent_time_ms=1_764_000_000_000,
        prediction_ids=np.array([1, 2**64 - 1, 12345], dtype=np.uint64),
        labels=np.array([0, 2, 1], dtype=np.int32),
        n_classes=3,
    )


def test_label_batch_round_trip_is_exact() -> None:
    batch = label_batch()
    decoded = LabelBatch.decode(batch.encode())
    np.testing.assert_array_equal(decoded.prediction_ids, batch.prediction_ids)
    np.testing.assert_array_equal(decoded.labels, batch.labels)
    assert (decoded.agent_id, decoded.batch_id, decoded.sent_time_ms, decoded.n_classes) == (
        "a",
        "l-1",
        1_764_000_000_000,
        3,
    )
    assert batch.key == b"a"


@pytest.mark.parametrize(
    ("message_of", "reader"),
    [
        (lambda: v1_batch().encode(), PredictionBatch),
        (lambda: MetricRecord("a", 0, 1, 0, 0, []).encode(), MetricRecord),
        (lambda: label_batch().encode(), LabelBatch),
    ],
)
def test_an_unknown_fingerprint_is_still_refused(message_of, reader) -> None:
    message = bytearray(message_of())
    message[2:10] = bytes.fromhex("0123456789abcdef")
    with pytest.raises(SchemaDecodeError, match="unknown schema fingerprint 0123456789abcdef") as e:
        reader.decode(bytes(message))
    assert e.value.reason == UNKNOWN_SCHEMA


def test_a_label_batch_is_not_read_as_a_prediction_batch_and_back() -> None:
    with pytest.raises(SchemaDecodeError, match="expects prediction_batch") as caught:
        PredictionBatch.decode(label_batch().encode())
    assert caught.value.reason == UNKNOWN_SCHEMA
    with pytest.raises(SchemaDecodeError, match="expects label_batch"):
        LabelBatch.decode(v1_batch().encode())


def test_label_batch_with_truncated_ids_is_refused() -> None:
    record = label_batch().to_avro()
    record["prediction_ids"] = record["prediction_ids"][:-1]
    with pytest.raises(SchemaDecodeError, match="prediction_ids: 23 bytes, expected 24"):
        LabelBatch.decode(encode(load_schema("label_batch"), record))


@pytest.mark.parametrize("document", ["README.md", "docs/schemas.md"])
def test_the_documented_fingerprints_are_the_current_ones(document: str) -> None:
    text = (Path(__file__).parents[2] / document).read_text()
    for name in ("prediction_batch", "label_batch", "metric_record"):
        assert f"{name}: {load_schema(name).fingerprint.hex()}" in " ".join(text.split()), name
