"""Real metric-engine windows (estimates, calibration, drift) through both sinks and a broker.

The other sink tests use synthetic points; this one checks that every point the engine
emits, the performance-estimation and calibration points included, is accepted by Anodot
and lands in the Parquet data set as it was produced.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fake_anodot import FakeAnodot
from parquet_helpers import expected_rows, read_with_pyarrow
from sink_helpers import BASE_MS, WINDOW_MS, expected_series_points, produce

from mlwatcher.metrics import ReferenceProfile, WindowState
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_sink import AnodotSink, AnodotSinkConfig
from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
from mlwatcher.sinks.rate_limit import RateLimiter
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import committed_offsets, wait_until

TOKEN = "tok-engine-points"
NEW_WHATS = {
    "estimated_overall_accuracy",
    "estimated_overall_accuracy_stderr",
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
    "estimated_confusion_count",
    "overall_accuracy_stderr",
    "brier_score",
    "expected_calibration_error",
    "calibration_bin_rows",
    "calibration_bin_confidence",
    "calibration_bin_accuracy",
}


def _engine_records() -> list[MetricRecord]:
    rng = np.random.default_rng(0)
    classes = [f"digit {c}" for c in range(4)]
    ref_probs = rng.dirichlet(np.ones(4) * 0.5, size=2000)
    reference = ReferenceProfile.from_data(
        rng.normal(size=(2000, 3)), ref_probs, labels=rng.integers(0, 4, size=2000)
    )
    records = []
    for window in range(4):
        state = WindowState(4, 100, n_features=3, seed=window)
        for _ in range(3):
            labels = rng.integers(0, 4, size=50) if window != 3 else None  # one unlabelled
            state.update(rng.dirichlet(np.ones(4) * 0.5, size=50), labels, rng.normal(size=(50, 3)))
        start = BASE_MS + window * WINDOW_MS
        records.append(
            MetricRecord(
                agent_id="engine",
                window_start_ms=start,
                window_end_ms=start + WINDOW_MS,
                rows_seen=state.rows_seen,
                rows_sampled=state.rows_sampled,
                points=state.metrics(class_names=classes, reference=reference),
                batches=3,
            )
        )
    return records


def test_every_engine_point_reaches_anodot_and_parquet(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    records = _engine_records()
    assert {p.what for p in records[0].points} >= NEW_WHATS
    assert all(np.isfinite(p.value) for r in records for p in r.points)
    topics = unique_topics({"metrics": 1, "dlq": 1})
    produce(kafka_bootstrap, topics["metrics"], records, 1)

    shutdown = Shutdown()
    with FakeAnodot(token=TOKEN) as server:
        anodot = AnodotSink(
            AnodotSinkConfig(kafka_bootstrap, topics["metrics"], topics["dlq"], group_id="a-1"),
            AnodotClient(server.base_url, TOKEN, rate_limiter=RateLimiter(20_000)),
        )
        parquet = ParquetSink(
            ParquetSinkConfig(
                kafka_bootstrap,
                topics["metrics"],
                topics["dlq"],
                tmp_path / "data",
                group_id="p-1",
                roll_seconds=0.3,
            )
        )
        threads = [
            threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
            for sink in (anodot, parquet)
        ]
        for thread in threads:
            thread.start()
        expected = expected_series_points(records)
        server.wait_for(lambda s: s.accepted_count() >= len(expected), timeout=60)
        wait_until(
            lambda: (
                committed_offsets(kafka_bootstrap, "p-1", topics["metrics"], 1) == [len(records)]
            ),
            timeout=60,
            what="the Parquet sink to commit every record",
        )
        shutdown.request_stop()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
        accepted = {(p.series, p.timestamp, p.value) for p in server.accepted()}
    assert accepted == expected
    assert anodot.stats.points_dead_lettered == 0
    whats = {dict(series)["what"] for series, _, _ in accepted}
    assert whats >= NEW_WHATS
    assert read_with_pyarrow(tmp_path / "data") == expected_rows(records)
