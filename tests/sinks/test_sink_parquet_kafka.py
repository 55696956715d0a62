"""The Parquet sink end to end against a real broker: exactly once, also across kill -9."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import duckdb
from parquet_helpers import (
    expected_rows,
    normalise,
    read_with_duckdb,
    read_with_pandas,
    read_with_polars,
    read_with_pyarrow,
)
from sink_helpers import (
    FAST_GROUP,
    REPO,
    latest_state,
    make_records,
    produce,
    read_dead_letters,
    revision_stream,
    start_sink,
)

from mlwatcher.dead_letter import HEADER_DETAIL, HEADER_REASON
from mlwatcher.sinks.parquet_files import read_data_set
from mlwatcher.sinks.parquet_format import latest_revisions
from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
from mlwatcher.sinks.shutdown import Shutdown
from tests.helpers import committed_offsets, end_offsets, wait_until


def _all_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    ends = end_offsets(bootstrap, topic, partitions)
    return committed_offsets(bootstrap, group, topic, partitions) == ends


def test_parquet_sink_writes_every_point_once(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 3, "dlq": 1})
    records = make_records(["agent a", "b/2", "c"], windows=30, n_points=25)
    produce(kafka_bootstrap, topics["metrics"], records, 3, [(0, b"\xc3\x01garbage!")])
    output = tmp_path / "data"
    config = ParquetSinkConfig(
        kafka_bootstrap,
        topics["metrics"],
        topics["dlq"],
        output,
        group_id="pq-1",
        roll_seconds=0.3,
    )
    shutdown = Shutdown()
    sink = ParquetSink(config)
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    wait_until(
        lambda: _all_committed(kafka_bootstrap, "pq-1", topics["metrics"], 3),
        timeout=60,
        what="the sink to commit every record",
    )
    shutdown.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    expected = expected_rows(records)
    assert read_with_pyarrow(output) == expected
    assert read_with_pandas(output) == expected
    assert read_with_duckdb(output) == expected
    assert read_with_polars(output) == expected
    dead = read_dead_letters(kafka_bootstrap, topics["dlq"], expected=1)
    assert len(dead) == 1
    assert "unknown schema fingerprint" in dict(dead[0].headers())[HEADER_DETAIL].decode()
    assert dict(dead[0].headers())[HEADER_REASON] == b"unknown-schema"
    assert sink.stats.records_dead_lettered == 1
    assert not list(output.rglob(".*tmp-*"))


def test_parquet_sink_kill_9_and_restart_gives_exactly_the_produced_points(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 2, "dlq": 1})
    records = make_records([f"agent-{i}" for i in range(4)], windows=150, n_points=60)
    produce(kafka_bootstrap, topics["metrics"], records, 2)
    output = tmp_path / "data"
    args = [
        "sink",
        "parquet",
        "-b",
        kafka_bootstrap,
        *FAST_GROUP,
        "--metrics-topic",
        topics["metrics"],
        "--dead-letter-topic",
        topics["dlq"],
        "--group-id",
        "pq-kill",
        "--output",
        str(output),
        "--roll-seconds",
        "0.05",
        "--roll-bytes",
        "20000",  # many small files, each fsync'ed: the first run is easy to kill mid-way
    ]
    log_path = tmp_path / "sink.log"
    # Files durable, commit not yet sent, for 0.3 s of every flush: the kill lands there.
    first = start_sink(args, log_path, commit_delay=0.3)
    second = None
    try:
        wait_until(lambda: len(list(output.rglob("*.parquet"))) >= 5, 60, "first files")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        files_at_kill = len(list(output.rglob("*.parquet")))
        second = start_sink(args, log_path)
        wait_until(
            lambda: _all_committed(kafka_bootstrap, "pq-kill", topics["metrics"], 2),
            timeout=90,
            what="the restarted sink to commit every record",
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    expected = expected_rows(records)
    got = read_with_pyarrow(output)
    assert sum(got.values()) == sum(expected.values())
    assert got == expected  # every point exactly once
    assert read_with_duckdb(output) == expected
    assert not list(output.rglob(".*tmp-*"))
    assert "uncommitted files" in log_path.read_text()  # the restart did have to clean up
    print(f"\nkill -9 with {files_at_kill} files written; log:\n{log_path.read_text()[-1500:]}")


def test_a_window_re_emitted_by_a_worker_is_written_once(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    """After a worker crash a window's record may arrive again, identical, at a later offset."""
    topics = unique_topics({"metrics": 2, "dlq": 1})
    records = make_records(["a", "b"], windows=6, n_points=10)
    # Re-emitted while the first copy is still buffered in the sink ...
    produce(kafka_bootstrap, topics["metrics"], [*records, records[0], records[7]], 2)
    output = tmp_path / "data"
    config = ParquetSinkConfig(
        kafka_bootstrap,
        topics["metrics"],
        topics["dlq"],
        output,
        group_id="pq-dup",
        roll_seconds=0.2,
    )
    shutdown = Shutdown()
    sink = ParquetSink(config)
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: _all_committed(kafka_bootstrap, "pq-dup", topics["metrics"], 2),
            timeout=60,
            what="the first copies to be committed",
        )
        # ... and re-emitted after the first copy's file was written and committed.
        produce(kafka_bootstrap, topics["metrics"], [records[1], records[6]], 2)
        wait_until(
            lambda: (
                sink.stats.records == len(records) + 4
                and _all_committed(kafka_bootstrap, "pq-dup", topics["metrics"], 2)
            ),
            timeout=60,
            what="the late copies to be consumed and committed",
        )
    finally:
        shutdown.request_stop()
        thread.join(30)
    assert sink.stats.records_duplicate == 4
    assert read_with_pyarrow(output) == expected_rows(records)


def _documented_queries() -> tuple[str, str]:
    """The DuckDB and pandas "latest revision per window" blocks of docs/sinks.md, verbatim."""
    text = (REPO / "docs" / "sinks.md").read_text()
    section = text[text.index("### Label revisions: the latest revision per window") :]
    sql = re.search(r"```sql\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert sql and python, "the documented queries are missing from docs/sinks.md"
    return sql[1], python[1]


def test_every_revision_is_kept_once_and_the_documented_latest_queries_are_right(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 2, "dlq": 1})
    records = revision_stream(["a", "b", "c"], windows=5)
    assert any(r.revision == 2 for r in records)
    # a worker's replay re-sends a revision and a record at close, identical
    replayed = [records[4], records[0]]
    assert replayed[0].revision > 0
    produce(kafka_bootstrap, topics["metrics"], [*records, *replayed], 2, [(1, b"\x00bad")])
    output = tmp_path / "metrics-parquet"
    config = ParquetSinkConfig(
        kafka_bootstrap,
        topics["metrics"],
        topics["dlq"],
        output,
        group_id="pq-rev",
        roll_seconds=0.2,
    )
    shutdown = Shutdown()
    sink = ParquetSink(config)
    thread = threading.Thread(target=sink.run, args=(shutdown,), daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: sink.stats.records + sink.stats.records_dead_lettered >= len(records) + 3,
            timeout=60,
            what="every record to be consumed",
        )
        wait_until(
            lambda: _all_committed(kafka_bootstrap, "pq-rev", topics["metrics"], 2),
            timeout=60,
            what="every record to be written and committed",
        )
        dead = read_dead_letters(kafka_bootstrap, topics["dlq"], expected=1)
    finally:
        shutdown.request_stop()
        thread.join(30)
    assert sink.stats.records_duplicate == 2
    assert [dict(m.headers())[HEADER_REASON] for m in dead] == [b"undecodable"]
    assert read_with_pyarrow(output) == expected_rows(records)  # every revision, once
    assert read_with_duckdb(output) == expected_rows(records)

    expected = expected_rows(latest_state(records))
    sql, python = _documented_queries()
    sql = sql.replace("metrics-parquet", str(output))
    assert normalise(duckdb.sql(sql).df()) == expected
    namespace: dict[str, object] = {}
    exec(python.replace('"metrics-parquet"', repr(str(output))), namespace)
    assert normalise(namespace["latest"]) == expected  # type: ignore[arg-type]
    latest = latest_revisions(read_data_set(output))
    assert normalise(latest.to_pandas()) == expected
    # what a person sees: window 0 of agent a filled in from 10 labelled rows to 30
    history = duckdb.sql(
        f"SELECT revision, value FROM read_parquet('{output}/**/*.parquet', "
        "hive_partitioning=true) WHERE agent_id = 'a' AND what = 'labelled_rows' "
        "AND window_start = (SELECT min(window_start) FROM "
        f"read_parquet('{output}/**/*.parquet')) ORDER BY revision"
    ).fetchall()
    assert history == [(0, 10.0), (1, 20.0), (2, 30.0)]
