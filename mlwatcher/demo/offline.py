"""The demo's metrics computed without Kafka: the scenarios' windows through ``compute_metrics``.

It gives the same long-format Parquet data set the Parquet sink writes (one row per point,
hive partitions ``agent_id=.../date=.../``), so the report can be previewed, tested and
developed without a broker, and ``mlwatcher demo --offline`` works anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlwatcher.demo.scenarios import DemoBatch, DigitsModels, Timeline
from mlwatcher.metrics import Point, ReferenceProfile, compute_metrics

#: column order and types of the Parquet sink's long format
PARQUET_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("ms", tz="UTC")),
        ("window_end", pa.timestamp("ms", tz="UTC")),
        ("what", pa.string()),
        ("class_name", pa.string()),
        ("feat_name", pa.string()),
        ("stat", pa.string()),
        ("target_type", pa.string()),
        ("value", pa.float64()),
        ("extra", pa.map_(pa.string(), pa.string())),
        ("rows_seen", pa.int64()),
        ("rows_sampled", pa.int32()),
        ("agent_id", pa.string()),
        ("date", pa.string()),
    ]
)


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


def metrics_table(windows: Iterable[WindowMetrics]) -> pa.Table:
    """Long format: one row per point, window columns repeated."""
    columns: dict[str, list] = {field.name: [] for field in PARQUET_SCHEMA}
    for window in windows:
        date = pd.Timestamp(window.window_start_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
        for point in window.points:
            columns["window_start"].append(window.window_start_ms)
            columns["window_end"].append(window.window_end_ms)
            columns["what"].append(point.what)
            columns["class_name"].append(point.class_name)
            columns["feat_name"].append(point.feat_name)
            columns["stat"].append(point.stat)
            columns["target_type"].append(point.target_type)
            columns["value"].append(point.value)
            columns["extra"].append(list(point.extra.items()))
            columns["rows_seen"].append(window.rows_seen)
            columns["rows_sampled"].append(window.rows_seen)
            columns["agent_id"].append(window.agent_id)
            columns["date"].append(date)
    return pa.table(columns, schema=PARQUET_SCHEMA)


def write_metrics_dataset(windows: Iterable[WindowMetrics], output_dir: str | Path) -> Path:
    """Write the points as a hive-partitioned Parquet data set under ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    pq.write_to_dataset(
        metrics_table(windows),
        root_path=output,
        partition_cols=["agent_id", "date"],
        existing_data_behavior="overwrite_or_ignore",
    )
    return output
