"""The columnar close (``WindowState.metric_columns``) equals the point-by-point one.

Equal here means the record's columns *and* its string dictionary are those of
``PointColumns.from_points(state.metrics(...))``, so the encoded metric record is the same
bytes whichever path the worker takes.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlwatcher.metrics import ReferenceProfile, WindowState
from mlwatcher.metrics.compute import PointList
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.point import Point, PointBlock
from mlwatcher.schemas import MetricRecord, PointColumns
from mlwatcher.schemas.point_columns import PointColumnsBuilder


def _state(
    rows: int,
    n_features: int,
    *,
    categorical: tuple[int, ...] = (),
    labels: bool = True,
    missing: bool = False,
    seed: int = 0,
    n_classes: int = 4,
) -> WindowState:
    rng = np.random.default_rng(seed)
    state = WindowState(n_classes, 500, n_features, categorical, seed=seed)
    for _ in range(3):
        probs = rng.dirichlet(np.ones(n_classes) * 0.5, size=rows)
        feats = rng.normal(size=(rows, n_features)) if n_features else None
        if feats is not None:
            for j in categorical:
                feats[:, j] = rng.integers(0, 5, rows)
            if missing:
                feats[rng.random(feats.shape) < 0.05] = np.nan
                feats[:, -1] = np.nan  # a feature without any value: its stats are skipped
        y = rng.integers(0, n_classes, rows) if labels else None
        state.update(probs, y, feats)
    return state


def _assert_same(state: WindowState, **kwargs: object) -> None:
    points = state.metrics(**kwargs)  # type: ignore[arg-type]
    columns = state.metric_columns(**kwargs)  # type: ignore[arg-type]
    expected = PointColumns.from_points(points)
    assert len(columns) == len(points) > 0
    assert columns.strings == expected.strings
    for name in ("what", "class_name", "feat_name", "stat", "extra", "target_type"):
        np.testing.assert_array_equal(getattr(columns, name), getattr(expected, name), name)
    np.testing.assert_array_equal(columns.value, expected.value)
    assert columns.same_as(expected)
    assert columns.to_points() == points
    header = dict(
        agent_id="a", window_start_ms=0, window_end_ms=60_000, rows_seen=1, rows_sampled=1
    )
    assert (
        MetricRecord(columns=columns, **header).encode()  # type: ignore[arg-type]
        == MetricRecord(points=points, **header).encode()  # type: ignore[arg-type]
    )


def test_numeric_features_with_labels_no_reference() -> None:
    _assert_same(_state(300, 6))


def test_drift_against_a_previous_window_with_categorical_features() -> None:
    state = _state(400, 7, categorical=(1, 4))
    previous = ReferenceProfile.from_window(_state(400, 7, categorical=(1, 4), seed=9))
    _assert_same(state, reference=previous, feature_names=[f"f{j}" for j in range(7)])


def test_drift_against_a_baseline_profile_with_class_names() -> None:
    rng = np.random.default_rng(3)
    baseline = ReferenceProfile.from_data(
        rng.normal(0.3, 1.0, size=(3000, 5)), rng.dirichlet(np.ones(4), 3000)
    )
    _assert_same(_state(300, 5), reference=baseline, class_names=["w", "x", "y", "z"])


def test_without_labels_and_with_missing_values() -> None:
    state = _state(200, 5, labels=False, missing=True)
    previous = ReferenceProfile.from_window(_state(200, 5, missing=True, seed=4))
    _assert_same(state)
    _assert_same(state, reference=previous)


def test_without_features_and_with_delayed_labels() -> None:
    state = _state(100, 0, labels=False, n_classes=3)
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3), size=50)
    delayed = ExactCounters.of_labels(probs, probs.argmax(axis=1), rng.integers(0, 3, 50))
    _assert_same(state, delayed_labels=delayed)


def test_empty_window() -> None:
    _assert_same(WindowState(2, 10, 3))


def test_builder_drops_non_finite_values_and_numbers_strings_in_order_of_use() -> None:
    names = ["a", "b", "c", "d"]
    points = [Point("rows_seen", "counter", 3.0)]
    builder = PointColumnsBuilder()
    builder.add("rows_seen", "counter", 3.0)
    builder.add("skipped", "gauge", float("nan"))
    for stat, values in (("p", [np.nan, 1.0, np.inf, 2.0]), ("q", [1.0, 2.0, 3.0, 4.0])):
        builder.add_per_feature("feature_drift", np.array(values), names, stat)
        points += [
            Point("feature_drift", "gauge", v, feat_name=n, stat=stat)
            for n, v in zip(names, values, strict=True)
            if np.isfinite(v)
        ]
    builder.add("accuracy", "gauge", 0.5, class_name="b", extra={"average": "macro"})
    points.append(Point("accuracy", "gauge", 0.5, class_name="b", extra={"average": "macro"}))
    assert builder.build().same_as(PointColumns.from_points(points))


def test_builder_refuses_an_unknown_target_type() -> None:
    with pytest.raises(ValueError, match="target_type"):
        PointColumnsBuilder().add("x", "histogram", 1.0)


def test_a_record_of_columns_reads_and_edits_as_points() -> None:
    points = [Point("accuracy", "gauge", 0.5), Point("rows_seen", "counter", 9.0)]
    header = dict(agent_id="a", window_start_ms=0, window_end_ms=10, rows_seen=9, rows_sampled=9)
    record = MetricRecord(columns=PointColumns.from_points(points), **header)  # type: ignore[arg-type]
    assert record == MetricRecord(points=list(points), **header)  # type: ignore[arg-type]
    record.points.append(Point("f1", "gauge", 0.25))
    assert MetricRecord.decode(record.encode()).points == [*points, Point("f1", "gauge", 0.25)]
    with pytest.raises(TypeError, match="exactly one"):
        MetricRecord(**header)  # type: ignore[arg-type]


def test_builder_interleaves_per_feature_series_as_point_by_point() -> None:
    names = ["x", "y", "z"]
    for second in ([4.0, 5.0, 6.0], [4.0, np.nan, 6.0]):  # all finite; one skipped
        columns = (np.array([1.0, 2.0, 3.0]), np.array(second))
        builder = PointColumnsBuilder()
        builder.add("rows_seen", "counter", 3.0)
        builder.add_interleaved(("missing", "infinite"), columns, names, "counter")
        expected = [Point("rows_seen", "counter", 3.0)] + [
            Point(what, "counter", float(values[k]), feat_name=name)
            for k, name in enumerate(names)
            for what, values in zip(("missing", "infinite"), columns, strict=True)
            if np.isfinite(values[k])
        ]
        assert builder.build().same_as(PointColumns.from_points(expected))


@pytest.mark.parametrize("first_finite", [True, False])
def test_builder_add_rows_equals_one_add_per_point(first_finite: bool) -> None:
    # Mixed constant and varying fields, shared and distinct extras, a non-finite first
    # point (its strings must not be numbered) and one in the middle; the same block twice
    # (its columns are reused) and once more after other strings shift the numbering.
    extras = [{"pred_class": "p0"}, None, {"pred_class": "p1"}, {"pred_class": "p0"}]
    block = PointBlock.of(
        ["label_count", "accuracy", "confusion_count", "confusion_count"],
        ["counter", "gauge", "counter", "counter"],
        class_name=["c0", "c1", "c2", "c1"],
        stat="s",
        extra=extras,
    )
    rounds = [
        [1.0 if first_finite else np.nan, 0.5, np.inf, 2.0],
        [3.0, 0.25, 1.0, 2.0],
        [1.0 if first_finite else np.nan, 0.5, np.inf, 2.0],
    ]
    for _ in range(2):  # a second builder meets the block's memo
        one_by_one, rows = PointColumnsBuilder(), PointColumnsBuilder()
        for k, values in enumerate(rounds):
            for builder in (one_by_one, rows):
                builder.add("rows_seen", "counter", 3.0, class_name=f"c{k}")
            for i, value in enumerate(values):
                one_by_one.add(
                    block.what[i],
                    block.target_type[i],
                    value,
                    class_name=block.class_name[i],
                    stat="s",
                    extra=extras[i],
                )
            rows.add_rows(block, values)
        assert rows.build().same_as(one_by_one.build())
    points = PointList()
    points.add_rows(block, rounds[0])
    expected = PointColumns.from_points(one_by_one_points(block, rounds[0]))
    assert PointColumns.from_points(points.items).same_as(expected)


def one_by_one_points(block: PointBlock, values: list[float]) -> list[Point]:
    return [
        Point(
            block.what[i],
            block.target_type[i],
            value,
            block.class_name[i],
            block.feat_name[i],
            block.stat[i],
            dict(block.extra[i] or {}),
        )
        for i, value in enumerate(values)
        if np.isfinite(value)
    ]


def test_point_block_refuses_fields_of_different_lengths_and_wrong_value_counts() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        PointBlock.of(["x", "y"], "gauge", class_name=["a"])
    block = PointBlock.of("x", "gauge", class_name=["a", "b"])
    with pytest.raises(ValueError, match="2 points, got 3 values"):
        PointColumnsBuilder().add_rows(block, [1.0, 2.0, 3.0])
