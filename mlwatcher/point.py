"""The unit of output of the metric engine: one named, typed value with its properties.

A leaf module (standard library only): the schemas, the sinks and the engine share it, and
importing it loads no part of the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

GAUGE = "gauge"
COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class Point:
    """One metric value of one window.

    A series is identified by ``what`` together with every property that is set
    (``class_name``, ``feat_name``, ``stat`` and the ``extra`` mapping). ``value`` is
    always finite: the engine skips a point rather than emit NaN or inf.
    """

    what: str
    target_type: str
    value: float
    class_name: str | None = None
    feat_name: str | None = None
    stat: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        """All properties of the series as one flat mapping (``what`` included)."""
        props = {"what": self.what, "target_type": self.target_type}
        if self.class_name is not None:
            props["class_name"] = self.class_name
        if self.feat_name is not None:
            props["feat_name"] = self.feat_name
        if self.stat is not None:
            props["stat"] = self.stat
        props.update(self.extra)
        return props


@dataclass(frozen=True, eq=False)
class PointBlock:
    """The properties of a run of points whose values come later: one entry per point.

    The close emits the same runs every window with new values (a class's scores and its
    row of the confusion matrix, a reliability bin's three points). Built once and kept by
    its caller, a block lets a collector prepare its encoding once (compared by identity).
    """

    what: tuple[str, ...]
    target_type: tuple[str, ...]
    class_name: tuple[str | None, ...]
    feat_name: tuple[str | None, ...]
    stat: tuple[str | None, ...]
    extra: tuple[Mapping[str, str] | None, ...]

    @classmethod
    def of(
        cls,
        what: str | Sequence[str],
        target_type: str | Sequence[str],
        *,
        class_name: str | Sequence[str | None] | None = None,
        feat_name: str | Sequence[str | None] | None = None,
        stat: str | Sequence[str | None] | None = None,
        extra: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> PointBlock:
        """A block from its fields: a string, a mapping or None holds for every point, a
        sequence gives one entry per point (every sequence of the same length)."""
        given = {
            "what": what,
            "target_type": target_type,
            "class_name": class_name,
            "feat_name": feat_name,
            "stat": stat,
            "extra": extra,
        }
        lengths = {
            len(value)
            for value in given.values()
            if not (value is None or isinstance(value, str | Mapping))
        }
        if len(lengths) > 1:
            raise ValueError(f"PointBlock: fields of different lengths {sorted(lengths)}")
        count = lengths.pop() if lengths else 1
        fields = {
            name: (value,) * count
            if value is None or isinstance(value, str | Mapping)
            else tuple(value)
            for name, value in given.items()
        }
        return cls(**fields)

    def __len__(self) -> int:
        return len(self.what)

    def points(self, values: Sequence[float]) -> list[Point]:
        """The block's points with these values (one per point), non-finite values dropped."""
        if len(values) != len(self):
            raise ValueError(f"PointBlock: {len(self)} points, got {len(values)} values")
        return [
            Point(what, target_type, value, class_name, feat_name, stat, dict(extra or {}))
            for what, target_type, value, class_name, feat_name, stat, extra in zip(
                self.what,
                self.target_type,
                values,
                self.class_name,
                self.feat_name,
                self.stat,
                self.extra,
                strict=True,
            )
            if math.isfinite(value)
        ]
