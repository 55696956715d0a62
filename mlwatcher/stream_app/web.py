"""The worker's two pages: ``/health`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlwatcher.stream_app.observability import WorkerStats, render_prometheus
from mlwatcher.stream_app.processor import Progress


def health(
    app_id: str, stats: WorkerStats, progress: Progress, *, joined: bool
) -> tuple[dict[str, Any], int]:
    """Body and status: ``ok`` (200), ``starting``/``recovering`` (503), ``stalled`` (503)."""
    if stats.stalled:
        status = "stalled"
    elif not joined:
        status = "starting"
    elif progress.recovering:
        status = "recovering"
    else:
        status = "ok"
    body = {
        "status": status,
        "app_id": app_id,
        "assigned_partitions": sorted(progress.owned),
        "recovering_partitions": sorted(progress.recovering),
        "open_windows": progress.open_windows,
        "records_emitted": stats.records_emitted,
    }
    return body, 200 if status == "ok" else 503


def metrics(stats: WorkerStats, progress: Progress, end_offsets: Mapping[int, int]) -> str:
    lag = {}
    for p, end in end_offsets.items():
        next_offset = progress.next_offsets.get(p)
        if p in progress.owned and next_offset is not None:
            lag[p] = max(0, end - next_offset)
    return render_prometheus(
        stats,
        open_windows=progress.open_windows,
        pending_label_rows=progress.pending_label_rows,
        lag_by_partition=lag,
        assigned_partitions=len(progress.owned),
    )
