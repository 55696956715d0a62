"""Build the whole report: one dashboard PNG per agent, an overview PNG, an HTML page."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlwatcher.report import charts, data

if TYPE_CHECKING:
    from mlwatcher.metrics.reference import ReferenceProfile


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    html_path: Path
    images: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    drifted: pd.DataFrame = field(default_factory=pd.DataFrame)
    windows: dict[str, int] = field(default_factory=dict)  # agent -> windows in the data
    #: agent -> per window: rows, labelled rows at close and now, latest revision
    label_fill: dict[str, pd.DataFrame] = field(default_factory=dict)


def build_report(
    metrics_path: str | Path,
    output_dir: str | Path,
    references: Mapping[str, ReferenceProfile] | None = None,
) -> Report:
    """Read the Parquet metrics under ``metrics_path`` and write the report to ``output_dir``.

    ``references`` (agent → profile) adds each profile's reliability diagram, when it was
    built with labels, next to the agent's latest window.
    """
    references = references or {}
    points = data.load_points(metrics_path)
    frame = data.latest(points)
    if frame.empty:
        raise data.ReportDataError(f"{metrics_path}: the data set holds no metric points")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = Report(html_path=output / "report.html")
    report.images["overview"] = charts.overview(frame, output / "overview.png")
    for agent in data.agents(frame):
        rows = frame[frame["agent_id"] == agent]
        agent_points = points[points["agent_id"] == agent]
        report.windows[agent] = len(data.window_index(rows))
        report.label_fill[agent] = data.label_fill(agent_points)
        report.images[agent] = charts.agent_dashboard(
            rows, agent, output / f"agent_{_file_safe(agent)}.png", agent_points
        )
        profile = references.get(agent)
        report.images[f"{agent} reliability"] = charts.reliability_diagram(
            rows,
            agent,
            output / f"reliability_{_file_safe(agent)}.png",
            profile.calibration if profile is not None else None,
        )
    report.drifted = data.drifted_windows(frame)
    report.drifted.to_csv(output / "drifted_windows.csv", index=False)
    report.html_path.write_text(_page(frame, report, Path(metrics_path)), encoding="utf-8")
    return report


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _image(path: Path, alt: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _page(frame: pd.DataFrame, report: Report, source: Path) -> str:
    start, end = frame["window_start"].min(), frame["window_start"].max()
    agents_list = "".join(
        f"<li><a href='#agent-{html.escape(_file_safe(a))}'>{html.escape(a)}</a> "
        f"({report.windows[a]} windows)</li>"
        for a in report.windows
    )
    sections = [
        f"<section id='agent-{html.escape(_file_safe(agent))}'><h2>{html.escape(agent)}</h2>"
        f"{_image(report.images[agent], f'dashboard of {agent}')}"
        f"{_image(report.images[f'{agent} reliability'], f'reliability diagram of {agent}')}"
        "</section>"
        for agent in report.windows
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MLWatcher report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #eee; }}
td.yes {{ background: #f4a582; }}
</style></head><body>
<h1>MLWatcher report</h1>
<p>Metrics from <code>{html.escape(str(source))}</code>: {len(frame)} points, windows from
{html.escape(str(start))} to {html.escape(str(end))}. Generated {generated}.</p>
<ul>{agents_list}</ul>
<h2>Labels</h2>
{_label_table(report.label_fill)}
<h2>Windows flagged as drifted</h2>
{_drift_table(report.drifted)}
<h2>All agents</h2>
{_image(report.images["overview"], "overview of all agents")}
{"".join(sections)}
</body></html>
"""


def _label_table(fills: Mapping[str, pd.DataFrame]) -> str:
    """Per agent: how many windows got label revisions, and the labelled rows at the close
    of the windows against now (labels that arrived later count in their window)."""
    header = (
        "<tr><th>agent</th><th>windows</th><th>windows revised</th><th>highest revision</th>"
        "<th>labelled rows at close</th><th>labelled rows now</th><th>share of rows "
        "labelled now</th></tr>"
    )
    rows = []
    for agent, fill in fills.items():
        at_close = fill["labelled_at_close"].fillna(0).sum()
        now = fill["labelled"].fillna(0).sum()
        seen = fill["rows"].sum()
        share = now / seen if seen else float("nan")
        rows.append(
            "<tr>"
            f"<td>{html.escape(agent)}</td><td>{len(fill)}</td>"
            f"<td>{int((fill['revision'] > 0).sum())}</td><td>{int(fill['revision'].max())}</td>"
            f"<td>{int(at_close)}</td><td>{int(now)}</td><td>{_number(share)}</td>"
            "</tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _drift_table(drifted: pd.DataFrame) -> str:
    if drifted.empty:
        return "<p>No window was flagged as drifted.</p>"
    header = (
        "<tr><th>agent</th><th>window start</th><th>data set drift</th><th>prediction drift"
        "</th><th>share of features drifted</th><th>features drifted</th><th>examples</th>"
        "<th>accuracy</th></tr>"
    )
    rows = []
    for record in drifted.itertuples(index=False):
        rows.append(
            "<tr>"
            f"<td>{html.escape(record.agent_id)}</td>"
            f"<td>{html.escape(str(record.window_start))}</td>"
            f"{_flag_cell(record.dataset_drift)}{_flag_cell(record.prediction_drift)}"
            f"<td>{_number(record.drift_share)}</td>"
            f"<td>{record.features_drifted}</td>"
            f"<td>{html.escape(record.example_features)}</td>"
            f"<td>{_number(record.accuracy)}</td>"
            "</tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"


def _flag_cell(flag: bool) -> str:
    return "<td class='yes'>yes</td>" if flag else "<td>no</td>"


def _number(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.2f}"
