"""The state of one open window: exact counters plus a reservoir sample, and its deltas."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwatcher.metrics import codec, columns, drift, kernels
from mlwatcher.metrics.compute import PointList, PointSink, collect_from_parts
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.metrics.inputs import (
    MetricInputError,
    as_features,
    as_probabilities,
    normalise_labels,
    plain_batch,
    predicted_classes,
)
from mlwatcher.metrics.reference import ReferenceProfile
from mlwatcher.metrics.reservoir import Reservoir, Sample, choose_slots, replacement_draws
from mlwatcher.point import Point
from mlwatcher.schemas.point_columns import PointColumns, PointColumnsBuilder

_STATE_MAGIC = b"MLWS"
_DELTA_MAGIC = b"MLWD"


@dataclass(slots=True)
class StateDelta:
    """What one batch changed: counter increments and the rows that entered the reservoir.

    Its size is O(rows entered + n_classes² + n_features), independent of the buffer size,
    so a changelog of deltas grows like the number of reservoir replacements.
    ``rows_seen_before`` lets :meth:`WindowState.apply` refuse out-of-order replays.
    """

    rows_seen_before: int
    counters: ExactCounters
    slots: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    features: np.ndarray  # row-major (k, n_features); NaN rows when the batch had none

    def to_bytes(self) -> bytes:
        meta, arrays = self.counters.to_parts("c_")
        # one batch counts fewer than 2**31 of anything: counts travel as int32, half the bytes
        arrays = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in arrays.items()}
        meta.update(
            rows_seen_before=self.rows_seen_before,
            n_classes=self.counters.n_classes,
            n_features=self.counters.n_features,
        )
        arrays.update(
            slots=self.slots.astype(np.int32),
            probs=self.probs,
            labels=self.labels.astype(np.int32),
            features=self.features,
        )
        return codec.pack(_DELTA_MAGIC, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> StateDelta:
        meta, arrays = codec.unpack(_DELTA_MAGIC, data)
        counters = ExactCounters.from_parts(
            meta["n_classes"], meta["n_features"], meta, arrays, "c_"
        )
        return cls(
            rows_seen_before=int(meta["rows_seen_before"]),
            counters=counters,
            slots=arrays["slots"].astype(np.int64),
            probs=arrays["probs"],
            labels=arrays["labels"].astype(np.int64),
            features=arrays["features"],
        )


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


class WindowState:
    """Exact counters over every row of a window plus a uniform reservoir of its rows."""

    def __init__(
        self,
        n_classes: int,
        max_buffer_size: int,
        n_features: int = 0,
        categorical_features: Sequence[int] = (),
        threshold: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if n_classes < 2:
            raise MetricInputError(f"n_classes: expected at least 2, got {n_classes}")
        if max_buffer_size < 1:
            raise MetricInputError(f"max_buffer_size: expected >= 1, got {max_buffer_size}")
        if n_features < 0:
            raise MetricInputError(f"n_features: expected >= 0, got {n_features}")
        categorical = tuple(sorted({int(i) for i in categorical_features}))
        if categorical and not (categorical[0] >= 0 and categorical[-1] < n_features):
            raise MetricInputError(
                f"categorical_features: indices must be in [0, {n_features}), got {categorical}"
            )
        self.n_classes = n_classes
        self.max_buffer_size = max_buffer_size
        self.n_features = n_features
        self.categorical_features = categorical
        self.threshold = float(threshold)
        self.rng = np.random.default_rng(seed)
        self.counters = ExactCounters(n_classes, n_features)
        self._reservoir = Reservoir(max_buffer_size, n_classes, n_features)

    # -- properties -------------------------------------------------------------------------
    @property
    def rows_seen(self) -> int:
        return self.counters.rows_seen

    @property
    def rows_sampled(self) -> int:
        return self._reservoir.size

    @property
    def sample(self) -> Sample:
        """The reservoir's rows as read-only views (no copy); see :meth:`reservoir` for copies."""
        return self._reservoir.sample()

    def _same_shape(self) -> WindowState:
        return WindowState(
            self.n_classes,
            self.max_buffer_size,
            self.n_features,
            self.categorical_features,
            self.threshold,
        )

    # -- updates ----------------------------------------------------------------------------
    def update(
        self,
        predict_proba: np.ndarray,
        labels: np.ndarray | None = None,
        features: np.ndarray | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> StateDelta:
        """Apply one batch and return the delta that reproduces the change via :meth:`apply`.

        The batch is checked by the validation contract (:mod:`mlwatcher.validation`).
        """
        rng = self.rng if rng is None else rng
        if kernels.ENABLED:
            delta = self._compiled_update(predict_proba, labels, features, rng)
            if delta is not None:
                return delta
        delta = self._checked_delta(predict_proba, labels, features, rng)
        self.apply(delta)
        return delta

    def _compiled_update(
        self, predict_proba: Any, labels: Any, features: Any, rng: np.random.Generator
    ) -> StateDelta | None:
        """Apply the batch in two compiled calls (check and count, then sample, write and
        add) and return its delta; or None, with nothing changed, when the batch is not of
        the plain kinds or not one the fast checks accept: then :meth:`_checked_delta`
        decides, and explains a refusal. Nothing is drawn from ``rng`` before the batch is
        accepted. The delta is the checked path's, byte for byte, and :meth:`apply` of it
        to a state in the same position gives the same state."""
        batch = plain_batch(predict_proba, labels, features, self.n_classes, self.n_features)
        if batch is None:
            return None
        probs, label_vec, feats = batch
        counters = ExactCounters.from_plain_batch(
            probs, self.threshold, label_vec, feats, self.n_features, self.categorical_features
        )
        if counters is None:
            return None
        rows_seen, n_rows, capacity = self.rows_seen, probs.shape[0], self.max_buffer_size
        n_fill, uniforms = replacement_draws(rows_seen, n_rows, capacity, rng)
        slots, sampled_probs, sampled_labels, sampled_features = kernels.apply_batch(
            uniforms,
            rows_seen,
            n_fill,
            capacity,
            batch,
            (counters.counts, counters.totals),
            (self.counters.counts, self.counters.totals),
            self._reservoir.writable(rows_seen + n_rows),
        )
        self._reservoir.mark_written(slots)
        self.counters.add_categories(counters)
        return StateDelta(
            rows_seen, counters, slots, sampled_probs, sampled_labels, sampled_features
        )

    def _checked_delta(
        self, predict_proba: Any, labels: Any, features: Any, rng: np.random.Generator
    ) -> StateDelta:
        """The delta by the contract's checks and the NumPy twins (any accepted input)."""
        probs = as_probabilities(predict_proba, self.n_classes)
        n_rows = probs.shape[0]
        label_vec = normalise_labels(labels, n_rows, self.n_classes)
        feats: np.ndarray | None = None
        if features is not None:
            if self.n_features == 0:
                raise MetricInputError("features: this window state was created with n_features=0")
            feats, _, _ = as_features(features, n_rows, self.n_features)
        predicted = predicted_classes(probs, self.threshold)
        counters = ExactCounters.from_batch(
            probs, predicted, label_vec, feats, self.n_features, self.categorical_features
        )
        slots, rows = choose_slots(self.rows_seen, n_rows, self.max_buffer_size, rng)
        return StateDelta(
            rows_seen_before=self.rows_seen,
            counters=counters,
            slots=slots,
            probs=probs[rows],
            labels=np.full(rows.size, -1, np.int64) if label_vec is None else label_vec[rows],
            features=(
                np.full((rows.size, self.n_features), np.nan) if feats is None else feats[rows]
            ),
        )

    def apply(self, delta: StateDelta) -> None:
        """Replay a delta produced by :meth:`update` on a state in the same position."""
        if delta.rows_seen_before != self.rows_seen:
            raise ValueError(
                f"delta: made for a state with {delta.rows_seen_before} rows seen,"
                f" this state has {self.rows_seen} (deltas must be applied in order)"
            )
        self.counters.add(delta.counters)
        self._reservoir.write(
            delta.slots, delta.probs, delta.labels, delta.features if self.n_features else None
        )

    def merge(self, other: WindowState) -> WindowState:
        """A new state for the union of two partial states of the same window.

        The merged reservoir is a uniform sample of the union: the number of rows taken from
        ``self`` is hypergeometric (as for a uniform draw of ``capacity`` rows out of both
        windows), and those rows are a uniform subset of ``self``'s (itself uniform) sample.
        """
        if (other.n_classes, other.n_features, other.max_buffer_size) != (
            self.n_classes,
            self.n_features,
            self.max_buffer_size,
        ):
            raise ValueError("merge: both states need the same n_classes, n_features and buffer")
        out = self._same_shape()
        out.rng = _rng_from_state(_rng_state(self.rng))
        out.counters = self.counters.copy()
        out.counters.add(other.counters)
        cap = self.max_buffer_size
        n_a, n_b = self.rows_seen, other.rows_seen
        if n_a + n_b <= cap:
            take_a, take_b = self.rows_sampled, other.rows_sampled
        else:
            take_a = int(out.rng.hypergeometric(n_a, n_b, cap)) if n_a and n_b else min(n_a, cap)
            take_b = cap - take_a
        parts = []
        for state, take in ((self, take_a), (other, take_b)):
            probs, labels, feats = state._reservoir.view()
            idx = out.rng.choice(probs.shape[0], size=take, replace=False)
            parts.append((probs[idx], labels[idx], feats[:, idx].T))
        slots = np.arange(take_a + take_b, dtype=np.int64)
        out._reservoir.write(
            slots,
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]) if self.n_features else None,
        )
        return out

    # -- reading ----------------------------------------------------------------------------
    def reservoir(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Sampled rows: probs ``(n, C)``, labels (``-1`` = none), features ``(n, F)``."""
        probs, labels, feats = self._reservoir.view()
        return probs.copy(), labels.copy(), (feats.T.copy() if self.n_features else None)

    def metrics(
        self,
        *,
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        reference: ReferenceProfile | None = None,
        delayed_labels: ExactCounters | None = None,
    ) -> list[Point]:
        """The window's points; ``delayed_labels`` are label counters of rows labelled later
        (:meth:`ExactCounters.of_labels`), counted with the labels that came with the rows."""
        out = PointList()
        self._collect(out, class_names, feature_names, reference, delayed_labels)
        return out.items

    def metric_columns(
        self,
        *,
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        reference: ReferenceProfile | None = None,
        delayed_labels: ExactCounters | None = None,
    ) -> PointColumns:
        """:meth:`metrics` as the metric record's columns, built without one ``Point`` per
        value (equal to ``PointColumns.from_points(metrics(...))``; the worker's close)."""
        out = PointColumnsBuilder()
        self._collect(out, class_names, feature_names, reference, delayed_labels)
        return out.build()

    def _collect(
        self,
        out: PointSink,
        class_names: Sequence[str] | None,
        feature_names: Sequence[str] | None,
        reference: ReferenceProfile | None,
        delayed_labels: ExactCounters | None,
    ) -> None:
        sample = self.sample
        counters = self.counters
        if delayed_labels is not None:
            counters = counters.copy()
            counters.add_labels(delayed_labels)
        collect_from_parts(
            out,
            counters=counters,
            probs=sample.probabilities,
            labels=sample.labels,
            features_t=sample.features_t,
            threshold=self.threshold,
            categorical=self.categorical_features,
            class_names=class_names,
            feature_names=feature_names,
            reference=reference,
        )

    # -- serialisation ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        meta, arrays = self.counters.to_parts("c_")
        probs, labels, feats = self._reservoir.view()
        meta.update(
            n_classes=self.n_classes,
            max_buffer_size=self.max_buffer_size,
            n_features=self.n_features,
            categorical=list(self.categorical_features),
            threshold=self.threshold,
            rng=_rng_state(self.rng),
        )
        arrays.update(probs=probs, labels=labels, features=feats)
        return codec.pack(_STATE_MAGIC, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowState:
        meta, arrays = codec.unpack(_STATE_MAGIC, data)
        state = cls(
            meta["n_classes"],
            meta["max_buffer_size"],
            meta["n_features"],
            meta["categorical"],
            meta["threshold"],
        )
        state.rng = _rng_from_state(meta["rng"])
        state.counters = ExactCounters.from_parts(
            state.n_classes, state.n_features, meta, arrays, "c_"
        )
        n = arrays["labels"].shape[0]
        state._reservoir.write(
            np.arange(n, dtype=np.int64),
            arrays["probs"],
            arrays["labels"],
            arrays["features"].T if state.n_features else None,
        )
        return state


def warm_up() -> float:
    """Run a tiny window through update and close, so that the compiled loops of
    :mod:`mlwatcher.metrics.kernels` are compiled (or loaded from numba's cache) for every
    type the engine passes them, before a worker's first batch. Returns the seconds spent."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):  # float32-valued features take a narrower copy
        states = [WindowState(3, 100, 2, seed=0) for _ in range(2)]
        for state in states:
            for _ in range(3):
                features = rng.random((50, 2)).astype(dtype).astype(np.float64)
                state.update(rng.dirichlet(np.ones(3), 50), rng.integers(-1, 3, 50), features)
        states[0].metric_columns()
        states[0].metric_columns(reference=ReferenceProfile.from_window(states[1]))
    # Windows above DRIFT_SAMPLE_SIZE rows find their quartiles through the bracket read
    window = rng.random((2, columns.DRIFT_SAMPLE_SIZE + 1))
    profile = ReferenceProfile.from_data(rng.random((300, 2)))
    columns.summarise(window, profile.numeric_rows([0, 1]), threads=1)
    # KS p-values take the compiled series only for samples above 140 values
    drift.ks_pvalues(np.array([0.05]), np.array([1000.0]), np.array([1000.0]))
    return time.perf_counter() - start
