"""Shared helpers for the metric-engine tests (plain module, no conftest)."""

from __future__ import annotations

import numpy as np

from mlwatcher.metrics import Point


def find(points: list[Point], what: str, **props: object) -> list[Point]:
    """Points with the given ``what`` whose properties include ``props``."""
    out = []
    for point in points:
        if point.what != what:
            continue
        have = point.properties()
        if all(have.get(k) == v for k, v in props.items()):
            out.append(point)
    return out


def value(points: list[Point], what: str, **props: object) -> float:
    """The single value of the series ``what`` + ``props`` (fails if absent or ambiguous)."""
    found = find(points, what, **props)
    assert len(found) == 1, f"{what} {props}: expected 1 point, got {len(found)}"
    return found[0].value


def random_batch(
    rng: np.random.Generator, n: int, n_classes: int, n_features: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    probs = rng.dirichlet(np.ones(n_classes) * 0.7, size=n)
    labels = rng.integers(0, n_classes, size=n)
    feats = rng.normal(size=(n, n_features)) if n_features else None
    return probs, labels, feats
