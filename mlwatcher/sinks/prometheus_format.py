"""Metric records → Prometheus series: the latest closed window of every agent.

Pure: no Kafka and no HTTP. :class:`LatestWindows` keeps, per agent, the series of the newest
window it was given (a re-emitted record of that window replaces it; a label revision of it
replaces its label series; a record of an older window, or an older revision, is ignored) and
yields them as ``prometheus_client`` metric families, so any ``prometheus_client`` exposition
(the HTTP server, ``generate_latest``) can serve them.

Naming: a point ``what=W`` becomes the gauge ``mlwatcher_W`` with the labels ``agent_id``,
``class_name`` / ``feat_name`` / ``stat`` when set and the point's extra properties. Every
series is a gauge, also for the engine's per-window counts (``prediction_count``...): the
value is the count *of the latest window*, which is not monotonic, so it is not a Prometheus
counter. Per agent there are also ``mlwatcher_window_start_timestamp_seconds``,
``mlwatcher_window_end_timestamp_seconds`` and ``mlwatcher_agent_info{model_version}``.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from mlwatcher.schemas.point_columns import PointColumns, concat

PREFIX = "mlwatcher_"
WINDOW_START = "mlwatcher_window_start_timestamp_seconds"
WINDOW_END = "mlwatcher_window_end_timestamp_seconds"
AGENT_INFO = "mlwatcher_agent_info"

#: Labels every point may carry; an extra property of the same name is renamed ``extra_<name>``.
RESERVED_LABELS = ("agent_id", "class_name", "feat_name", "stat")

#: Per-feature ``what``s kept by default: drift, not the per-feature statistics
#: (``feature_value``, missing/infinite/categorical counts), which are 8+ series per feature.
DEFAULT_FEATURE_WHATS = ("feature_drift",)

#: Help text of the known ``what``s (the metric set is documented in README.md).
HELP: dict[str, str] = {
    "rows_seen": "Rows of the latest window (exact).",
    "buffer_count": "Rows in the latest window's reservoir sample.",
    "prediction_count": "Rows of the latest window predicted as the class.",
    "prediction_freq": "Share of the latest window's rows predicted as the class.",
    "max_prediction_proba": "Statistics of pred1 (highest probability of each sampled row).",
    "spread12_prediction_proba": "Statistics of top1 - top2 probability of each sampled row.",
    "prediction_entropy": "Statistics of the normalised prediction entropy (0 certain, 1 uniform).",
    "feature_value": "Statistics of the feature over the latest window's sample.",
    "rows_without_features": "Rows of the latest window that came without a feature matrix.",
    "missing_value_count": "NaN values of the feature in the latest window.",
    "infinite_value_count": "Infinite values of the feature in the latest window.",
    "categorical_value_count": "Rows with that value of a categorical feature.",
    "categorical_value_freq": "Share of rows with that value of a categorical feature.",
    "labelled_rows": "Rows of the latest window with a label.",
    "label_count": "Labelled rows of the class.",
    "label_freq": "Share of labelled rows of the class.",
    "accuracy": "One-vs-rest accuracy of the class, (TP + TN) / N.",
    "overall_accuracy": "Share of labelled rows predicted correctly.",
    "precision": "Precision, per class or averaged (label average).",
    "recall": "Recall, per class or averaged (label average).",
    "f1": "F1 score, per class or averaged (label average).",
    "confusion_count": "Labelled rows of the true class (class_name) predicted as pred_class.",
    "log_loss": "Mean log loss of the labelled rows.",
    "feature_drift": "Drift of the feature against the reference (stat: psi, ks_stat, ...).",
    "pred1_drift": "Drift of pred1 against the reference.",
    "predicted_class_drift": "Drift of the predicted-class mix against the reference.",
    "dataset_drift": "Dataset drift: share of features flagged, counts, drifted (0/1).",
}

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


@functools.lru_cache(maxsize=4096)
def metric_name(what: str) -> str:
    """``mlwatcher_<what>`` with every character Prometheus does not allow replaced by ``_``."""
    return PREFIX + _INVALID.sub("_", what)


def label_name(key: str) -> str:
    """A valid, non-reserved Prometheus label name for an extra property."""
    name = _INVALID.sub("_", key)
    if not name or name[0].isdigit() or name.startswith("__"):
        name = "x" + name
    return "extra_" + name if name in RESERVED_LABELS else name


def _matches(text: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in patterns)


@dataclass(frozen=True)
class SeriesFilter:
    """Which points become series (shell-style globs, case-sensitive).

    A point is kept when its ``what`` matches ``include_what`` and no ``exclude_what``; a point
    that belongs to a feature (has a ``feat_name``) must also have a ``what`` matching
    ``feature_what`` and a feature name matching ``include_feature`` and no
    ``exclude_feature``. The default keeps every model-level series and per-feature drift.
    """

    include_what: tuple[str, ...] = ("*",)
    exclude_what: tuple[str, ...] = ()
    feature_what: tuple[str, ...] = DEFAULT_FEATURE_WHATS
    include_feature: tuple[str, ...] = ("*",)
    exclude_feature: tuple[str, ...] = ()

    def keeps_what(self, what: str) -> bool:
        return _matches(what, self.include_what) and not _matches(what, self.exclude_what)

    def keeps_feature_what(self, what: str) -> bool:
        return self.keeps_what(what) and _matches(what, self.feature_what)

    def keeps_feature(self, feat_name: str) -> bool:
        return _matches(feat_name, self.include_feature) and not _matches(
            feat_name, self.exclude_feature
        )


class _FilterCache:
    """Filter decisions per distinct string: records repeat the same few hundred strings."""

    def __init__(self, series_filter: SeriesFilter) -> None:
        self.filter = series_filter
        self._what: dict[str, bool] = {}
        self._feature_what: dict[str, bool] = {}
        self._feature: dict[str, bool] = {}

    def masks(self, strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per index into ``strings``, with one extra ``False`` entry for index -1."""

        def mask(cache: dict[str, bool], decide: Callable[[str], bool]) -> np.ndarray:
            values = [cache[s] if s in cache else cache.setdefault(s, decide(s)) for s in strings]
            return np.array([*values, False], dtype=bool)

        return (
            mask(self._what, self.filter.keeps_what),
            mask(self._feature_what, self.filter.keeps_feature_what),
            mask(self._feature, self.filter.keeps_feature),
        )


class AgentWindow:
    """The series of one agent's latest window.

    The points to export are chosen when the record arrives; their samples are built on first
    use (the first scrape after it), so a window replaced before anyone scraped it, as when
    a restarted sink re-reads the topic, costs only its decoding and selection.
    """

    def __init__(
        self, header: dict[str, Any], columns: PointColumns, filters: _FilterCache, source: Any
    ) -> None:
        self.agent_id: str = header["agent_id"]
        self.window_start_ms: int = header["window_start_ms"]
        self.window_end_ms: int = header["window_end_ms"]
        self.model_version: str = header.get("model_version", "")
        self.revision: int = header.get("revision", 0)
        #: where the record came from (a sink drops the agents of partitions it loses)
        self.source = source
        #: every point of the window (a label revision replaces some of them)
        self.columns = columns
        kept = _selected(columns, filters)
        self._extras: dict[int, dict[str, str] | None] = {-1: {}}
        for index in np.unique(columns.extra[kept]).tolist():
            if index >= 0:
                self._extras[index] = _extra_labels(columns.strings[index])
        bad = [index for index, labels in self._extras.items() if labels is None]
        refused = kept & np.isin(columns.extra, bad) if bad else np.zeros_like(kept)
        kept &= ~refused
        self.filtered = len(columns) - int(kept.sum()) - int(refused.sum())
        self.refused = int(refused.sum())
        self.series = int(kept.sum()) + 3  # + window start, window end, agent info
        self._pending: tuple[PointColumns, np.ndarray] | None = (columns, kept)
        self._families: dict[str, list[Sample]] | None = None

    @property
    def families(self) -> dict[str, list[Sample]]:
        """Metric name -> this agent's samples of that family."""
        families = self._families
        if families is None:
            pending = self._pending
            if pending is None:  # another thread has just built them
                return self._families or {}
            families = self._families = self._build(*pending)
            self._pending = None  # the record's columns are no longer needed
        return families

    def expired(self, now_s: float, after_windows: float) -> bool:
        window_s = max((self.window_end_ms - self.window_start_ms) / 1000, 1.0)
        return now_s - self.window_end_ms / 1000 > after_windows * window_s

    def _build(self, columns: PointColumns, kept: np.ndarray) -> dict[str, list[Sample]]:
        agent_id, strings, extras = self.agent_id, columns.strings, self._extras
        families: dict[str, list[Sample]] = {}
        for w, c, f, s, e, v in zip(  # one pass in Python per exported point: the hot loop
            columns.what[kept].tolist(),
            columns.class_name[kept].tolist(),
            columns.feat_name[kept].tolist(),
            columns.stat[kept].tolist(),
            columns.extra[kept].tolist(),
            columns.value[kept].tolist(),
            strict=True,
        ):
            labels = {"agent_id": agent_id}
            if c >= 0 and strings[c]:  # an empty label value is no label, in Prometheus too
                labels["class_name"] = strings[c]
            if f >= 0 and strings[f]:
                labels["feat_name"] = strings[f]
            if s >= 0 and strings[s]:
                labels["stat"] = strings[s]
            if e >= 0:
                labels.update(extras[e])  # type: ignore[arg-type]
            name = metric_name(strings[w])
            family = families.get(name)
            if family is None:
                family = families[name] = []
            family.append(Sample(name, labels, v, None, None, None))
        agent = {"agent_id": agent_id}
        start_s, end_s = self.window_start_ms / 1000, self.window_end_ms / 1000
        info = {"agent_id": agent_id}
        if self.model_version:
            info["model_version"] = self.model_version
        families[WINDOW_START] = [Sample(WINDOW_START, agent, start_s, None, None, None)]
        families[WINDOW_END] = [Sample(WINDOW_END, agent, end_s, None, None, None)]
        families[AGENT_INFO] = [Sample(AGENT_INFO, info, 1.0, None, None, None)]
        return families

    def revised(self, columns: PointColumns) -> PointColumns:
        """This window's points with those of every ``what`` of a label revision replaced by
        the revision's (it carries each label metric recomputed over all labels so far)."""
        whats = {columns.strings[i] for i in np.unique(columns.what).tolist()}
        replaced = np.array([text in whats for text in self.columns.strings], dtype=bool)
        return concat([_take(self.columns, ~replaced[self.columns.what]), columns])


def _take(columns: PointColumns, mask: np.ndarray) -> PointColumns:
    return PointColumns(
        strings=columns.strings,
        what=columns.what[mask],
        class_name=columns.class_name[mask],
        feat_name=columns.feat_name[mask],
        stat=columns.stat[mask],
        extra=columns.extra[mask],
        target_type=columns.target_type[mask],
        value=columns.value[mask],
    )


#: what a record did to the agent's series
NEW, LABEL_REVISION, REPLAY, STALE = "new", "label_revision", "replay", "stale"


@dataclass
class ApplyResult:
    """What one record did: ``outcome`` is ``new`` (a newer window), ``label_revision`` (a
    newer revision of the held window: its label series replaced), ``replay`` (the held
    window and revision again: replaced as a whole) or ``stale`` (an older window, or an
    older revision of the held one: ignored). ``filtered``: points the filter left out;
    ``refused``: points whose extra properties are not a JSON object or collide as label
    names."""

    outcome: str
    points: int = 0
    series: int = 0
    filtered: int = 0
    refused: int = 0


def _selected(columns: PointColumns, filters: _FilterCache) -> np.ndarray:
    """Mask of the points the filter keeps (and whose value is finite)."""
    keep_what, keep_feature_what, keep_feature = filters.masks(columns.strings)
    kept = np.where(
        columns.feat_name >= 0,
        keep_feature_what[columns.what] & keep_feature[columns.feat_name],
        keep_what[columns.what],
    )
    return kept & np.isfinite(columns.value)


def _extra_labels(text: str) -> dict[str, str] | None:
    """Labels of an extra-properties JSON object; None when it is not a JSON object or two
    of its keys become one label name."""
    try:
        properties = json.loads(text)
    except ValueError:
        return None
    if not isinstance(properties, dict):
        return None
    labels: dict[str, str] = {}
    for key, value in properties.items():
        name = label_name(str(key))
        if name in labels:
            return None
        if str(value):
            labels[name] = str(value)
    return labels


class LatestWindows:
    """The series of every agent's latest window, as a ``prometheus_client`` collector.

    :meth:`apply` and :meth:`expire` are called by the consuming thread, :meth:`collect` by
    the HTTP server's threads; a lock guards the swap of an agent's (immutable) window.
    """

    def __init__(
        self, series_filter: SeriesFilter | None = None, expire_after_windows: float = 10.0
    ) -> None:
        if not expire_after_windows > 0:
            raise ValueError(f"expire_after_windows must be > 0, got {expire_after_windows}")
        self.filter = series_filter or SeriesFilter()
        self.expire_after_windows = expire_after_windows
        self._filters = _FilterCache(self.filter)
        self._agents: dict[str, AgentWindow] = {}
        self._lock = threading.Lock()

    def apply(
        self, header: dict[str, Any], columns: PointColumns, source: Any = None
    ) -> ApplyResult:
        """Take a decoded metric record (``MetricRecord.decode_columns``).

        Per agent only the newest window counts: a record of an older window, or an older
        revision of the held window (a replay of a worker), is stale. A label revision of
        the held window replaces the points of its ``what``s and keeps the rest; one of a
        newer window whose record at close this sink never saw (it was before the lookback)
        becomes the agent's window with the label series alone.
        """
        agent_id = header["agent_id"]
        start, revision = header["window_start_ms"], header.get("revision", 0)
        held = self._agents.get(agent_id)
        outcome = NEW
        if held is not None and start == held.window_start_ms:
            if revision < held.revision:
                return ApplyResult(STALE, points=len(columns))
            outcome = LABEL_REVISION if revision > held.revision else REPLAY
            if revision > 0:  # a label revision (or its replay) carries the label points only
                columns = held.revised(columns)
        elif held is not None and start < held.window_start_ms:
            return ApplyResult(STALE, points=len(columns))
        window = AgentWindow(header, columns, self._filters, source)
        with self._lock:
            self._agents[agent_id] = window
        return ApplyResult(outcome, len(columns), window.series, window.filtered, window.refused)

    def expire(self, now_s: float) -> list[str]:
        """Drop agents whose latest window ended more than ``expire_after_windows`` of their
        own window lengths before ``now_s``; returns their ids."""
        gone = [
            agent_id
            for agent_id, window in list(self._agents.items())
            if window.expired(now_s, self.expire_after_windows)
        ]
        self.drop(gone)
        return gone

    def drop_sources(self, sources: Iterable[Any]) -> list[str]:
        """Drop the agents whose latest record came from one of ``sources``."""
        lost = set(sources)
        gone = [a for a, window in list(self._agents.items()) if window.source in lost]
        self.drop(gone)
        return gone

    def drop(self, agent_ids: Iterable[str]) -> None:
        with self._lock:
            for agent_id in agent_ids:
                self._agents.pop(agent_id, None)

    def agents(self) -> list[AgentWindow]:
        with self._lock:
            return list(self._agents.values())

    @property
    def series(self) -> int:
        return sum(window.series for window in self.agents())

    def collect(self) -> Iterator[Metric]:
        """One gauge family per metric name, with the samples of every agent."""
        families: dict[str, Metric] = {}
        for window in self.agents():
            for name, samples in window.families.items():
                family = families.get(name)
                if family is None:
                    family = families[name] = Metric(name, _help(name), "gauge")
                family.samples.extend(samples)
        yield from families.values()


def _help(name: str) -> str:
    if name == WINDOW_START:
        return "Start of the agent's latest closed window (Unix seconds)."
    if name == WINDOW_END:
        return "End of the agent's latest closed window (Unix seconds); alert on its age."
    if name == AGENT_INFO:
        return "Model version of the agent's latest window (value 1)."
    what = name.removeprefix(PREFIX)
    return HELP.get(what, f"MLWatcher metric {what!r} of the agent's latest closed window.")
