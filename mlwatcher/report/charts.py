"""Matplotlib charts of one agent's windows (Agg backend: no display needed).

Each agent gets one dashboard: panels that share the time axis, so a change in the
inputs (drift heatmap) lines up with its effect on the predictions (class mix, confidence)
and on the quality (accuracy, realised and estimated without labels). Windows the data set
counts as drifted are shaded in every panel. An overview chart puts every agent's accuracy
and drift share side by side; a reliability diagram per agent shows its calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

from mlwatcher.report import data, names

if TYPE_CHECKING:
    from mlwatcher.metrics.calibration import CalibrationMap

DRIFT_SHADE = "#f4a582"
_FLAG_COLOURS = ListedColormap(["#f7f7f7", "#b2182b"])
_DPI = 100


def window_length(frame: pd.DataFrame) -> pd.Timedelta:
    """The agent's window length, from window_end - window_start, else the smallest gap."""
    if "window_end" in frame.columns and frame["window_end"].notna().any():
        lengths = (frame["window_end"] - frame["window_start"]).dropna()
        if not lengths.empty and lengths.max() > pd.Timedelta(0):
            return lengths.median()
    starts = data.window_index(frame)
    if len(starts) > 1:
        return pd.Series(starts).diff().dropna().min()
    return pd.Timedelta(seconds=60)


def agent_dashboard(
    frame: pd.DataFrame, agent: str, path: Path, points: pd.DataFrame | None = None
) -> Path:
    """Write the dashboard of one agent's rows (latest state, :func:`data.latest`) to
    ``path`` (PNG). ``points``: the agent's rows of every revision, to show how the label
    metrics filled in since each window closed (default: ``frame``)."""
    points = frame if points is None else points
    length = window_length(frame)
    drift = data.feature_drift(frame)
    n_features = len(drift.flags.index)
    heights = [3, 1.4, 2, 2, 2, 0.9, max(2.0, min(6.0, n_features * 0.06))]
    figure, axes = plt.subplots(
        len(heights),
        1,
        figsize=(12, sum(heights) + 1.5),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        constrained_layout=True,
    )
    figure.suptitle(f"agent {agent}", fontsize=14, fontweight="bold")
    _class_mix(axes[0], data.class_frequencies(frame), length)
    _rows(axes[1], data.rows_per_window(frame), data.label_fill(points), length)
    _confidence(axes[2], frame, length)
    _scores(axes[3], data.label_scores(frame), length, data.earlier_accuracy(points))
    _estimated_accuracy(axes[4], data.accuracy_estimates(frame), length)
    _flag_heatmap(
        axes[5],
        drift.output_flags(),
        length,
        figure,
        title="drift of the model outputs vs reference (red = flagged)",
        ylabel="output",
        empty_text="no output drift metrics (no reference)",
    )
    _flag_heatmap(
        axes[6],
        drift.flags,
        length,
        figure,
        title="drift of each feature vs reference (red = flagged); "
        "shaded windows above: data set drifted",
        ylabel="feature",
        empty_text="no feature drift metrics (no reference, or no features)",
    )
    for axis in axes[:5]:
        _shade_drift(axis, drift.dataset_drifted, length)
    _time_axis(axes[-1])
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def overview(frame: pd.DataFrame, path: Path) -> Path:
    """Every agent's accuracy and feature-drift share on two shared-time panels."""
    figure, (accuracy_axis, drift_axis) = plt.subplots(
        2, 1, figsize=(12, 6), sharex=True, constrained_layout=True
    )
    figure.suptitle("all agents", fontsize=14, fontweight="bold")
    for agent in data.agents(frame):
        rows = frame[frame["agent_id"] == agent]
        length = window_length(rows)
        scores = data.label_scores(rows)
        centre = scores.index + length / 2
        colour = None
        if not scores.empty and scores["accuracy"].notna().any():
            (line,) = accuracy_axis.plot(centre, scores["accuracy"], marker=".", label=agent)
            colour = line.get_color()
        estimated = data.accuracy_estimates(rows)["estimated"].dropna()
        if not estimated.empty:
            accuracy_axis.plot(
                estimated.index + length / 2,
                estimated.values,
                linestyle="--",
                color=colour,
                label=f"{agent} (estimated)",
            )
        share = data.feature_drift(rows).share
        if not share.empty:
            drift_axis.plot(share.index + length / 2, share.values, marker=".", label=agent)
    accuracy_axis.set_ylabel("accuracy\n(dashed: estimated\nwithout labels)")
    accuracy_axis.set_ylim(-0.02, 1.02)
    drift_axis.set_ylabel("share of features\ndrifted")
    drift_axis.set_ylim(-0.02, 1.02)
    drift_axis.axhline(names.DATASET_DRIFT_SHARE, color="grey", linestyle=":", linewidth=1)
    for axis in (accuracy_axis, drift_axis):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    _time_axis(drift_axis)
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


# -- panels -----------------------------------------------------------------------------


def _class_mix(axis: Axes, frequencies: pd.DataFrame, length: pd.Timedelta) -> None:
    axis.set_title("predicted-class frequencies", loc="left", fontsize=10)
    axis.set_ylabel("share of predictions")
    if frequencies.empty or frequencies.shape[1] == 0:
        _no_data(axis)
        return
    edges = _step_edges(frequencies.index, length)
    values = np.vstack([frequencies[c].to_numpy() for c in frequencies.columns])
    colours = plt.get_cmap("tab10" if values.shape[0] <= 10 else "tab20").colors
    # step-wise stack: each window is a flat block, as the values are per window
    stacked = np.repeat(values, 2, axis=1)
    axis.stackplot(
        edges, stacked, labels=[str(c) for c in frequencies.columns], colors=colours, alpha=0.9
    )
    axis.set_ylim(0, 1)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="class", ncol=1)


def _step_edges(starts: pd.DatetimeIndex, length: pd.Timedelta) -> np.ndarray:
    """x positions start, end, start, end, ... so stacked areas are flat per window."""
    ends = starts + length
    return np.column_stack([starts.to_numpy(), ends.to_numpy()]).ravel()


def _rows(axis: Axes, rows: pd.Series, fill: pd.DataFrame, length: pd.Timedelta) -> None:
    revised = int((fill["revision"] > 0).sum()) if not fill.empty else 0
    title = "rows per window, and labelled rows"
    if revised:
        title += f" (at close and now: {revised} windows got labels later)"
    axis.set_title(title, loc="left", fontsize=10)
    axis.set_ylabel("rows")
    if rows.empty:
        _no_data(axis)
        return
    axis.bar(
        rows.index,
        rows.to_numpy(),
        width=length * 0.9,
        align="edge",
        color="#bababa",
        label="rows",
    )
    labelled = fill["labelled"].dropna()
    if not labelled.empty:
        axis.bar(
            labelled.index,
            labelled.to_numpy(),
            width=length * 0.9,
            align="edge",
            color="#762a83",
            alpha=0.45,
            label="labelled now",
        )
        at_close = fill["labelled_at_close"].dropna()
        axis.bar(
            at_close.index,
            at_close.to_numpy(),
            width=length * 0.9,
            align="edge",
            color="#762a83",
            label="labelled at close",
        )
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _confidence(axis: Axes, frame: pd.DataFrame, length: pd.Timedelta) -> None:
    axis.set_title(
        "confidence: pred1 (max probability) and spread12 (top1 − top2), median and IQR",
        loc="left",
        fontsize=10,
    )
    drawn = False
    for what, label, colour in (
        (names.PRED1, "pred1", "#2166ac"),
        (names.SPREAD12, "spread12", "#1b7837"),
    ):
        band = data.quantile_band(frame, what)
        if band.empty or band["median"].dropna().empty:
            continue
        centre = band.index + length / 2
        axis.plot(centre, band["median"], color=colour, label=f"{label} median", marker=".")
        if band[["q25", "q75"]].notna().all(axis=None):
            axis.fill_between(centre, band["q25"], band["q75"], color=colour, alpha=0.2)
        drawn = True
    if not drawn:
        _no_data(axis)
        return
    axis.set_ylim(-0.02, 1.02)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _scores(
    axis: Axes, scores: pd.DataFrame, length: pd.Timedelta, earlier: pd.DataFrame | None = None
) -> None:
    title = "accuracy and macro-F1 (windows with labels"
    if earlier is not None and not earlier.empty:
        title += "; x: accuracy of earlier label revisions"
    axis.set_title(title + ")", loc="left", fontsize=10)
    if scores.empty or scores.dropna(how="all").empty:
        _no_data(axis, "no labels")
        return
    centre = scores.index + length / 2
    axis.plot(centre, scores["accuracy"], color="#762a83", marker="o", label="accuracy")
    axis.plot(centre, scores["macro_f1"], color="#e08214", marker=".", label="macro-F1")
    if earlier is not None and not earlier.empty:
        axis.scatter(
            earlier["window_start"] + length / 2,
            earlier["value"],
            color="#762a83",
            marker="x",
            alpha=0.5,
            label="accuracy, earlier revisions",
        )
    axis.set_ylim(-0.02, 1.02)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def _estimated_accuracy(axis: Axes, estimates: pd.DataFrame, length: pd.Timedelta) -> None:
    axis.set_title(
        "accuracy: realised (labels) vs estimated from confidence (no labels), ±2 stderr",
        loc="left",
        fontsize=10,
    )
    drawn = False
    for column, label, colour, marker in (
        ("estimated", "estimated", "#1b9e77", "s"),
        ("realised", "realised", "#762a83", "o"),
    ):
        values = estimates[column].dropna()
        if values.empty:
            continue
        centre = values.index + length / 2
        axis.plot(centre, values, color=colour, marker=marker, markersize=3, label=label)
        stderr = estimates[f"{column}_stderr"].reindex(values.index)
        if stderr.notna().all():
            low = (values - 2 * stderr).clip(lower=0)
            high = (values + 2 * stderr).clip(upper=1)
            axis.fill_between(centre, low, high, color=colour, alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        _no_data(axis, "no estimates")
        return
    axis.set_ylim(-0.02, 1.02)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def reliability_diagram(
    frame: pd.DataFrame, agent: str, path: Path, reference: CalibrationMap | None = None
) -> Path:
    """Accuracy vs confidence per bin for the latest labelled window and the reference."""
    window, latest = data.reliability(frame)
    figure, (curve, counts) = plt.subplots(
        2,
        1,
        figsize=(6, 6.5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        constrained_layout=True,
    )
    figure.suptitle(f"reliability of {agent}", fontsize=13, fontweight="bold")
    curve.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    width = 1.0 / names.CONFIDENCE_BINS
    curves = []
    if reference is not None:
        rows, total, hits = reference.reliability()
        filled = rows > 0
        curves.append(
            (
                "reference",
                "#1b9e77",
                pd.DataFrame(
                    {
                        "rows": rows,
                        "confidence": np.where(filled, total / np.maximum(rows, 1), np.nan),
                        "accuracy": np.where(filled, hits / np.maximum(rows, 1), np.nan),
                    }
                ),
            )
        )
    if window is not None and not latest.empty:
        ece = data.select(frame, names.ECE, class_name=None, feat_name=None, stat=None)
        ece = ece[ece["window_start"] == window]["value"]
        label = f"latest window {window:%Y-%m-%d %H:%M:%S}"
        if not ece.empty:
            label += f" (ECE {ece.iloc[-1]:.3f})"
        curves.append((label, "#762a83", latest))
    if not curves:
        _no_data(curve, "no labelled rows and no reference calibration map")
    for offset, (label, colour, table) in enumerate(curves):
        filled = table.dropna(subset=["accuracy"])
        curve.plot(filled["confidence"], filled["accuracy"], marker="o", color=colour, label=label)
        share = table["rows"] / max(table["rows"].sum(), 1)
        left = np.asarray(table.index, dtype=float) * width + offset * width / 2
        counts.bar(left, share, width=width / 2, align="edge", color=colour, alpha=0.8)
    curve.set_xlim(0, 1)
    curve.set_ylim(-0.02, 1.02)
    curve.set_ylabel("accuracy in the bin")
    curve.grid(alpha=0.3)
    curve.legend(loc="lower right", fontsize=8)
    counts.set_ylabel("share of rows")
    counts.set_xlabel(
        f"confidence (probability of the predicted class), {names.CONFIDENCE_BINS} bins"
    )
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def _flag_heatmap(
    axis: Axes,
    flags: pd.DataFrame,
    length: pd.Timedelta,
    figure: plt.Figure,
    *,
    title: str,
    ylabel: str,
    empty_text: str,
) -> None:
    """Rows × windows grid of drift flags: white ok, red drifted, grey not computed."""
    axis.set_title(title, loc="left", fontsize=10)
    if flags.empty:
        _no_data(axis, empty_text)
        return
    starts = pd.DatetimeIndex(flags.columns)
    x_edges = mdates.date2num(np.append(starts.to_pydatetime(), (starts[-1] + length)))
    y_edges = np.arange(len(flags.index) + 1)
    masked = np.ma.masked_invalid(flags.to_numpy(dtype=float))
    mesh = axis.pcolormesh(x_edges, y_edges, masked, cmap=_FLAG_COLOURS, vmin=0, vmax=1)
    axis.set_facecolor("#bababa")  # windows without drift values show grey
    axis.set_ylim(len(flags.index), 0)
    if len(flags.index) <= 4:  # few rows: separate them so each reads on its own
        axis.hlines(y_edges[1:-1], x_edges[0], x_edges[-1], color="black", linewidth=0.8)
    step = max(1, len(flags.index) // 16)  # label every few of many features
    ticks = np.arange(0, len(flags.index), step)
    axis.set_yticks(ticks + 0.5)
    axis.set_yticklabels([flags.index[i] for i in ticks], fontsize=7)
    axis.set_ylabel(ylabel)
    colourbar = figure.colorbar(mesh, ax=axis, ticks=[0.25, 0.75], fraction=0.03, pad=0.01)
    colourbar.ax.set_yticklabels(["ok", "drifted"], fontsize=8)


def _shade_drift(axis: Axes, dataset_drifted: pd.Series, length: pd.Timedelta) -> None:
    for start, flag in dataset_drifted.items():
        if flag >= 0.5:
            axis.axvspan(
                start, start + length, color=DRIFT_SHADE, alpha=0.35, linewidth=0, zorder=0
            )


def _time_axis(axis: Axes) -> None:
    locator = mdates.AutoDateLocator()
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axis.set_xlabel("window start (UTC)")


def _no_data(axis: Axes, text: str = "no data") -> None:
    axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center", color="grey")
    axis.set_yticks([])
