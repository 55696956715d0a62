"""The Grafana dashboard's queries, and the metric names our processes really export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.base import SinkStats
from mlwatcher.sinks.prometheus_format import LatestWindows
from mlwatcher.sinks.prometheus_sink import SinkMetrics
from tests.sinks.prometheus_helpers import model_record

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "mlwatcher.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

_METRIC = re.compile(r"\bmlwatcher[_:][a-zA-Z0-9_:]+")
#: Grafana's own variables in a query, as Grafana would substitute them for a 1 s scrape
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def concrete(expr: str, agent: str) -> str:
    """The query Grafana sends for one agent."""
    expr = expr.replace("$agent", agent)
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def sink_metric_names() -> set[str]:
    """Every name `mlwatcher sink prometheus` serves at the default cardinality, read from a
    real exposition of a record with labels, features and drift."""
    windows = LatestWindows()
    record = model_record("a", 0)
    windows.apply(*MetricRecord.decode_columns(record.encode()))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(windows)
    SinkMetrics(registry, windows, SinkStats())
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def worker_metric_names() -> set[str]:
    """Names the stream worker writes on its /metrics (from its source: the exposition is
    hand-written there), with a histogram's sample suffixes."""
    names: set[str] = set()
    for path in (ROOT / "mlwatcher" / "stream_app").rglob("*.py"):
        names |= set(re.findall(r"\bmlwatcher_worker_[a-z0-9_]+", path.read_text()))
    for name in list(names):
        if name.endswith("_seconds") and f"{name}_bucket" in names:
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def recording_rules() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
