"""The demo's metrics computed without Kafka: the scenarios' windows through ``compute_metrics``.

It writes the Parquet sink's data set with the sink's writer and schema (one row per point,
hive partitions ``agent_id=.../date=.../``), so the report can be previewed, tested and
developed without a broker, and ``mlwatcher demo --offline`` works anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlwatcher.demo.scenarios import DemoBatch, DigitsModels, Timeline
from mlwatcher.metrics import ReferenceProfile, compute_metrics
from mlwatcher.point import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.parquet_files import write_records

#: one data file per agent and day; a second run overwrites the first
OFFLINE_FILE_NAME = "demo-offline.parquet"


def reference_profile(models: DigitsModels) -> ReferenceProfile:
    """The baseline of every demo agent: the good model on held-out, labelled data (drift
    reference, and the calibration map of its performance estimates)."""
    return ReferenceProfile.from_data(
        models.reference_inputs,
        models.predict_proba(models.good, models.reference_inputs),
        labels=models.reference_labels,
        feature_names=list(models.feature_names),
    )


@dataclass(frozen=True)
class WindowMetrics:
    agent_id: str
    window_start_ms: int
    window_end_ms: int
    rows_seen: int
    points: list[Point]


def window_metrics(
    traffic: Iterable[DemoBatch],
    timeline: Timeline,
    models: DigitsModels,
    reference: ReferenceProfile | None,
) -> list[WindowMetrics]:
    """Every row of each (agent, window) through ``compute_metrics`` (no sampling)."""
    grouped: dict[tuple[str, int], list[DemoBatch]] = defaultdict(list)
    for batch in traffic:
        grouped[(batch.agent_id, timeline.window_index(batch.event_time))].append(batch)
    window_ms = round(timeline.window_seconds * 1000)
    results = []
    for (agent, index), batches in sorted(grouped.items()):
        start_ms = round(timeline.window_start(index) * 1000)
        probabilities = np.concatenate([b.probabilities for b in batches])
        points = compute_metrics(
            probabilities,
            labels=np.concatenate([b.labels for b in batches]),
            features=np.concatenate([b.features for b in batches]),
            class_names=list(models.class_names),
            feature_names=list(models.feature_names),
            reference=reference,
        )
        results.append(
            WindowMetrics(agent, start_ms, start_ms + window_ms, len(probabilities), points)
        )
    return results


def write_metrics_dataset(windows: Iterable[WindowMetrics], output_dir: str | Path) -> Path:
    """Write the points as the Parquet sink's data set, with the sink's writer and schema."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    records = (
        MetricRecord(
            agent_id=window.agent_id,
            window_start_ms=window.window_start_ms,
            window_end_ms=window.window_end_ms,
            rows_seen=window.rows_seen,
            rows_sampled=window.rows_seen,  # offline, every row is the sample
            points=window.points,
        )
        for window in windows
    )
    write_records(records, output, OFFLINE_FILE_NAME)
    return output
