"""Metric points -> Anodot Metrics 2.0 JSON points (pure: no I/O).

Anodot identifies a series by all its properties and only accepts ASCII property keys and
values without ``.`` or spaces, at most 20 properties, keys up to 50 and values up to 150
characters. We sanitise the way Anodot's own clients do (unsafe characters become ``_``)
and refuse, with a reason, what sanitising cannot fix without silently merging series
(too many properties, two properties colliding after sanitising, a non-finite value).

Timestamp: the **window start** in whole epoch seconds (UTC). The start is what a
re-emitted record carries unchanged, it is aligned with Anodot's rollup buckets (which are
labelled by their start), and it keeps the point inside its own bucket even when the window
closes late. (The 2019 agent used the local-time window end, which shifted every point into
the next bucket and depended on the server's time zone.)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mlwatcher.point import Point

MAX_PROPERTIES = 20
MAX_KEY_LENGTH = 50
MAX_VALUE_LENGTH = 150
PROPERTY_VERSION = "1"
#: The property of the label series ``mlwatcher sink anodot-labels`` sends: label metrics of
#: a window as they stood ``<seconds>s`` after its end (mlwatcher/sinks/anodot_labels.py).
LABEL_WAIT = "label_wait"
#: Properties the sinks set themselves; an ``extra`` entry may not reuse these names.
FIXED_PROPERTIES = (
    "what",
    "target_type",
    "agent_id",
    "class_name",
    "feat_name",
    "stat",
    "ver",
    LABEL_WAIT,
)

# Everything outside printable ASCII, plus space and ".", is unsafe in Anodot properties.
_UNSAFE = re.compile(r"[^\x21-\x7e]|\.")

AnodotPoint = dict[str, Any]
SeriesId = tuple[tuple[str, str], ...]


class PointRejectedError(ValueError):
    """A point that cannot become a valid Anodot point; the message is the reason."""


@dataclass(frozen=True)
class RejectedPoint:
    """A point refused before sending, with the reason (for the dead-letter topic)."""

    point: Point
    reason: str


@lru_cache(maxsize=65536)  # property names and values repeat in every window
def sanitize(text: str, max_length: int) -> str:
    """ASCII-only, ``.``/whitespace/control characters -> ``_``, cut to ``max_length``.

    Accents are folded first (``é`` -> ``e``) so readable names stay readable; an empty
    result becomes ``_`` because Anodot refuses empty properties.
    """
    folded = text
    if not text.isascii():
        folded = unicodedata.normalize("NFKD", text)
        folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    cleaned = _UNSAFE.sub("_", folded)[:max_length]
    return cleaned or "_"


def anodot_properties(agent_id: str, point: Point, label_wait: str | None = None) -> dict[str, str]:
    """The sanitised Anodot properties of ``point``; PointRejectedError if impossible.
    ``label_wait``: the :data:`LABEL_WAIT` property of the label series (``"3600s"``)."""
    raw: list[tuple[str, str]] = [
        ("what", point.what),
        ("target_type", point.target_type),
        ("agent_id", agent_id),
    ]
    for name in ("class_name", "feat_name", "stat"):
        value = getattr(point, name)
        if value is not None:
            raw.append((name, value))
    raw.append(("ver", PROPERTY_VERSION))
    if label_wait is not None:
        raw.append((LABEL_WAIT, label_wait))
    for key, value in point.extra.items():
        if key in FIXED_PROPERTIES:
            raise PointRejectedError(
                f"extra property {key!r} clashes with the property the sink sets itself "
                f"(reserved: {', '.join(FIXED_PROPERTIES)})"
            )
        raw.append((key, value))
    if len(raw) > MAX_PROPERTIES:
        raise PointRejectedError(
            f"{len(raw)} properties, Anodot accepts at most {MAX_PROPERTIES} "
            f"(extra has {len(point.extra)} entries)"
        )
    properties: dict[str, str] = {}
    for key, value in raw:
        clean_key = sanitize(key, MAX_KEY_LENGTH)
        if clean_key in properties:
            raise PointRejectedError(
                f"property {key!r} becomes {clean_key!r} after sanitising, which another "
                "property already uses; the series would be merged"
            )
        properties[clean_key] = sanitize(str(value), MAX_VALUE_LENGTH)
    return properties


def to_anodot_point(
    agent_id: str, window_start_ms: int, point: Point, label_wait: str | None = None
) -> AnodotPoint:
    """One Metrics 2.0 point; raises PointRejectedError with the reason."""
    value = float(point.value)
    if not math.isfinite(value):
        raise PointRejectedError(f"value: {value} is not a finite number (what={point.what!r})")
    if point.target_type not in ("gauge", "counter"):
        raise PointRejectedError(
            f"target_type: expected 'gauge' or 'counter', got {point.target_type!r}"
        )
    return {
        "properties": anodot_properties(agent_id, point, label_wait),
        "tags": {},
        "timestamp": window_start_ms // 1000,
        "value": value,
    }


def convert_points(
    agent_id: str, window_start_ms: int, points: Iterable[Point], label_wait: str | None = None
) -> tuple[list[AnodotPoint], list[RejectedPoint]]:
    """Convert the points of one window; refused points come back with their reason."""
    converted: list[AnodotPoint] = []
    rejected: list[RejectedPoint] = []
    for point in points:
        try:
            converted.append(to_anodot_point(agent_id, window_start_ms, point, label_wait))
        except PointRejectedError as error:
            rejected.append(RejectedPoint(point, str(error)))
    return converted, rejected


def series_id(anodot_point: AnodotPoint) -> SeriesId:
    """Anodot's identity of a series: the full set of properties."""
    return tuple(sorted(anodot_point["properties"].items()))
