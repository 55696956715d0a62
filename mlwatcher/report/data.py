"""Read the Parquet metrics data set and shape it into the series the report draws.

The data set is the Parquet sink's long format: one row per metric point with ``agent_id``,
``window_start``, ``window_end``, ``what``, ``class_name``, ``feat_name``, ``stat``,
``target_type``, ``value``, ``rows_seen``, ``rows_sampled``, ``revision`` (hive partitions
``agent_id=.../date=.../``). Every function here takes one agent's rows and returns a frame
indexed by ``window_start``; windows without a value are missing, never zero-filled, so a
chart never invents data.

Label revisions: a window closed before its labels arrived gets revisions n >= 1 that carry
its label metrics recomputed over every label so far. :func:`load_metrics` gives the latest
state (each ``what`` from the highest revision that has it, see :func:`latest`), which every
chart draws; :func:`load_points` keeps every revision, for :func:`label_fill`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from mlwatcher.report import names
from mlwatcher.sinks import parquet_files, parquet_format

REQUIRED_COLUMNS = ("agent_id", "window_start", "what", "value")
_KEY = ("window_start", "what", "class_name", "feat_name", "stat", "extra", "revision")


class ReportDataError(ValueError):
    """The input is not a metrics data set the report can read."""


def load_metrics(path: str | Path) -> pd.DataFrame:
    """The latest state of every window of a Parquet metrics data set (a directory or one
    file): :func:`latest` of :func:`load_points`."""
    return latest(load_points(path))


def load_points(path: str | Path) -> pd.DataFrame:
    """All points of a Parquet metrics data set, every revision, de-duplicated.

    A record re-emitted after a crash carries the same points, so exact duplicates of a
    point's key (revision included) are dropped (the last one read wins). Files of every
    schema version of the sink are read (version 2 files are revision 0); a file of another
    writer needs at least the columns of :data:`REQUIRED_COLUMNS`.
    """
    path = Path(path)
    if not path.exists():
        raise ReportDataError(f"metrics path {path} does not exist")
    try:
        table = parquet_files.read_data_set(path)
    except (KeyError, ValueError, pa.ArrowException):  # not (only) the sink's files
        try:
            partitioning = hive_partitioning() if path.is_dir() else None
            dataset = ds.dataset(path, format="parquet", partitioning=partitioning)
            table = dataset.to_table()
        except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid, a ValueError
            raise ReportDataError(f"cannot read Parquet metrics under {path}: {error}") from error
    frame = table.to_pandas()
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ReportDataError(
            f"{path}: columns {missing} missing; expected the Parquet sink's long format "
            f"with at least {list(REQUIRED_COLUMNS)}"
        )
    return normalise(frame)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """Each window's latest state: per (agent, window, ``what``) the rows of the highest
    revision that has that ``what``. Label metrics come from the latest label revision,
    everything else from revision 0 (the rule of ``parquet_format.latest_revisions``)."""
    if frame.empty:
        return frame
    top = frame.groupby(["agent_id", "window_start", "what"])["revision"].transform("max")
    return frame.loc[frame["revision"] == top].reset_index(drop=True)


def earlier_accuracy(points: pd.DataFrame) -> pd.DataFrame:
    """Overall accuracy of one agent's windows as earlier revisions had it (every revision
    below the window's latest): ``window_start``, ``revision``, ``value``."""
    rows = select(points, names.ACCURACY_OVERALL, class_name=None, feat_name=None, stat=None)
    rows = rows[["window_start", "revision", "value"]]
    latest_revision = rows.groupby("window_start")["revision"].transform("max")
    return rows[rows["revision"] < latest_revision].reset_index(drop=True)


def label_fill(points: pd.DataFrame) -> pd.DataFrame:
    """How labels filled in, per window of one agent's rows (all revisions): ``rows`` seen,
    ``labelled_at_close`` (revision 0), ``labelled`` now (latest revision) and the latest
    ``revision`` number (0: no label revision)."""
    labelled = select(points, names.LABELLED_ROWS, class_name=None, feat_name=None, stat=None)
    at_close = labelled[labelled["revision"] == 0].groupby("window_start")["value"].last()
    newest = labelled.sort_values("revision").groupby("window_start")["value"].last()
    fill = pd.DataFrame(
        {
            "rows": rows_per_window(points[points["revision"] == 0]),
            "labelled_at_close": at_close,
            "labelled": newest,
            "revision": points.groupby("window_start")["revision"].max(),
        }
    ).sort_index()
    fill["revision"] = fill["revision"].fillna(0).astype(int)
    return fill


def hive_partitioning() -> ds.PartitioningFactory:
    """``agent_id=.../date=...`` directories (see mlwatcher.sinks.parquet_format)."""
    return parquet_format.hive_partitioning()


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain string/float/UTC-timestamp columns, whatever the writer's encoding was."""
    frame = frame.copy()
    for column in ("agent_id", "what", "class_name", "feat_name", "stat", "target_type"):
        if column not in frame.columns:
            frame[column] = None
        # hive partition columns come back as dictionary/categorical; make them strings
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame[column] = frame[column].map(lambda v: v if v is None else str(v))
    for column in ("window_start", "window_end"):
        if column in frame.columns:
            frame[column] = _as_utc(frame[column])
    frame["value"] = frame["value"].astype(float)
    revision = frame["revision"] if "revision" in frame.columns else pd.Series(0, frame.index)
    frame["revision"] = revision.fillna(0).astype(int)
    # extra properties as a canonical "k=v;k=v" string: hashable, comparable, readable
    raw_extra = frame["extra"] if "extra" in frame.columns else pd.Series(None, index=frame.index)
    frame["extra"] = raw_extra.map(lambda cell: _canonical_extra(_extra_dict(cell)))
    keys = [c for c in _KEY if c in frame.columns]
    frame = frame.drop_duplicates(subset=["agent_id", *keys], keep="last")
    return frame.sort_values(["agent_id", "window_start"]).reset_index(drop=True)


def _extra_dict(cell: Any) -> dict[str, str]:
    """The writer may store ``extra`` as a map (dict or key/value pairs) or as JSON text."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return {}
    if isinstance(cell, Mapping):
        return {str(k): str(v) for k, v in cell.items()}
    if isinstance(cell, str):
        if not cell.strip():
            return {}
        try:
            parsed = json.loads(cell)
        except json.JSONDecodeError:
            return dict(part.split("=", 1) for part in cell.split(";") if "=" in part)
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    try:
        return {str(k): str(v) for k, v in cell}
    except (TypeError, ValueError):
        return {}


def _canonical_extra(extra: dict[str, str]) -> str:
    return ";".join(f"{key}={extra[key]}" for key in sorted(extra))


def _as_utc(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series):
        return pd.to_datetime(series, unit="ms", utc=True)
    converted = pd.to_datetime(series, utc=True)
    return converted


def agents(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["agent_id"].dropna().unique())


def select(
    frame: pd.DataFrame,
    what: str,
    *,
    stat: str | type[Ellipsis] | None = ...,
    class_name: str | type[Ellipsis] | None = ...,
    feat_name: str | type[Ellipsis] | None = ...,
    extra: str | type[Ellipsis] = ...,
) -> pd.DataFrame:
    """Rows of one ``what``; each property given filters (``None`` = property not set,
    ``extra`` is the canonical ``"k=v;k=v"`` string, ``""`` = no extra properties)."""
    mask = frame["what"] == what
    if extra is not ...:
        mask &= frame["extra"] == extra
    for column, wanted in (("stat", stat), ("class_name", class_name), ("feat_name", feat_name)):
        if wanted is ...:
            continue
        mask &= frame[column].isna() if wanted is None else frame[column] == wanted
    return frame.loc[mask]


def _series(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("window_start")["value"].last().sort_index()


def window_index(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """Every window of the agent that has any point, in order."""
    return pd.DatetimeIndex(sorted(frame["window_start"].unique()), name="window_start")


def rows_per_window(frame: pd.DataFrame) -> pd.Series:
    """Exact rows seen per window (the ``rows_seen`` column, else the rows-seen point)."""
    if "rows_seen" in frame.columns and frame["rows_seen"].notna().any():
        return frame.groupby("window_start")["rows_seen"].max().astype(float).sort_index()
    return _series(select(frame, names.ROWS_SEEN))


def class_frequencies(frame: pd.DataFrame) -> pd.DataFrame:
    """windows × classes share of predictions (columns sorted naturally: 0, 1, ..., 10)."""
    rows = select(frame, names.PREDICTION_FREQ, feat_name=None)
    rows = rows[rows["class_name"].notna()]
    if rows.empty:
        return pd.DataFrame(index=window_index(frame))
    table = rows.pivot_table(
        index="window_start", columns="class_name", values="value", aggfunc="last"
    )
    table = table.reindex(columns=sorted(table.columns, key=_natural_key)).fillna(0.0)
    return table.sort_index()


def _natural_key(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def quantile_band(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """Median, q25 and q75 of a per-row statistic (pred1, spread12) per window."""
    columns = {}
    for stat in ("q25", "median", "q75"):
        series = _series(select(frame, what, stat=stat, class_name=None, feat_name=None))
        if series.empty and stat == "median":
            series = _series(select(frame, what, stat="q50", class_name=None, feat_name=None))
        columns[stat] = series
    return pd.DataFrame(columns).sort_index()


def label_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Overall accuracy and macro-F1 per window (only windows with labels)."""
    accuracy = _series(select(frame, names.ACCURACY_OVERALL, class_name=None, feat_name=None))
    macro = _canonical_extra({names.AVERAGE_KEY: names.MACRO})
    macro_f1 = _series(select(frame, names.F1_PER_CLASS, class_name=None, extra=macro))
    if macro_f1.empty:
        # Macro-F1 is by definition the unweighted mean of the per-class F1 scores.
        per_class = select(frame, names.F1_PER_CLASS, feat_name=None, stat=None, extra="")
        per_class = per_class[per_class["class_name"].notna()]
        macro_f1 = per_class.groupby("window_start")["value"].mean()
    return pd.DataFrame({"accuracy": accuracy, "macro_f1": macro_f1}, dtype=float).sort_index()


@dataclass(frozen=True)
class DriftView:
    """Feature drift of one agent: the flags, and per window the share and dataset flag."""

    flags: pd.DataFrame  # features × windows, 1.0 drifted / 0.0 not / NaN not computed
    score: pd.DataFrame  # features × windows, the drift score used for shading (PSI)
    share: pd.Series  # per window: share of features flagged
    dataset_drifted: pd.Series  # per window: 1.0 when the data set counts as drifted
    prediction_drifted: pd.Series  # per window: predicted-class distribution drift flag
    pred1_drifted: pd.Series  # per window: confidence (pred1) distribution drift flag

    def output_flags(self) -> pd.DataFrame:
        """The model-output drift flags as rows (predicted class, pred1) × windows."""
        rows = {
            "[predicted class]": self.prediction_drifted,
            "[pred1]": self.pred1_drifted,
        }
        present = {name: series for name, series in rows.items() if not series.empty}
        if not present:
            return pd.DataFrame()
        return pd.DataFrame(present).T.sort_index(axis=1)


def feature_drift(frame: pd.DataFrame) -> DriftView:
    rows = frame[frame["what"] == names.FEATURE_DRIFT]
    feature_rows = rows[rows["feat_name"].notna()]
    flags = _feature_matrix(feature_rows, names.DRIFT_FLAG_STAT)
    score = _feature_matrix(feature_rows, names.DRIFT_SCORE_STAT)
    share = _series(select(frame, names.DATASET_DRIFT, stat=names.DRIFT_SHARE_STAT))
    if share.empty and not flags.empty:
        share = flags.mean(axis=0, skipna=True)
    dataset_flag = _series(select(frame, names.DATASET_DRIFT, stat=names.DRIFT_FLAG_STAT))
    if dataset_flag.empty and not share.empty:
        dataset_flag = (share >= names.DATASET_DRIFT_SHARE).astype(float)
    prediction = _series(
        select(frame, names.PREDICTION_DRIFT, stat=names.DRIFT_FLAG_STAT, feat_name=None)
    )
    pred1 = _series(select(frame, names.PRED1_DRIFT, stat=names.DRIFT_FLAG_STAT, feat_name=None))
    return DriftView(flags, score, share, dataset_flag, prediction, pred1)


def _feature_matrix(rows: pd.DataFrame, stat: str) -> pd.DataFrame:
    rows = rows[rows["stat"] == stat]
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(
        index="feat_name", columns="window_start", values="value", aggfunc="last"
    )
    order = sorted(table.index, key=_feature_order)
    return table.reindex(index=order).sort_index(axis=1)


def _feature_order(name: str) -> tuple[str, tuple[int, ...]]:
    # pixel_3_10 sorts after pixel_3_9: compare the digit groups as numbers
    digits = tuple(int(part) for part in name.split("_") if part.isdigit())
    prefix = "_".join(part for part in name.split("_") if not part.isdigit())
    return prefix, digits


def drifted_windows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (agent, window) where the data set or the predictions drifted."""
    records = []
    for agent in agents(frame):
        rows = frame[frame["agent_id"] == agent]
        drift = feature_drift(rows)
        scores = label_scores(rows)
        windows = drift.dataset_drifted.index.union(drift.prediction_drifted.index)
        for window in windows:
            dataset = bool(drift.dataset_drifted.get(window, 0.0) >= 0.5)
            prediction = bool(drift.prediction_drifted.get(window, 0.0) >= 0.5)
            if not (dataset or prediction):
                continue
            flagged = []
            if not drift.flags.empty and window in drift.flags.columns:
                column = drift.flags[window]
                flagged = list(column[column >= 0.5].index)
            records.append(
                {
                    "agent_id": agent,
                    "window_start": window,
                    "dataset_drift": dataset,
                    "prediction_drift": prediction,
                    "drift_share": float(drift.share.get(window, np.nan)),
                    "features_drifted": len(flagged),
                    "example_features": ", ".join(flagged[:5]),
                    "accuracy": float(scores["accuracy"].get(window, np.nan))
                    if "accuracy" in scores
                    else np.nan,
                }
            )
    return pd.DataFrame(
        records,
        columns=[
            "agent_id",
            "window_start",
            "dataset_drift",
            "prediction_drift",
            "drift_share",
            "features_drifted",
            "example_features",
            "accuracy",
        ],
    )


def accuracy_estimates(frame: pd.DataFrame) -> pd.DataFrame:
    """Per window: realised accuracy and its standard error (windows with labels), and the
    accuracy estimated from the confidences with its standard error (every window)."""

    def series(what: str) -> pd.Series:
        return _series(select(frame, what, class_name=None, feat_name=None, stat=None, extra=""))

    return pd.DataFrame(
        {
            "realised": series(names.ACCURACY_OVERALL),
            "realised_stderr": series(names.ACCURACY_STDERR),
            "estimated": series(names.ESTIMATED_ACCURACY),
            "estimated_stderr": series(names.ESTIMATED_ACCURACY_STDERR),
        },
        dtype=float,
    ).sort_index()


def reliability(frame: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.DataFrame]:
    """The reliability diagram of the latest window with labelled rows: per confidence bin
    (index ``0..14``) ``rows``, mean ``confidence`` and ``accuracy`` (NaN for empty bins)."""
    rows = frame[frame["what"].isin([names.BIN_ROWS, names.BIN_CONFIDENCE, names.BIN_ACCURACY])]
    if rows.empty:
        return None, pd.DataFrame(columns=["rows", "confidence", "accuracy"])
    latest = rows["window_start"].max()
    rows = rows[rows["window_start"] == latest]
    bins = rows["extra"].map(lambda text: int(_extra_dict(text)[names.BIN_KEY]))
    table = rows.assign(bin=bins).pivot_table(
        index="bin", columns="what", values="value", aggfunc="last"
    )
    table = table.rename(
        columns={
            names.BIN_ROWS: "rows",
            names.BIN_CONFIDENCE: "confidence",
            names.BIN_ACCURACY: "accuracy",
        }
    )
    return latest, table.reindex(columns=["rows", "confidence", "accuracy"]).sort_index()
