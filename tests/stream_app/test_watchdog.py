"""StallDetector (pure) and the worker's /health verdicts."""

from __future__ import annotations

from mlwatcher.stream_app import web
from mlwatcher.stream_app.observability import WorkerStats
from mlwatcher.stream_app.processor import Progress
from mlwatcher.stream_app.watchdog import StallDetector


def test_a_lagging_partition_without_progress_stalls_after_the_timeout() -> None:
    detector = StallDetector(timeout_s=10)
    assert detector.observe(0, {0: 5, 1: 7}, {0: 9, 1: 7}, busy=False) == {}
    assert detector.observe(9.9, {0: 5, 1: 7}, {0: 9, 1: 7}, busy=False) == {}
    assert detector.observe(10, {0: 5, 1: 7}, {0: 9, 1: 7}, busy=False) == {0: 4}
    assert detector.stalled_since == 10
    # Progress clears it, and the clock starts again from the new offset.
    assert detector.observe(11, {0: 6, 1: 7}, {0: 9, 1: 7}, busy=False) == {}
    assert detector.stalled_since is None
    assert detector.observe(20.9, {0: 6, 1: 7}, {0: 9, 1: 7}, busy=False) == {}
    assert detector.observe(21, {0: 6, 1: 7}, {0: 9, 1: 7}, busy=False) == {0: 3}


def test_no_lag_busy_or_unknown_offsets_are_not_stalls() -> None:
    detector = StallDetector(timeout_s=1)
    for now in range(5):
        assert detector.observe(now, {0: 9}, {0: 9}, busy=False) == {}  # caught up
        assert detector.observe(now, {1: 3}, {1: 9}, busy=True) == {}  # inside a long batch
        assert detector.observe(now, {2: None}, {2: 9}, busy=False) == {}  # nothing known
    # A partition that leaves and comes back starts a fresh watch.
    detector.observe(10, {}, {}, busy=False)
    assert detector.observe(10, {1: 3}, {1: 9}, busy=False) == {}


def test_health_says_stalled_and_recovering_with_503() -> None:
    stats = WorkerStats()
    progress = Progress(owned=frozenset({0, 1}), recovering=frozenset(), next_offsets={})
    assert web.health("app", stats, progress, joined=True)[0]["status"] == "ok"
    assert web.health("app", stats, progress, joined=True)[1] == 200
    recovering = Progress(owned=frozenset({0}), recovering=frozenset({0}), next_offsets={})
    body, status = web.health("app", stats, recovering, joined=True)
    assert (body["status"], status, body["recovering_partitions"]) == ("recovering", 503, [0])
    assert web.health("app", stats, progress, joined=False)[0]["status"] == "starting"
    stats.stalled = True
    assert web.health("app", stats, progress, joined=True)[0]["status"] == "stalled"
    assert web.health("app", stats, progress, joined=True)[1] == 503
