"""`mlwatcher sink prometheus` on the real broker, scraped by a real Prometheus server."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests

from mlwatcher.brokers import free_port
from tests.deploy.dashboard import ALERTS, concrete, metric_names, queries, sink_metric_names
from tests.deploy.prometheus_server import PrometheusServer
from tests.helpers import wait_until
from tests.sinks.prometheus_helpers import (
    WINDOW_MS,
    expected_samples,
    label_revision,
    model_record,
    parse_exposition,
)
from tests.sinks.sink_helpers import (
    FAST_GROUP,
    latest_state,
    produce,
    read_dead_letters,
    start_sink,
)


def _windows_now(count: int) -> list[int]:
    """Starts of ``count`` consecutive windows that ended in the last few minutes (so they
    are neither expired nor outside the sink's lookback)."""
    first = (int(time.time() * 1000) // WINDOW_MS - count - 1) * WINDOW_MS
    return [first + i * WINDOW_MS for i in range(count)]


#: Prometheus' lastEvaluation of a rule not evaluated yet
_NEVER = "0001-01-01T00:00:00Z"


class SinkProcess:
    def __init__(
        self, bootstrap: str, topics: dict[str, str], group: str, log_dir: Path, *extra: str
    ) -> None:
        self.port = free_port()
        self.args = [
            "sink", "prometheus",
            "-b", bootstrap,
            "--metrics-topic", topics["metrics"],
            "--dead-letter-topic", topics["dead"],
            "--group-id", group,
            "--web-port", str(self.port),
            "--progress-interval", "1",
            *FAST_GROUP,
            *extra,
        ]  # fmt: skip
        self.log_path = log_dir / f"sink-prometheus-{self.port}.log"
        self.process = start_sink(self.args, self.log_path)

    def scrape(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"sink exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except requests.RequestException:
            return None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def agent_series(prometheus: PrometheusServer, agent: str) -> dict:
    """Every model series of ``agent`` as Prometheus stored it: ``{(name, labels): value}``."""
    return prometheus.series(
        f'{{__name__=~"mlwatcher_.+",__name__!~"mlwatcher_sink_.+",agent_id="{agent}"}}'
    )


def test_prometheus_scrapes_the_latest_window_and_bad_input_is_dead_lettered(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 2, "dead": 1})
    starts = _windows_now(4)
    # "alpha" drifts in its third window; both agents have labels, so accuracy is there.
    alpha = [
        model_record("alpha", 0, start_ms=s, shift=1.5 * (i == 2)) for i, s in enumerate(starts)
    ]
    beta = [model_record("beta", 0, start_ms=s, n_features=3, seed=7) for s in starts[:3]]
    produce(kafka_bootstrap, topics["metrics"], [*alpha[:2], *beta[:2]], partitions=2)
    produce(
        kafka_bootstrap,
        topics["metrics"],
        [alpha[2], beta[2]],
        partitions=2,
        extra_values=[(0, b"\xc3\x01 not a metric record")],
    )
    group = f"prom-{uuid.uuid4().hex[:8]}"
    sink = SinkProcess(kafka_bootstrap, topics, group, tmp_path)
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    try:
        with PrometheusServer(
            prometheus_dir, {"mlwatcher-sink": [f"127.0.0.1:{sink.port}"]}, rule_files=[ALERTS]
        ) as prom:
            expected_end = {
                frozenset({("agent_id", "alpha")}): alpha[2].window_end_ms / 1000,
                frozenset({("agent_id", "beta")}): beta[2].window_end_ms / 1000,
            }
            wait_until(
                lambda: prom.values("mlwatcher_window_end_timestamp_seconds") == expected_end,
                60,
                "Prometheus to hold the last window of both agents",
            )
            last = alpha[2]
            # every series of the agent, exactly the last window's values (default filter)
            assert agent_series(prom, "alpha") == expected_samples([last])
            assert agent_series(prom, "beta") == expected_samples([beta[2]])
            # and the two the issue names, spelled out
            share = next(
                p.value for p in last.points if p.what == "dataset_drift" and p.stat == "share"
            )
            accuracy = next(p.value for p in last.points if p.what == "overall_accuracy")
            assert share > 0.5  # the shifted window did drift
            drift = prom.values('mlwatcher_dataset_drift{agent_id="alpha",stat="share"}')
            assert list(drift.values()) == [share]
            assert list(prom.values('mlwatcher_overall_accuracy{agent_id="alpha"}').values()) == [
                accuracy
            ]

            # Every dashboard query is valid PromQL; those on the sink's series have data.
            exported = sink_metric_names()
            for title, expr in queries():
                query = concrete(expr, "alpha")
                prom.query(query)  # fails on invalid PromQL
                if metric_names(expr) <= exported:  # rates need two scrapes: wait
                    wait_until(lambda q=query: prom.query(q), 30, f"data for {title!r}: {expr}")
            # The alert rules load and evaluate on the real series.
            wait_until(
                lambda: all(r["lastEvaluation"] != _NEVER for r in prom.rules()),
                30,
                "every rule to be evaluated",
            )
            assert [r for r in prom.rules() if r["health"] != "ok"] == []
            assert prom.values('mlwatcher:estimated_accuracy{agent_id="alpha"}')

            # the undecodable record: dead-lettered with the reason, counted, sink still serving
            [dead] = read_dead_letters(kafka_bootstrap, topics["dead"], 1)
            headers = dict(dead.headers())
            assert dead.value() == b"\xc3\x01 not a metric record"
            assert headers["mlwatcher.stage"] == b"sink-prometheus"
            assert headers["mlwatcher.source.partition"] == b"0"
            assert headers["mlwatcher.reason"] == b"unknown-schema"
            assert b"fingerprint" in headers["mlwatcher.detail"]
            wait_until(
                lambda: prom.values("sum(mlwatcher_sink_dead_letters_total)") == {frozenset(): 1.0},
                30,
                "the dead letter to be counted",
            )
            produce(kafka_bootstrap, topics["metrics"], [alpha[3]], partitions=2)
            wait_until(
                lambda: agent_series(prom, "alpha") == expected_samples([alpha[3]]),
                30,
                "the next window after the bad record",
            )
            # Labels arrive late: a label revision of the newest window replaces its label
            # series; one of an older window must not overwrite the newest window's gauges.
            revised = label_revision(alpha[3], 1)
            produce(kafka_bootstrap, topics["metrics"], [revised, label_revision(alpha[2], 1)], 2)
            latest = expected_samples(latest_state([alpha[3], revised]))
            assert latest != expected_samples([alpha[3]])
            wait_until(
                lambda: (
                    agent_series(prom, "alpha") == latest
                    and prom.values('sum(mlwatcher_sink_records_total{outcome="stale"})')
                ),
                30,
                "the label revision of the newest window, and the stale one counted",
            )
            records = prom.values("mlwatcher_sink_records_total")
            assert records[frozenset({("outcome", "new")})] == 7
            assert records[frozenset({("outcome", "label_revision")})] == 1
            assert records[frozenset({("outcome", "stale")})] == 1
            assert records[frozenset({("outcome", "dead_letter")})] == 1
            assert [r for r in prom.rules() if r["health"] != "ok"] == []

        # A restarted sink rebuilds the latest windows from the topic (lookback), without
        # waiting for new records.
        sink.close()
        restarted = SinkProcess(kafka_bootstrap, topics, group, tmp_path)
        try:
            want = latest | expected_samples([beta[2]])
            wait_until(
                lambda: (text := restarted.scrape()) and parse_exposition(text) == want,
                60,
                "the restarted sink to serve the same series",
            )
        finally:
            restarted.close()
    finally:
        sink.close()


def test_two_sink_processes_share_the_agents_without_serving_one_twice(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"metrics": 4, "dead": 1})
    [start] = _windows_now(1)
    agents = [f"agent-{i}" for i in range(8)]
    records = [
        model_record(a, 0, start_ms=start, n_features=2, seed=i) for i, a in enumerate(agents)
    ]
    produce(kafka_bootstrap, topics["metrics"], records, partitions=4)
    group = f"prom-{uuid.uuid4().hex[:8]}"
    first = SinkProcess(kafka_bootstrap, topics, group, tmp_path)
    second = None
    try:
        want = expected_samples(records)
        wait_until(
            lambda: (text := first.scrape()) and parse_exposition(text) == want,
            60,
            "one sink to serve every agent",
        )
        second = SinkProcess(kafka_bootstrap, topics, group, tmp_path)

        def shared() -> bool:
            texts = [first.scrape(), second.scrape()]
            if None in texts:
                return False
            served = [parse_exposition(t) for t in texts]
            mine = [
                {dict(labels)["agent_id"] for _, labels in s if dict(labels).get("agent_id")}
                for s in served
            ]
            # each serves some agents, none twice, and together exactly the expected series
            return all(mine) and not mine[0] & mine[1] and {**served[0], **served[1]} == want

        wait_until(shared, 90, "the two sinks to split the agents after the rebalance")
    finally:
        first.close()
        if second is not None:
            second.close()
