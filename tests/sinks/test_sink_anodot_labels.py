"""Label metrics to Anodot once per window, after waiting for late labels: the pure horizon,
and both Anodot sinks through the real broker against the fake Anodot server."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from fake_anodot import FakeAnodot, series_in_order
from sink_helpers import (
    FAST_GROUP,
    LABEL_WHATS,
    WINDOW_MS,
    expected_series_points,
    latest_state,
    make_labelled_record,
    read_dead_letters,
    revision_stream,
    start_sink,
)

from mlwatcher.dead_letter import SourceRef
from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.anodot_client import AnodotClient
from mlwatcher.sinks.anodot_format import LABEL_WAIT, series_id, to_anodot_point
from mlwatcher.sinks.anodot_labels import (
    HELD,
    LATE,
    NO_LABELS,
    REPLAY,
    REVISED,
    AnodotLabelSink,
    AnodotLabelSinkConfig,
    LabelHorizon,
)
from mlwatcher.sinks.anodot_sink import AnodotSink, AnodotSinkConfig
from mlwatcher.sinks.rate_limit import RateLimiter
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import committed_offsets, ordered_producer, wait_until

TOKEN = "tok-labels-0123"
WAIT_S = 90  # 1.5 windows: revision 1 (one window late) is in time, revision 2 is late


def _source(offset: int, partition: int = 0) -> SourceRef:
    return SourceRef("m", partition, offset)


def test_the_horizon_holds_revises_releases_once_and_refuses_late_revisions() -> None:
    horizon = LabelHorizon(WAIT_S * 1000)
    first = make_labelled_record("a", 0)
    end = first.window_end_ms
    assert horizon.offer(first, _source(0), b"a", end + 1) == HELD
    assert horizon.offer(make_labelled_record("a", 0, 1), _source(1), b"a", end + 61_000) == REVISED
    assert horizon.offer(first, _source(2), b"a", end + 62_000) == REPLAY  # never goes back
    assert horizon.oldest_offsets() == {("m", 0): 0}
    assert horizon.release(lambda _: end + WAIT_S * 1000 - 1) == []
    [released] = horizon.release(lambda _: end + WAIT_S * 1000)
    assert released.record.revision == 1
    assert {p.what for p in released.record.points} <= LABEL_WHATS
    assert released.record.points == make_labelled_record("a", 0, 1).points
    assert released.source == _source(0)
    assert horizon.release(lambda _: end + 10**9) == []  # once
    assert horizon.oldest_offsets() == {}
    # after the window was sent, or past its due time, a revision is late
    assert horizon.offer(make_labelled_record("a", 0, 2), _source(3), b"a", end + 1) == LATE
    second = make_labelled_record("a", 1)
    assert horizon.offer(second, _source(4), b"a", second.window_end_ms) == HELD
    late = make_labelled_record("a", 1, 1)
    assert horizon.offer(late, _source(5), b"a", second.window_end_ms + WAIT_S * 1000 + 1) == LATE
    unlabelled = MetricRecord("a", 0, WINDOW_MS, 10, 10, [Point("rows_seen", "counter", 10.0)])
    assert horizon.offer(unlabelled, _source(6), b"a", 0) == NO_LABELS
    with pytest.raises(ValueError, match="label wait"):
        LabelHorizon(-1)


@pytest.fixture
def server() -> Iterator[FakeAnodot]:
    with FakeAnodot(token=TOKEN) as fake:
        yield fake


def _stream(agents: list[str], windows: int, base_ms: int) -> list[tuple[MetricRecord, int]]:
    """(record, emission time) as a worker emits them when labels come 1-2 windows late:
    at the end of window k, revision 0 of k, revision 1 of k-1 and revision 2 of k-2."""
    stream = []
    for k in range(windows + 2):
        emitted = base_ms + (k + 1) * WINDOW_MS + 1000
        for agent in agents:
            for lag in range(3):
                window = k - lag
                if 0 <= window < windows:
                    record = make_labelled_record(agent, window, lag)
                    shift = base_ms - make_labelled_record(agent, 0).window_start_ms
                    record.window_start_ms += shift
                    record.window_end_ms += shift
                    stream.append((record, emitted))
    return stream


def _produce(bootstrap: str, topic: str, items: list[tuple[MetricRecord | bytes, int]]) -> None:
    producer = ordered_producer(bootstrap)
    for record, emitted in items:
        if isinstance(record, bytes):
            producer.produce(topic, value=record, key=b"x", partition=0, timestamp=emitted)
        else:
            partition = 0 if record.agent_id == "a" else 1
            producer.produce(
                topic, value=record.encode(), key=record.key, partition=partition, timestamp=emitted
            )
    assert producer.flush(30) == 0


def _run(sink, shutdown: Shutdown) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    return thread


def test_both_anodot_sinks_through_the_broker(
    kafka_bootstrap: str, unique_topics, server: FakeAnodot
) -> None:
    topics = unique_topics({"metrics": 2, "dlq": 1})
    # windows in the near future: the wall clock never makes one due, record times do
    base_ms = (int(time.time() * 1000) // WINDOW_MS + 2) * WINDOW_MS
    windows = 4
    stream = _stream(["a", "b"], windows, base_ms)
    last_time = stream[-1][1]
    extra: list[tuple[MetricRecord | bytes, int]] = [
        stream[3],  # a worker's replay: the same record again
        (b"\x00not a record", last_time),
    ]
    _produce(kafka_bootstrap, topics["metrics"], [*stream, *extra])

    def client() -> AnodotClient:
        return AnodotClient(server.base_url, TOKEN, rate_limiter=RateLimiter(5000))

    shutdown = Shutdown()
    labels = AnodotLabelSink(
        AnodotLabelSinkConfig(
            kafka_bootstrap,
            topics["metrics"],
            topics["dlq"],
            group_id="labels-" + topics["metrics"],
            label_wait_seconds=WAIT_S,
        ),
        client(),
    )
    plain = AnodotSink(
        AnodotSinkConfig(
            kafka_bootstrap, topics["metrics"], topics["dlq"], group_id="plain-" + topics["metrics"]
        ),
        client(),
    )
    records = [record for record, _ in stream]
    at_close = [r for r in records if r.revision == 0]
    # what a person wants in Anodot: each window's label metrics with the labels that came
    # within WAIT_S of its end (revision 1 here; revision 2 came 2 windows late)
    in_time = [r for r in records if r.revision == 1]
    wanted_labels = set()
    for record in in_time:
        for point in record.points:
            body = to_anodot_point(record.agent_id, record.window_start_ms, point, f"{WAIT_S}s")
            assert body["properties"][LABEL_WAIT] == "90s"
            wanted_labels.add((series_id(body), body["timestamp"], body["value"]))
    wanted = expected_series_points(at_close) | wanted_labels
    threads = [_run(labels, shutdown), _run(plain, shutdown)]
    try:
        server.wait_for(
            lambda s: {(p.series, p.timestamp, p.value) for p in s.accepted()} >= wanted, 60
        )
        wait_until(
            lambda: (
                committed_offsets(
                    kafka_bootstrap, "labels-" + topics["metrics"], topics["metrics"], 2
                )
                == committed_offsets(
                    kafka_bootstrap, "plain-" + topics["metrics"], topics["metrics"], 2
                )
                == [
                    len([r for r in records if r.agent_id == "a"]) + 2,
                    len([r for r in records if r.agent_id == "b"]),
                ]
            ),
            60,
            "both groups to commit everything",
        )
        dead = read_dead_letters(kafka_bootstrap, topics["dlq"], expected=2)
    finally:
        shutdown.request_stop()
        for thread in threads:
            thread.join(30)
    arrivals = Counter((p.series, p.timestamp, p.value) for p in server.accepted())
    assert set(arrivals) == wanted
    assert max(arrivals.values()) == 1
    for series, timestamps in series_in_order(server.accepted()):
        assert timestamps == sorted(timestamps), f"series {series} out of order"
    assert labels.stats.windows_sent == 2 * windows
    assert labels.stats.revisions_taken == 2 * windows
    assert labels.stats.revisions_late == 2 * windows
    assert plain.stats.revisions_skipped == 4 * windows + 1  # with the replayed one
    # the undecodable record once per group
    assert sorted(dict(m.headers())["mlwatcher.stage"] for m in dead) == [
        b"sink-anodot",
        b"sink-anodot-labels",
    ]


def test_kill_9_while_windows_wait_for_labels_loses_nothing(
    kafka_bootstrap: str, unique_topics, server: FakeAnodot, tmp_path
) -> None:
    topics = unique_topics({"metrics": 2, "dlq": 1})
    base_ms = (int(time.time() * 1000) // WINDOW_MS + 2) * WINDOW_MS
    windows = 6
    stream = _stream(["a", "b"], windows, base_ms)
    half = len(stream) // 2
    _produce(kafka_bootstrap, topics["metrics"], stream[:half])
    wanted = set()
    for record, _ in stream:
        if record.revision == 1:
            for point in record.points:
                body = to_anodot_point(record.agent_id, record.window_start_ms, point, "90s")
                wanted.add((series_id(body), body["timestamp"], body["value"]))
    args = [
        "sink", "anodot-labels",
        "-b", kafka_bootstrap, *FAST_GROUP,
        "--metrics-topic", topics["metrics"],
        "--dead-letter-topic", topics["dlq"],
        "--group-id", "labels-kill",
        "--base-url", server.base_url,
        "--label-wait", str(WAIT_S),
        "--progress-interval", "1",
    ]  # fmt: skip
    env = {"MLWATCHER_ANODOT_TOKEN": TOKEN}
    log_path = tmp_path / "sink.log"
    first = start_sink(args, log_path, env)
    try:
        # the first half releases some windows; later ones are held when the sink dies
        server.wait_for(lambda s: s.accepted_count() >= 1, timeout=60)
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, "labels-kill", topics["metrics"], 2)[0] > 0,
            30,
            "a commit of the released windows",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sent_before = {(p.series, p.timestamp, p.value) for p in server.accepted()}
        assert sent_before and sent_before < wanted
        second = start_sink(args, log_path, env)
        _produce(kafka_bootstrap, topics["metrics"], stream[half:])
        server.wait_for(
            lambda s: {(p.series, p.timestamp, p.value) for p in s.accepted()} >= wanted, 90
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for process in (first, locals().get("second")):
            if process is not None and process.poll() is None:
                process.kill()
    arrivals = Counter((p.series, p.timestamp, p.value) for p in server.accepted())
    assert set(arrivals) == wanted  # every window's in-time label metrics, nothing else
    for series, timestamps in series_in_order(server.accepted()):
        assert timestamps == sorted(timestamps), f"series {series} out of order"
    duplicates = sum(count - 1 for count in arrivals.values())
    print(f"\nkill -9 after {len(sent_before)} of {len(wanted)} label points: {duplicates} re-sent")
    assert TOKEN not in log_path.read_text()


def test_replay_anodot_sends_each_windows_latest_revision(server: FakeAnodot, tmp_path) -> None:
    from mlwatcher.sinks.parquet_files import write_records
    from mlwatcher.sinks.replay import replay_parquet

    records = revision_stream(["a", "b"], windows=4)
    write_records(records, tmp_path, "m-0-00000000000000000000-00000000000000000099.parquet")
    client = AnodotClient(server.base_url, TOKEN, rate_limiter=RateLimiter(5000))
    with client:
        stats = replay_parquet(tmp_path, client)
    wanted = expected_series_points(latest_state(records))
    arrivals = Counter((p.series, p.timestamp, p.value) for p in server.accepted())
    assert set(arrivals) == wanted and max(arrivals.values()) == 1
    assert stats.points_accepted == len(wanted) and not stats.rejected
    for series, timestamps in series_in_order(server.accepted()):
        assert timestamps == sorted(timestamps), f"series {series} out of order"


def test_the_label_whats_are_what_the_engine_puts_in_a_label_revision() -> None:
    import numpy as np

    from mlwatcher.metrics.compute import label_points
    from mlwatcher.metrics.counters import ExactCounters
    from mlwatcher.schemas.messages import LABEL_WHATS as CONTRACT

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=300)
    counters = ExactCounters.from_batch(
        probs, probs.argmax(axis=1), rng.integers(0, 4, 300).astype(np.int32), None, 0, ()
    )
    assert {p.what for p in label_points(counters)} == CONTRACT == LABEL_WHATS
