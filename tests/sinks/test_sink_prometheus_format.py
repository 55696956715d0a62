"""The pure part of the Prometheus sink: records → series, filters, revisions, expiry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlwatcher.metrics import Point
from mlwatcher.schemas import MetricRecord
from mlwatcher.sinks.prometheus_format import LatestWindows, SeriesFilter, label_name
from tests.sinks.prometheus_helpers import (
    WINDOW_MS,
    expected_samples,
    label_revision,
    model_record,
    parse_exposition,
)
from tests.sinks.sink_helpers import latest_state


def exposition(store: LatestWindows) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(store)
    return generate_latest(registry).decode()


def apply(store: LatestWindows, record: MetricRecord, source: object = None):
    return store.apply(*MetricRecord.decode_columns(record.encode()), source=source)


def test_default_exposition_is_every_model_level_series_and_feature_drift() -> None:
    records = [model_record("a", 0), model_record("b", 0, n_features=4, n_classes=2, seed=5)]
    store = LatestWindows()
    for record in records:
        result = apply(store, record)
        assert result.outcome == "new"
    got = parse_exposition(exposition(store))
    expected = expected_samples(records)
    assert got == expected
    names = {name for name, _ in got}
    # the default really drops the per-feature statistics and keeps the scores
    assert "mlwatcher_feature_value" not in names
    assert {"mlwatcher_feature_drift", "mlwatcher_dataset_drift", "mlwatcher_accuracy"} <= names
    assert store.series == len(expected)


def test_every_family_is_a_gauge_with_help() -> None:
    store = LatestWindows()
    apply(store, model_record("a", 0))
    families = list(text_string_to_metric_families(exposition(store)))
    assert families
    for family in families:
        assert family.type == "gauge", family.name
        assert family.documentation, family.name


def test_newer_window_replaces_revision_replaces_older_is_ignored() -> None:
    store = LatestWindows()
    first, second = model_record("a", 0), model_record("a", 1, shift=2.0)
    apply(store, first)
    assert apply(store, second).outcome == "new"
    assert apply(store, first).outcome == "stale"
    assert parse_exposition(exposition(store)) == expected_samples([second])
    revised = model_record("a", 1, shift=3.0)  # same window and revision again: replaces
    assert apply(store, revised).outcome == "replay"
    assert parse_exposition(exposition(store)) == expected_samples([revised])


def test_an_empty_window_replaces_the_agent_series() -> None:
    store = LatestWindows()
    apply(store, model_record("a", 0))
    empty = MetricRecord(
        "a",
        model_record("a", 1).window_start_ms,
        model_record("a", 1).window_end_ms,
        0,
        0,
        [Point("rows_seen", "counter", 0.0), Point("buffer_count", "counter", 0.0)],
    )
    apply(store, empty)
    got = parse_exposition(exposition(store))
    assert got == expected_samples([empty])
    assert not any(name == "mlwatcher_feature_drift" for name, _ in got)


@pytest.mark.parametrize(
    ("series_filter", "keep"),
    [
        (SeriesFilter(feature_what=("*",)), lambda p: True),
        (
            SeriesFilter(exclude_what=("confusion_count", "*_drift")),
            lambda p: (
                p.what != "confusion_count"
                and not p.what.endswith("_drift")
                and p.feat_name is None
            ),
        ),
        (
            SeriesFilter(include_what=("accuracy", "feature_*")),
            lambda p: p.what == "accuracy" or p.what == "feature_drift",
        ),
        (
            SeriesFilter(
                feature_what=("feature_drift", "feature_value"),
                include_feature=("feat_1", "feat_[34]"),
                exclude_feature=("feat_4",),
            ),
            lambda p: (
                p.feat_name is None
                or (
                    p.what in ("feature_drift", "feature_value")
                    and p.feat_name in ("feat_1", "feat_3")
                )
            ),
        ),
    ],
)
def test_filters(series_filter: SeriesFilter, keep) -> None:
    record = model_record("a", 0)
    store = LatestWindows(series_filter)
    result = apply(store, record)
    expected = expected_samples([record], keep=keep)
    assert parse_exposition(exposition(store)) == expected
    assert result.filtered == len(record.points) - (len(expected) - 3)  # 3 per-agent series


def test_expiry_after_n_windows_of_the_agent() -> None:
    store = LatestWindows(expire_after_windows=3)
    record = model_record("a", 0)
    other = model_record("b", 100)
    apply(store, record)
    apply(store, other)
    end_s = record.window_end_ms / 1000
    assert store.expire(end_s + 3 * WINDOW_MS / 1000 - 1) == []
    assert store.expire(end_s + 3 * WINDOW_MS / 1000 + 1) == ["a"]
    assert {name_labels for name_labels in parse_exposition(exposition(store))} == set(
        expected_samples([other])
    )


def test_agents_of_lost_partitions_are_dropped() -> None:
    store = LatestWindows()
    apply(store, model_record("a", 0), source=("m", 0))
    apply(store, model_record("b", 0), source=("m", 1))
    assert store.drop_sources([("m", 0)]) == ["a"]
    assert [w.agent_id for w in store.agents()] == ["b"]


def test_extra_properties_become_valid_labels_and_collisions_are_refused() -> None:
    points = [
        Point("custom.score", "gauge", 1.5, extra={"agent_id": "x", "pred-class": "c1"}),
        Point("custom", "gauge", 2.0, extra={"a.b": "1", "a_b": "2"}),  # collide: refused
        Point("kept", "gauge", 3.0),
    ]
    record = MetricRecord("a", 0, WINDOW_MS, 1, 1, points)
    store = LatestWindows(SeriesFilter())
    result = apply(store, record)
    assert result.refused == 1
    got = parse_exposition(exposition(store))
    labels = {"agent_id": "a", "extra_agent_id": "x", "pred_class": "c1"}
    assert got[("mlwatcher_custom_score", frozenset(labels.items()))] == 1.5
    assert got[("mlwatcher_kept", frozenset({("agent_id", "a")}))] == 3.0
    assert not any(name == "mlwatcher_custom" for name, _ in got)


def test_label_names() -> None:
    assert label_name("stat") == "extra_stat"
    assert label_name("9lives") == "x9lives"
    assert label_name("__name__") == "x__name__"
    assert label_name("pred_class") == "pred_class"


def test_expire_after_windows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expire_after_windows"):
        LatestWindows(expire_after_windows=0)


def test_empty_label_values_are_left_out_as_prometheus_does() -> None:
    points = [Point("custom", "gauge", 1.0, class_name="", extra={"note": "", "kept": "x"})]
    store = LatestWindows()
    apply(store, MetricRecord("a", 0, WINDOW_MS, 1, 1, points, model_version=""))
    text = exposition(store)
    assert 'mlwatcher_custom{agent_id="a",kept="x"} 1.0' in text
    assert 'mlwatcher_agent_info{agent_id="a"} 1.0' in text
    assert '""' not in text


def test_a_label_revision_of_the_newest_window_replaces_only_its_label_series() -> None:
    store = LatestWindows()
    older, newest = model_record("a", 0), model_record("a", 1, shift=1.0)
    apply(store, older)
    assert apply(store, newest).outcome == "new"
    first = label_revision(newest, 1)
    assert apply(store, first).outcome == "label_revision"
    after_first = expected_samples(latest_state([newest, first]))
    assert parse_exposition(exposition(store)) == after_first
    assert after_first != expected_samples([newest])  # the label gauges did change
    # a revision of an older window never overwrites the newest window's gauges ...
    assert apply(store, label_revision(older, 1)).outcome == "stale"
    # ... and neither does a worker's replay of an older revision of the newest window
    assert apply(store, newest).outcome == "stale"
    assert apply(store, first).outcome == "replay"
    assert parse_exposition(exposition(store)) == after_first
    second = label_revision(newest, 2)
    assert apply(store, second).outcome == "label_revision"
    assert parse_exposition(exposition(store)) == expected_samples(
        latest_state([newest, first, second])
    )
    # the next window replaces everything, label series included
    following = model_record("a", 2)
    assert apply(store, following).outcome == "new"
    assert parse_exposition(exposition(store)) == expected_samples([following])


def test_a_revision_whose_window_close_was_not_seen_serves_its_label_series() -> None:
    # (the record at close was before the restarted sink's lookback)
    store = LatestWindows()
    revision = label_revision(model_record("a", 5), 3)
    assert apply(store, revision).outcome == "new"
    assert parse_exposition(exposition(store)) == expected_samples([revision])
