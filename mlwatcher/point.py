"""The unit of output of the metric engine: one named, typed value with its properties.

A leaf module (standard library only): the schemas, the sinks and the engine share it, and
importing it loads no part of the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
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
