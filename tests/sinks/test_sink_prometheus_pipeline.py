"""The whole pipeline into Prometheus: a model's MonitoringAgent → a real worker → the metrics
topic → `mlwatcher sink prometheus`, with a real Prometheus scraping the sink and the worker
and evaluating the alert rules."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from tests.deploy.dashboard import ALERTS, concrete, metric_names, queries, recording_rules
from tests.deploy.prometheus_server import PrometheusServer
from tests.helpers import wait_until
from tests.sinks.prometheus_helpers import expected_samples
from tests.sinks.test_sink_prometheus_kafka import SinkProcess, agent_series
from tests.stream_app.conftest import TopicReader, WorkerProcess
from tests.stream_app.test_worker_single import WINDOW_MS, agent_with_clock, next_window_start


def test_model_to_worker_to_sink_to_prometheus(
    kafka_bootstrap: str, unique_topics, tmp_path: Path
) -> None:
    topics = unique_topics({"predictions": 2, "metrics": 2, "dead": 1})
    worker = WorkerProcess(
        kafka_bootstrap, topics, f"prom-{uuid.uuid4().hex[:8]}", tmp_path,
        "--empty-window-limit", "0", "--idle-close-delay-ms", "500",
    ).start()  # fmt: skip
    # 2 s windows: 10 windows (the default expiry) would be shorter than the test
    sink = SinkProcess(
        kafka_bootstrap, topics, f"prom-{uuid.uuid4().hex[:8]}", tmp_path,
        "--expire-after-windows", "1000",
    )  # fmt: skip
    metrics = TopicReader(kafka_bootstrap, topics["metrics"], 2)
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    try:
        worker.wait_ready(timeout=90)
        targets = {
            "mlwatcher-sink": [f"127.0.0.1:{sink.port}"],
            "mlwatcher-worker": [f"127.0.0.1:{worker.web_port}"],
        }
        with PrometheusServer(prometheus_dir, targets, rule_files=[ALERTS]) as prom:
            agent_id = f"model-{uuid.uuid4().hex[:6]}"
            start = next_window_start()
            clock = [start]
            rng = np.random.default_rng(3)
            with agent_with_clock(
                kafka_bootstrap, topics["predictions"], agent_id, clock, n_classes=3
            ) as agent:
                for window in range(2):  # the second window's inputs moved: drift
                    for batch in range(5):
                        clock[0] = start + window * WINDOW_MS + 100 * batch
                        agent.collect_data(
                            rng.dirichlet([1, 2, 3], size=50),
                            rng.normal(loc=3.0 * window, size=(50, 4)),
                            rng.integers(0, 3, 50),
                        )
            records = metrics.wait_for(
                lambda _: len(metrics.records(agent_id)) >= 2 and metrics.records(agent_id),
                60,
                "the records of both windows",
            )
            last = max(records, key=lambda r: r.window_start_ms)
            assert last.window_start_ms == start + WINDOW_MS
            wait_until(
                lambda: agent_series(prom, agent_id) == expected_samples([last]),
                60,
                "Prometheus to hold the last window's series",
            )
            share = next(
                p.value for p in last.points if p.what == "dataset_drift" and p.stat == "share"
            )
            accuracy = next(p.value for p in last.points if p.what == "overall_accuracy")
            assert share == 1.0  # every feature moved by 3 sigma
            assert prom.values(f'mlwatcher_dataset_drift{{agent_id="{agent_id}",stat="share"}}')
            assert list(
                prom.values(f'mlwatcher_overall_accuracy{{agent_id="{agent_id}"}}').values()
            ) == [accuracy]
            assert prom.targets_up() == {"mlwatcher-sink": 1.0, "mlwatcher-worker": 1.0}
            # Dashboard panels on series both processes really serve (worker ones included)
            # get data in Prometheus.
            present = {
                item["metric"]["__name__"]
                for item in prom.query('count by (__name__) ({__name__=~"mlwatcher_.+"})')
            }
            for title, expr in queries():
                names = metric_names(expr)
                if names <= present and not names & recording_rules():
                    query = concrete(expr, agent_id)
                    wait_until(lambda q=query: prom.query(q), 30, f"data for {title!r}: {expr}")
    finally:
        metrics.close()
        sink.close()
        worker.close()
