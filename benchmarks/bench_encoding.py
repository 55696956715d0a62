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
from mlwatcher.schemas import PredictionBatch

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


if __name__ == "__main__":
    main()
