"""Drift baselines: a reference profile built from training data or from a closed window.

File format (``save``/``to_bytes``): an uncompressed NumPy ``.npz`` archive holding

* ``meta`` – UTF-8 JSON as a uint8 array: ``format`` ("mlwatcher-reference"), ``version``,
  ``n_features``, ``feature_names`` (list or null), ``categorical`` (feature indices),
  ``threshold``, ``n_classes`` (or null), ``stds`` (``{"feature_<j>" | "pred1": std}``);
* ``feature_<j>_sample`` / ``_edges`` / ``_proportions`` for each numeric feature ``j``
  (sorted reference sample, interior PSI bin edges, reference share per bin) and the same
  three arrays for ``pred1_``;
* ``feature_<j>_values`` / ``_counts`` for each categorical feature;
* ``pred_class_counts`` – reference count of each predicted class;
* ``calibration_rows`` / ``_confidence_sum`` / ``_correct`` (``(n_classes, 15)`` each) and
  ``meta.calibration_prior_rows`` when the profile was built with labels: the
  :class:`~mlwatcher.metrics.calibration.CalibrationMap` used by performance estimation,
  which is also the reference's reliability diagram.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mlwatcher.metrics.calibration import CalibrationMap
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.metrics.drift import NumericReference, ReferenceRows
from mlwatcher.metrics.inputs import (
    MetricInputError,
    as_features,
    as_probabilities,
    categorical_indices,
    normalise_labels,
    predicted_classes,
)
from mlwatcher.metrics.reservoir import Sample
from mlwatcher.metrics.stats import row_summaries


class ClosedWindow(Protocol):
    """What :meth:`ReferenceProfile.from_window` reads of a WindowState (no import of it:
    the state computes its metrics with this module's profiles)."""

    n_classes: int
    n_features: int
    categorical_features: tuple[int, ...]
    threshold: float
    counters: ExactCounters

    @property
    def sample(self) -> Sample: ...


FORMAT = "mlwatcher-reference"
FORMAT_VERSION = 1
# KS and Wasserstein compare against a sample of the reference; 2000 rows resolve CDF
# differences of ~0.03 while keeping the window-close cost independent of training-set size.
DEFAULT_MAX_SAMPLE = 2000


def _sample_indices(n: int, max_sample: int, rng: np.random.Generator) -> np.ndarray:
    if n <= max_sample:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_sample, replace=False))


@dataclass(slots=True)
class ReferenceProfile:
    """What the drift tests compare a window against."""

    n_features: int
    feature_names: list[str] | None = None
    categorical: tuple[int, ...] = ()
    threshold: float = 0.5
    n_classes: int | None = None
    numeric: dict[int, NumericReference] = field(default_factory=dict)
    categories: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pred1: NumericReference | None = None
    pred_class_counts: np.ndarray | None = None
    calibration: CalibrationMap | None = None
    # numeric_rows' stacked references, per tuple of feature indices.
    _numeric_rows: dict[tuple[int, ...], ReferenceRows] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def numeric_rows(self, features: Sequence[int]) -> ReferenceRows:
        """The numeric references of ``features`` stacked for the window close; kept, as a
        profile serves many closes (its references are not changed once it is built)."""
        key = tuple(features)
        rows = self._numeric_rows.get(key)
        if rows is None:
            rows = self._numeric_rows[key] = ReferenceRows.of([self.numeric.get(j) for j in key])
        return rows

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_data(
        cls,
        features: Any = None,
        predict_proba: Any = None,
        *,
        labels: Any = None,
        feature_names: Sequence[str] | None = None,
        categorical_features: Sequence[int | str] = (),
        threshold: float = 0.5,
        max_sample: int = DEFAULT_MAX_SAMPLE,
        seed: int = 0,
    ) -> ReferenceProfile:
        """Profile training data (features and/or predicted probabilities; DataFrame ok).

        With ``labels`` (one per row of ``predict_proba``, ``-1`` = unknown) the profile also
        holds a calibration map fitted on the labelled rows.
        """
        if features is None and predict_proba is None:
            raise MetricInputError("reference: give features, predict_proba or both")
        if labels is not None and predict_proba is None:
            raise MetricInputError("labels: calibrating needs predict_proba as well")
        rng = np.random.default_rng(seed)
        profile = cls(n_features=0, threshold=float(threshold))
        if predict_proba is not None:
            probs = as_probabilities(predict_proba)
            profile.n_classes = probs.shape[1]
            pred1 = row_summaries(probs)["pred1"]
            profile.pred1 = NumericReference.from_values(
                pred1, pred1[_sample_indices(pred1.size, max_sample, rng)]
            )
            profile.pred_class_counts = np.bincount(
                predicted_classes(probs, threshold), minlength=probs.shape[1]
            ).astype(np.int64)
            if labels is not None:
                label_vec = normalise_labels(labels, probs.shape[0], probs.shape[1])
                assert label_vec is not None
                profile.calibration = CalibrationMap.fit(probs, label_vec, threshold)
        if features is not None:
            n_rows = len(features)
            feats, names, frame_categorical = as_features(features, n_rows)
            names = list(feature_names) if feature_names is not None else names
            if names is not None and len(names) != feats.shape[1]:
                raise MetricInputError(
                    f"feature_names: expected {feats.shape[1]} names, got {len(names)}"
                )
            profile.n_features = feats.shape[1]
            profile.feature_names = names
            profile.categorical = tuple(
                sorted(
                    set(categorical_indices(categorical_features, names, feats.shape[1]))
                    | set(frame_categorical)
                )
            )
            sample = feats[_sample_indices(n_rows, max_sample, rng)]
            for j in range(feats.shape[1]):
                column = feats[:, j]
                if j in profile.categorical:
                    finite = column[np.isfinite(column)]
                    values, counts = np.unique(finite, return_counts=True)
                    profile.categories[j] = (values, counts.astype(np.int64))
                else:
                    ref = NumericReference.from_values(column, sample[:, j])
                    if ref is not None:
                        profile.numeric[j] = ref
        return profile

    @classmethod
    def from_window(
        cls, state: ClosedWindow, *, max_sample: int = DEFAULT_MAX_SAMPLE, seed: int = 0
    ) -> ReferenceProfile:
        """Profile a closed window: its reservoir for numeric series, exact counts otherwise."""
        sample = state.sample
        probs, feats_t = sample.probabilities, sample.features_t
        rng = np.random.default_rng(seed)
        idx = _sample_indices(probs.shape[0], max_sample, rng)
        profile = cls(
            n_features=state.n_features,
            categorical=state.categorical_features,
            threshold=state.threshold,
            n_classes=state.n_classes,
            pred_class_counts=state.counters.pred_counts.copy(),
        )
        if probs.shape[0]:
            pred1 = row_summaries(probs)["pred1"]
            profile.pred1 = NumericReference.from_values(pred1, pred1[idx])
        for j in range(state.n_features):
            if j in state.categorical_features:
                values, counts = state.counters.category_counts(j)
                profile.categories[j] = (values.copy(), counts.copy())
            else:
                ref = NumericReference.from_values(feats_t[j], feats_t[j, idx])
                if ref is not None:
                    profile.numeric[j] = ref
        return profile

    # -- storage ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        stds: dict[str, float] = {}
        numeric = {f"feature_{j}": ref for j, ref in self.numeric.items()}
        if self.pred1 is not None:
            numeric["pred1"] = self.pred1
        for key, ref in numeric.items():
            arrays[f"{key}_sample"] = ref.sample
            arrays[f"{key}_edges"] = ref.edges
            arrays[f"{key}_proportions"] = ref.proportions
            stds[key] = ref.std
        for j, (values, counts) in self.categories.items():
            arrays[f"feature_{j}_values"] = values
            arrays[f"feature_{j}_counts"] = counts
        if self.pred_class_counts is not None:
            arrays["pred_class_counts"] = self.pred_class_counts
        calibration_meta: dict[str, Any] = {}
        if self.calibration is not None:
            calibration_meta, calibration_arrays = self.calibration.to_parts()
            arrays.update(calibration_arrays)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "categorical": list(self.categorical),
            "threshold": self.threshold,
            "n_classes": self.n_classes,
            "stds": stds,
            **calibration_meta,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            arrays = {name: archive[name] for name in archive.files}
            meta = json.loads(arrays.pop("meta").tobytes())
        except Exception as exc:
            raise MetricInputError(f"reference: not a reference profile file ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise MetricInputError(
                f"reference: expected format {FORMAT} v{FORMAT_VERSION},"
                f" got {meta.get('format')} v{meta.get('version')}"
            )

        def numeric_ref(key: str) -> NumericReference:
            return NumericReference(
                arrays[f"{key}_sample"],
                float(meta["stds"][key]),
                arrays[f"{key}_edges"],
                arrays[f"{key}_proportions"],
            )

        profile = cls(
            n_features=int(meta["n_features"]),
            feature_names=meta["feature_names"],
            categorical=tuple(meta["categorical"]),
            threshold=float(meta["threshold"]),
            n_classes=meta["n_classes"],
            pred_class_counts=arrays.get("pred_class_counts"),
        )
        if "calibration_rows" in arrays:
            profile.calibration = CalibrationMap.from_parts(meta, arrays)
        for key in meta["stds"]:
            if key == "pred1":
                profile.pred1 = numeric_ref(key)
            else:
                profile.numeric[int(key.removeprefix("feature_"))] = numeric_ref(key)
        for j in profile.categorical:
            if f"feature_{j}_values" in arrays:
                profile.categories[j] = (
                    arrays[f"feature_{j}_values"],
                    arrays[f"feature_{j}_counts"],
                )
        return profile

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile atomically (temporary file, then rename)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        with open(path, "rb") as handle:
            return cls.from_bytes(handle.read())
