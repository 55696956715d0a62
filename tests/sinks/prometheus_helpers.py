"""Helpers of the Prometheus sink tests: real metric records and an independent reading of
the exposition (prometheus_client's own text parser)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from mlwatcher.metrics import Point, ReferenceProfile, compute_metrics
from mlwatcher.schemas import MetricRecord

WINDOW_MS = 60_000
BASE_MS = 1_764_374_400_000  # 2025-11-29T00:00:00Z

Series = tuple[str, frozenset[tuple[str, str]]]


def model_record(
    agent: str,
    window: int,
    *,
    n_features: int = 6,
    n_classes: int = 3,
    rows: int = 400,
    shift: float = 0.0,
    seed: int = 0,
    start_ms: int | None = None,
    model_version: str = "v1",
) -> MetricRecord:
    """A record computed by the real metric engine: labels, features, drift of the features,
    pred1 and the class mix vs a reference drawn like the data; ``shift`` moves every
    feature's mean (drift)."""

    def probabilities(rng: np.random.Generator, n: int) -> np.ndarray:
        logits = rng.normal(size=(n, n_classes))
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    reference_rng = np.random.default_rng(1000 + seed)
    reference = ReferenceProfile.from_data(
        reference_rng.normal(size=(2000, n_features)), probabilities(reference_rng, 2000)
    )
    rng = np.random.default_rng(seed + window)
    features = rng.normal(loc=shift, size=(rows, n_features))
    proba = probabilities(rng, rows)
    labels = rng.integers(0, n_classes, size=rows)
    points = compute_metrics(proba, labels, features, reference=reference)
    start = BASE_MS + window * WINDOW_MS if start_ms is None else start_ms
    return MetricRecord(
        agent_id=agent,
        window_start_ms=start,
        window_end_ms=start + WINDOW_MS,
        rows_seen=rows,
        rows_sampled=rows,
        points=points,
        batches=1,
        model_version=model_version,
    )


def point_series(agent: str, point: Point) -> Series:
    """The series a point should become, written out independently of the sink's code."""
    labels = {"agent_id": agent}
    for key in ("class_name", "feat_name", "stat"):
        if getattr(point, key) is not None:
            labels[key] = getattr(point, key)
    labels.update(point.extra)
    # Prometheus has no empty label values: an empty value is no label
    return f"mlwatcher_{point.what}", frozenset((k, v) for k, v in labels.items() if v)


def default_kept(point: Point) -> bool:
    """The documented default: every model-level point, and per feature only drift."""
    return point.feat_name is None or point.what == "feature_drift"


def expected_samples(records: Sequence[MetricRecord], keep=default_kept) -> dict[Series, float]:
    expected: dict[Series, float] = {}
    for record in records:
        for point in record.points:
            if keep(point):
                expected[point_series(record.agent_id, point)] = point.value
        agent = frozenset({("agent_id", record.agent_id)})
        expected["mlwatcher_window_start_timestamp_seconds", agent] = record.window_start_ms / 1e3
        expected["mlwatcher_window_end_timestamp_seconds", agent] = record.window_end_ms / 1e3
        info = {("agent_id", record.agent_id), ("model_version", record.model_version)}
        expected["mlwatcher_agent_info", frozenset(kv for kv in info if kv[1])] = 1.0
    return expected


def parse_exposition(text: str, prefix: str = "mlwatcher_") -> dict[Series, float]:
    """Samples of a Prometheus text page whose name starts with ``prefix``."""
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.startswith("mlwatcher_sink_"):
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in samples, f"duplicate series {key}"
                samples[key] = sample.value
    return samples


def label_revision(record: MetricRecord, revision: int, seed: int = 99) -> MetricRecord:
    """A label revision of ``record``: its header, revision ``revision``, and only label
    points, recomputed by the real engine over other labels (as more labels came in)."""
    from tests.sinks.sink_helpers import LABEL_WHATS

    other = model_record("x", 0, seed=seed + revision, rows=record.rows_seen)
    points = [p for p in other.points if p.what in LABEL_WHATS]
    return dataclasses.replace(record, points=points, revision=revision)
