"""deploy/grafana/mlwatcher.json: Grafana cannot be installed here (no Debian, PyPI or npm
package ships its server), so the dashboard's structure is checked, every query names only
series our processes export, and the end-to-end test runs the queries on a real Prometheus
(tests/sinks/test_sink_prometheus_kafka.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.dashboard import (
    ROOT,
    dashboard,
    metric_names,
    panels,
    queries,
    recording_rules,
    sink_metric_names,
    worker_metric_names,
)

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def test_dashboard_has_an_agent_variable_and_a_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    agent = variables["agent"]
    assert agent["type"] == "query"
    assert agent["definition"] == agent["query"]["query"]
    metric, label = agent["definition"].removeprefix("label_values(").rstrip(")").split(", ")
    assert label == "agent_id"
    assert metric in sink_metric_names()


def test_panels_are_laid_out_on_the_grid_without_overlap() -> None:
    everything = dashboard()["panels"]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["datasource"] == panel["datasource"]


def test_every_query_names_only_series_that_are_exported() -> None:
    known = sink_metric_names() | worker_metric_names() | recording_rules()
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"{title}: {expr} names no mlwatcher series"
        assert names <= known, f"{title}: {sorted(names - known)} exported by nothing"


def test_the_worker_exports_the_stall_metrics_the_dashboard_and_rules_use() -> None:
    assert {"mlwatcher_worker_stalled", "mlwatcher_worker_stalls_total"} <= (worker_metric_names())


def test_model_panels_per_agent_then_worker_health() -> None:
    by_title = {p["title"]: p for p in panels()}
    model = ["Class mix (predicted)", "Confidence", "Accuracy", "Drift share",
             "Feature drift (PSI)"]  # fmt: skip
    for title in model:
        for target in by_title[title]["targets"]:
            assert 'agent_id=~"$agent"' in target["expr"], title
    assert by_title["Feature drift (PSI)"]["type"] == "heatmap"
    assert "mlwatcher_feature_drift" in by_title["Feature drift (PSI)"]["targets"][0]["expr"]
    worker = [p for p in panels() if any("mlwatcher_worker_" in t["expr"] for t in p["targets"])]
    assert worker
    lowest_model = max(by_title[t]["gridPos"]["y"] for t in model)
    assert all(p["gridPos"]["y"] > lowest_model for p in worker)
    rows = [p for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows[0]["repeat"] == "agent"  # one block of model panels per selected agent


def test_provisioning_points_grafana_at_the_dashboard_and_prometheus() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "mlwatcher.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    current = {v["name"]: v for v in dashboard()["templating"]["list"]}["datasource"]["current"]
    assert current["value"] == source["uid"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "mlwatcher.yml").read_text())[
        "providers"
    ]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in compose["grafana"]["volumes"])
    assert mounts["./deploy/grafana/mlwatcher.json"].startswith(provider["options"]["path"] + "/")
    assert mounts["./deploy/grafana/provisioning/dashboards"] == (
        "/etc/grafana/provisioning/dashboards"
    )
    assert mounts["./deploy/grafana/provisioning/datasources"] == (
        "/etc/grafana/provisioning/datasources"
    )
    for host_path in mounts:
        if host_path.startswith("./"):
            assert (ROOT / host_path).exists(), host_path
    assert Path(ROOT / "deploy/grafana/mlwatcher.json").is_file()
