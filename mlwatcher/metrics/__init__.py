"""Kafka-free metric engine: window state (exact counters + reservoir), metrics and drift."""

from mlwatcher.metrics.compute import compute_metrics
from mlwatcher.metrics.inputs import MetricInputError
from mlwatcher.metrics.reference import ReferenceProfile
from mlwatcher.metrics.state import StateDelta, WindowState, warm_up
from mlwatcher.point import Point

__all__ = [
    "MetricInputError",
    "Point",
    "ReferenceProfile",
    "StateDelta",
    "WindowState",
    "compute_metrics",
    "warm_up",
]
