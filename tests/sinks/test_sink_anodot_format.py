"""Conversion of metric points to Anodot Metrics 2.0 points, and Anodot's property rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwatcher.metrics import Point
from mlwatcher.sinks.anodot_format import (
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    PointRejectedError,
    convert_points,
    sanitize,
    series_id,
    to_anodot_point,
)

WINDOW_START_MS = 1_764_374_400_000  # 2025-11-29T00:00:00Z


def test_point_with_every_property() -> None:
    point = Point("feature_value", "gauge", 0.25, feat_name="pixel 3.1", stat="q25")
    body = to_anodot_point("MNIST agent", WINDOW_START_MS, point)
    assert body == {
        "properties": {
            "what": "feature_value",
            "target_type": "gauge",
            "agent_id": "MNIST_agent",
            "feat_name": "pixel_3_1",
            "stat": "q25",
            "ver": "1",
        },
        "tags": {},
        "timestamp": 1_764_374_400,
        "value": 0.25,
    }


def test_timestamp_is_window_start_in_whole_seconds() -> None:
    body = to_anodot_point("a", 1_000_999, Point("buffer_count", "counter", 3))
    assert body["timestamp"] == 1000
    assert isinstance(body["timestamp"], int)


def test_only_set_properties_and_extra_are_sent() -> None:
    point = Point("confusion", "counter", 4, class_name="7", extra={"pred_class": "1"})
    properties = to_anodot_point("a", WINDOW_START_MS, point)["properties"]
    assert set(properties) == {"what", "target_type", "agent_id", "class_name", "ver", "pred_class"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.b c", "a_b_c"),
        ("café", "cafe"),
        ("日本", "__"),
        ("tab\there", "tab_here"),
        ("", "_"),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    assert sanitize(raw, 150) == expected


@given(st.text(max_size=400))
def test_sanitized_text_always_meets_anodot_rules(text: str) -> None:
    for limit in (MAX_KEY_LENGTH, MAX_VALUE_LENGTH):
        clean = sanitize(text, limit)
        assert 1 <= len(clean) <= limit
        assert clean.isascii() and clean.isprintable()
        assert "." not in clean and " " not in clean


def test_long_keys_and_values_are_cut() -> None:
    point = Point("w", "gauge", 1.0, extra={"k" * 80: "v" * 400})
    properties = to_anodot_point("a", WINDOW_START_MS, point)["properties"]
    assert properties["k" * MAX_KEY_LENGTH] == "v" * MAX_VALUE_LENGTH


def test_more_than_20_properties_is_refused_not_truncated() -> None:
    extra = {f"p{i}": "x" for i in range(16)}  # 4 fixed (what, target_type, agent_id, ver)
    assert len(to_anodot_point("a", 0, Point("w", "gauge", 1.0, extra=extra))["properties"]) == 20
    extra["p16"] = "x"
    with pytest.raises(PointRejectedError, match="21 properties"):
        to_anodot_point("a", 0, Point("w", "gauge", 1.0, extra=extra))


def test_properties_colliding_after_sanitising_are_refused() -> None:
    with pytest.raises(PointRejectedError, match="a_b"):
        to_anodot_point("a", 0, Point("w", "gauge", 1.0, extra={"a.b": "1", "a b": "2"}))


def test_extra_may_not_override_fixed_properties() -> None:
    with pytest.raises(PointRejectedError, match="agent_id"):
        to_anodot_point("a", 0, Point("w", "gauge", 1.0, extra={"agent_id": "other"}))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(value: float) -> None:
    converted, rejected = convert_points("a", 0, [Point("w", "gauge", value)])
    assert converted == []
    assert "finite" in rejected[0].reason


def test_convert_points_keeps_good_ones_in_order() -> None:
    points = [Point("a", "gauge", 1.0), Point("b", "gauge", math.nan), Point("c", "gauge", 3.0)]
    converted, rejected = convert_points("x", 0, points)
    assert [c["properties"]["what"] for c in converted] == ["a", "c"]
    assert [r.point.what for r in rejected] == ["b"]


def test_series_id_is_the_full_property_set() -> None:
    a = to_anodot_point("x", 0, Point("w", "gauge", 1.0, class_name="1"))
    b = to_anodot_point("x", 60_000, Point("w", "gauge", 2.0, class_name="1"))
    c = to_anodot_point("x", 0, Point("w", "gauge", 1.0, class_name="2"))
    assert series_id(a) == series_id(b) != series_id(c)
