"""Worker counters and their Prometheus text exposition (no client library needed)."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Window-close delay buckets (seconds after window end + grace).
CLOSE_DELAY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = CLOSE_DELAY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class WorkerStats:
    """Counters since the worker started (Prometheus counters are per process)."""

    started_at: float = field(default_factory=time.time)
    messages: int = 0
    batches: int = 0
    rows: int = 0
    ticks: int = 0
    records_emitted: int = 0
    empty_records_emitted: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    close_delay: Histogram = field(default_factory=Histogram)
    close_delays_s: list[float] = field(default_factory=list)  # kept for the benchmark
    changelog_bytes: int = 0
    compute_seconds: float = 0.0  # in the window logic (decode, reservoir, metrics)
    execute_seconds: float = 0.0  # writing state, emitting, dead-lettering (incl. acks)
    recoveries: int = 0
    recovered_bytes: int = 0
    last_recovery_seconds: float = 0.0
    skipped_replayed: int = 0  # redelivered messages already applied (skipped)
    skipped_not_owned: int = 0  # fetched for a partition no longer owned
    seeks: int = 0  # gaps after the cursor, re-read
    stalls: int = 0
    stalled: bool = False
    stall_remedies: int = 0
    kafka_errors: int = 0
    labels: Counter[str] = field(default_factory=Counter)  # delayed labels by outcome
    label_revisions: int = 0

    def observe_close_delay(self, seconds: float) -> None:
        self.close_delay.observe(seconds)
        if len(self.close_delays_s) < 100_000:
            self.close_delays_s.append(seconds)


def render_prometheus(
    stats: WorkerStats,
    *,
    open_windows: int,
    pending_label_rows: int = 0,
    lag_by_partition: Mapping[int, int],
    assigned_partitions: int,
    now: Callable[[], float] = time.time,
) -> str:
    """Prometheus text format 0.0.4 of the worker's state."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {_number(value)}")

    metric(
        "mlwatcher_worker_uptime_seconds",
        "gauge",
        "Seconds since the worker started.",
        [("", now() - stats.started_at)],
    )
    metric(
        "mlwatcher_worker_messages_total",
        "counter",
        "Predictions-topic messages processed (batches, ticks and poison).",
        [("", stats.messages)],
    )
    metric(
        "mlwatcher_worker_batches_total",
        "counter",
        "Prediction batches applied to a window.",
        [("", stats.batches)],
    )
    metric(
        "mlwatcher_worker_rows_total",
        "counter",
        "Prediction rows applied to a window.",
        [("", stats.rows)],
    )
    metric(
        "mlwatcher_worker_ticks_total", "counter", "Control ticks processed.", [("", stats.ticks)]
    )
    metric(
        "mlwatcher_worker_records_emitted_total",
        "counter",
        "Metric records emitted at window close (one per agent and window; revisions apart).",
        [("", stats.records_emitted)],
    )
    metric(
        "mlwatcher_worker_empty_records_emitted_total",
        "counter",
        "Metric records emitted for windows without rows.",
        [("", stats.empty_records_emitted)],
    )
    metric(
        "mlwatcher_worker_late_batches_total",
        "counter",
        "Batches that arrived after their window closed (dead-lettered).",
        [("", stats.dead_letters.get("late", 0))],
    )
    metric(
        "mlwatcher_worker_dead_letters_total",
        "counter",
        "Messages sent to the dead-letter topic, by reason.",
        [(f'{{reason="{reason}"}}', count) for reason, count in sorted(stats.dead_letters.items())]
        or [('{reason="none"}', 0)],
    )
    metric(
        "mlwatcher_worker_labels_total",
        "counter",
        "Delayed labels (collect_labels) by outcome: joined, or the dead-letter reason.",
        [(f'{{outcome="{outcome}"}}', count) for outcome, count in sorted(stats.labels.items())]
        or [('{outcome="joined"}', 0)],
    )
    metric(
        "mlwatcher_worker_label_revisions_total",
        "counter",
        "Label revisions emitted (records of closed windows recomputed with later labels).",
        [("", stats.label_revisions)],
    )
    metric(
        "mlwatcher_worker_pending_label_rows",
        "gauge",
        "Prediction rows with ids waiting for a delayed label (live, not expired).",
        [("", pending_label_rows)],
    )
    metric(
        "mlwatcher_worker_open_windows",
        "gauge",
        "Windows currently open on this worker.",
        [("", open_windows)],
    )
    metric(
        "mlwatcher_worker_assigned_partitions",
        "gauge",
        "Predictions-topic partitions assigned to this worker.",
        [("", assigned_partitions)],
    )
    metric(
        "mlwatcher_worker_consumer_lag",
        "gauge",
        "Messages not yet processed, per predictions-topic partition.",
        [(f'{{partition="{p}"}}', lag) for p, lag in sorted(lag_by_partition.items())],
    )
    metric(
        "mlwatcher_worker_changelog_bytes_total",
        "counter",
        "Bytes of state values written to the changelog (keys excluded).",
        [("", stats.changelog_bytes)],
    )
    metric(
        "mlwatcher_worker_kafka_errors_total",
        "counter",
        "Kafka client errors (connection failures while the broker is down, ...).",
        [("", stats.kafka_errors)],
    )
    metric(
        "mlwatcher_worker_stalled",
        "gauge",
        "1 while the worker owns partitions with lag and makes no progress on them.",
        [("", 1 if stats.stalled else 0)],
    )
    metric(
        "mlwatcher_worker_stalls_total",
        "counter",
        "Times the worker was found stalled (see the log for why).",
        [("", stats.stalls)],
    )
    metric(
        "mlwatcher_worker_recoveries_total",
        "counter",
        "State recoveries from the changelog (after partitions were assigned).",
        [("", stats.recoveries)],
    )
    metric(
        "mlwatcher_worker_last_recovery_seconds",
        "gauge",
        "Duration of the latest state recovery.",
        [("", stats.last_recovery_seconds)],
    )
    metric(
        "mlwatcher_worker_recovered_bytes_total",
        "counter",
        "Changelog bytes read back during recoveries.",
        [("", stats.recovered_bytes)],
    )
    metric(
        "mlwatcher_worker_skipped_messages_total",
        "counter",
        "Messages not processed, by reason: replayed (already applied) or not_owned.",
        [('{reason="replayed"}', stats.skipped_replayed),
         ('{reason="not_owned"}', stats.skipped_not_owned)],
    )  # fmt: skip
    metric(
        "mlwatcher_worker_seeks_total",
        "counter",
        "Gaps between the state's cursor and the fetched offsets, re-read by seeking back.",
        [("", stats.seeks)],
    )
    metric("mlwatcher_worker_processing_seconds_total", "counter",
           "Seconds spent processing messages, by step.",
           [('{step="compute"}', stats.compute_seconds),
            ('{step="execute"}', stats.execute_seconds)])  # fmt: skip
    histogram = stats.close_delay
    lines.append(
        "# HELP mlwatcher_worker_window_close_delay_seconds "
        "Seconds between a window's end + grace and the emission of its record."
    )
    lines.append("# TYPE mlwatcher_worker_window_close_delay_seconds histogram")
    cumulative = 0
    for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
        cumulative += count
        lines.append(
            f'mlwatcher_worker_window_close_delay_seconds_bucket{{le="{bound}"}} {cumulative}'
        )
    lines.append(
        f'mlwatcher_worker_window_close_delay_seconds_bucket{{le="+Inf"}} {histogram.count}'
    )
    lines.append(f"mlwatcher_worker_window_close_delay_seconds_sum {_number(histogram.total)}")
    lines.append(f"mlwatcher_worker_window_close_delay_seconds_count {histogram.count}")
    return "\n".join(lines) + "\n"


def parse_prometheus(text: str) -> dict[str, float]:
    """The samples of a Prometheus text page (as served at ``/metrics``): series -> value.

    The series keeps its labels, e.g. ``'mlwatcher_worker_consumer_lag{partition="0"}'``.
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
