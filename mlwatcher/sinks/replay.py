"""Offline: send a Parquet metrics data set (written by the Parquet sink) to Anodot.

What ``anodot_api.py --input`` did for the 2019 agent's files. Rows are sent in window
order, so every series reaches Anodot in time order; re-running a replay re-sends points
Anodot already has, which it de-duplicates by series and timestamp. A window's latest
revision is sent: its label metrics as they stand after every label revision, the rest
from its record at close (:func:`~mlwatcher.sinks.parquet_format.latest_revisions`).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from mlwatcher.point import Point
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_format import AnodotPoint, convert_points, series_id
from mlwatcher.sinks.batching import RequestBatcher
from mlwatcher.sinks.parquet_files import read_data_set
from mlwatcher.sinks.parquet_format import latest_revisions

log = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    rows: int = 0
    points_accepted: int = 0
    requests: int = 0
    retries: int = 0
    #: (series properties or row description, reason) of every refused point
    rejected: list[tuple[str, str]] = field(default_factory=list)


def replay_parquet(
    directory: Path, client: AnodotClient, abort: threading.Event | None = None
) -> ReplayStats:
    """Send every row of the data set under ``directory``; returns what happened."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"PARQUET_DIR: {directory} is not a directory")
    table = latest_revisions(read_data_set(directory))
    if table.num_rows == 0:
        return ReplayStats()
    table = table.sort_by([("window_start", "ascending"), ("agent_id", "ascending")])
    columns = {
        name: table.column(name).to_pylist()
        for name in ("what", "target_type", "value", "class_name", "feat_name", "stat", "extra")
    }
    agent_ids = pc.cast(table.column("agent_id"), "string").to_pylist()
    starts = pc.cast(table.column("window_start"), "int64").to_pylist()
    stats = ReplayStats(rows=table.num_rows)
    batcher: RequestBatcher[AnodotPoint] = RequestBatcher(client.max_points_per_request)

    def send(batch: list[AnodotPoint]) -> None:
        report = client.send(batch, abort)
        stats.requests += report.requests
        stats.retries += report.retries
        for index, reason in sorted(report.rejected.items()):
            stats.rejected.append((json.dumps(batch[index]["properties"]), reason))
        stats.points_accepted += len(batch) - len(report.rejected)

    for row in range(table.num_rows):
        point = Point(
            what=columns["what"][row],
            target_type=columns["target_type"][row],
            value=columns["value"][row],
            class_name=columns["class_name"][row],
            feat_name=columns["feat_name"][row],
            stat=columns["stat"][row],
            extra=json.loads(columns["extra"][row] or "{}"),
        )
        converted, refused = convert_points(agent_ids[row], starts[row], [point])
        for item in refused:
            stats.rejected.append((f"{agent_ids[row]} {point.what} row {row}", item.reason))
        for body in converted:
            complete = batcher.add(body, series_id(body))
            if complete:
                send(complete)
    remaining = batcher.take()
    if remaining:
        send(remaining)
    return stats
