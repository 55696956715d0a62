"""Shared helpers of the sink tests: metric records, producing them, running sink processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.anodot_format import to_anodot_point
from tests.helpers import ordered_producer, read_topic

WINDOW_MS = 60_000
BASE_MS = 1_764_374_400_000  # 2025-11-29T00:00:00Z
REPO = Path(__file__).resolve().parents[2]


def make_record(agent: str, window: int, n_points: int) -> MetricRecord:
    """A record whose points are distinct series (``feat_name`` j) with a traceable value."""
    start = BASE_MS + window * WINDOW_MS
    points = [
        Point(
            "feature_value",
            "gauge",
            float(window * 1000 + j),
            feat_name=f"f{j}",
            stat="mean",
            extra={"src": "test"} if j % 3 == 0 else {},
        )
        for j in range(n_points)
    ]
    return MetricRecord(
        agent_id=agent,
        window_start_ms=start,
        window_end_ms=start + WINDOW_MS,
        rows_seen=100 + window,
        rows_sampled=50,
        points=points,
        batches=3,
    )


def make_records(agents: Sequence[str], windows: int, n_points: int) -> list[MetricRecord]:
    return [make_record(a, w, n_points) for w in range(windows) for a in agents]


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[MetricRecord],
    partitions: int,
    extra_values: Sequence[tuple[int, bytes]] = (),
) -> None:
    """Produce records, each agent to one partition (so a series stays in order), plus
    raw ``(partition, bytes)`` values (e.g. garbage)."""
    producer = ordered_producer(bootstrap, **{"linger.ms": 5})
    agents = sorted({r.agent_id for r in records})
    for record in records:
        partition = agents.index(record.agent_id) % partitions
        producer.produce(topic, value=record.encode(), key=record.key, partition=partition)
        producer.poll(0)
    for partition, value in extra_values:
        producer.produce(topic, value=value, key=b"garbage", partition=partition)
    assert producer.flush(30) == 0


def expected_series_points(records: Sequence[MetricRecord]) -> set[tuple[object, int, float]]:
    """(series, timestamp, value) of every Anodot point the records should produce."""
    expected = set()
    for record in records:
        for point in record.points:
            body = to_anodot_point(record.agent_id, record.window_start_ms, point)
            series = tuple(sorted(body["properties"].items()))
            expected.add((series, body["timestamp"], body["value"]))
    return expected


def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    # a second longer than needed, to catch unexpected extra messages
    return read_topic(bootstrap, topic, expected, timeout=timeout, linger=1.0)


def mlwatcher_command(*args: str) -> list[str]:
    """``python -m mlwatcher ...`` when the package has a __main__, else the same via -c."""
    if (REPO / "mlwatcher" / "__main__.py").exists():
        return [sys.executable, "-m", "mlwatcher", *args]
    return [sys.executable, "-c", "from mlwatcher.cli import main; main()", *args]


def start_sink(  # type: ignore[no-untyped-def]
    args: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    commit_delay: float = 0.0,
):
    """``mlwatcher ARGS`` in its own process; ``commit_delay`` widens the gap between files
    durable and offsets committed (see slow_commit.py)."""
    command = mlwatcher_command(*args)
    if commit_delay:
        slow = Path(__file__).with_name("slow_commit.py")
        command = [sys.executable, str(slow), str(commit_delay), *args]
    handle = open(log_path, "ab")  # noqa: SIM115 - closed by the caller via the process
    return subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


# Short session timeout: a killed sink's partitions are reassigned quickly.
FAST_GROUP = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]


#: the label-dependent ``what``s a label revision carries (the contract of MetricRecord.revision)
LABEL_WHATS = frozenset(
    {
        "labelled_rows",
        "label_count",
        "label_freq",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "overall_accuracy",
        "overall_accuracy_stderr",
        "confusion_count",
        "log_loss",
        "brier_score",
        "expected_calibration_error",
        "calibration_bin_rows",
        "calibration_bin_confidence",
        "calibration_bin_accuracy",
    }
)


def _label_points(window: int, revision: int) -> list[Point]:
    """Label metrics that change with every revision (more labels, better accuracy)."""
    labelled = 10.0 * (revision + 1) + window
    score = 0.5 + 0.1 * revision + 0.001 * window
    return [
        Point("labelled_rows", "counter", labelled),
        Point("overall_accuracy", "gauge", score),
        Point("accuracy", "gauge", score - 0.05, class_name="0"),
        Point("accuracy", "gauge", score + 0.05, class_name="1"),
        Point("f1", "gauge", score - 0.1, extra={"average": "macro"}),
        Point("confusion_count", "counter", labelled / 2, class_name="0", extra={"pred": "1"}),
    ]


def make_labelled_record(agent: str, window: int, revision: int = 0) -> MetricRecord:
    """Revision 0: prediction and feature points plus label points; revision n >= 1: only
    the label points, recomputed (the same header as revision 0)."""
    record = make_record(agent, window, 4)
    label_points = _label_points(window, revision)
    if revision == 0:
        record.points = [Point("prediction_count", "counter", 90.0 + window, class_name="0")]
        record.points += make_record(agent, window, 4).points + label_points
    else:
        record.points = label_points
    record.revision = revision
    return record


def revision_stream(agents: Sequence[str], windows: int, lags: int = 2) -> list[MetricRecord]:
    """Each agent's records in the order a worker emits them when labels come 1..``lags``
    windows late: revision 0 of window k, then revision 1 of window k-1, revision 2 of window
    k-2 ... (so revisions of older windows follow the record of a newer one)."""
    stream = []
    for k in range(windows + lags):
        for agent in agents:
            if k < windows:
                stream.append(make_labelled_record(agent, k, 0))
            for lag in range(1, lags + 1):
                if 0 <= k - lag < windows:
                    stream.append(make_labelled_record(agent, k - lag, lag))
    return stream


def latest_state(records: Sequence[MetricRecord]) -> list[MetricRecord]:
    """Independent of the code under test: per window, the label points of its highest
    revision (as that revision) and every other point of revision 0 (as revision 0), by the
    contract's list of label whats."""
    by_window: dict[tuple[str, int], dict[int, MetricRecord]] = {}
    for record in records:
        key = (record.agent_id, record.window_start_ms)
        by_window.setdefault(key, {})[record.revision] = record
    latest = []
    for revisions in by_window.values():
        first, top = revisions[0], revisions[max(revisions)]
        if top is first:
            latest.append(first)
            continue
        unlabelled = [p for p in first.points if p.what not in LABEL_WHATS]
        labelled = [p for p in top.points if p.what in LABEL_WHATS]
        latest.append(dataclasses.replace(first, points=unlabelled))
        latest.append(dataclasses.replace(top, points=labelled))
    return latest
