"""The demo's traffic: three agents classifying scikit-learn's bundled 8×8 digits.

Like the 2019 example (three MNIST agents on one server), but Kafka-free and deterministic:

- ``digits_ok``: a well-trained model on normal inputs, the whole time.
- ``digits_wrong_inputs``: the same model, but for a stretch in the middle of the run the
  pixels arrive inverted (``16 - x``), as if an upstream pipeline flipped the colours.
- ``digits_wrong_model``: for the same stretch, a model trained on ~95% odd digits replaces
  the good one (a bad deployment); inputs stay normal, predictions and accuracy collapse.

As in production, the true digits come later than the predictions: each row has an id, and
its label is sent 1–3 windows after the prediction (``LABEL_DELAYS``, at the start of a
later window, as a review job would), or never for ``LABEL_NEVER_SHARE`` of the rows.

Event times are simulated: each agent's batches are scheduled on a timeline measured in
windows, so a short run covers many windows. The caller decides how the simulated clock maps
onto the wall clock (see :mod:`mlwatcher.demo.orchestrator`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

AGENT_OK = "digits_ok"
AGENT_WRONG_INPUTS = "digits_wrong_inputs"
AGENT_WRONG_MODEL = "digits_wrong_model"
AGENTS: tuple[str, ...] = (AGENT_OK, AGENT_WRONG_INPUTS, AGENT_WRONG_MODEL)

PHASE_NORMAL = "normal"
PHASE_INVERTED = "inverted_inputs"
PHASE_BAD_MODEL = "bad_model"

#: a row's label is sent at the start of window (its window + 1 + one of these)
LABEL_DELAYS = (1, 2)
LABEL_NEVER_SHARE = 0.15
NEVER = -1

PIXEL_MAX = 16.0  # load_digits pixels are integers in [0, 16]
ODD_DIGITS = (1, 3, 5, 7, 9)


@dataclass(frozen=True)
class DigitsModels:
    """The two classifiers and the held-out rows the traffic is drawn from."""

    good: LogisticRegression
    bad: LogisticRegression
    traffic_inputs: np.ndarray  # (n, 64) float64 pixels in [0, 16], never seen in training
    traffic_labels: np.ndarray  # (n,) int64 digits
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    bad_model_odd_share: float  # share of odd digits in the bad model's training set

    @property
    def reference_inputs(self) -> np.ndarray:
        """The drift baseline's rows: held-out data, like a validation set in production.

        Not the training rows: a model is over-confident on its own training data, so its
        pred1 distribution there would differ from any fresh traffic and flag drift forever.
        """
        return self.traffic_inputs

    @property
    def reference_labels(self) -> np.ndarray:
        return self.traffic_labels

    def predict_proba(self, model: LogisticRegression, pixels: np.ndarray) -> np.ndarray:
        # The models are fitted on pixels scaled to [0, 1]; scaling here keeps the features
        # we publish in their natural 0..16 unit, as a user of the dataset knows them.
        return model.predict_proba(pixels / PIXEL_MAX)


def train_models(seed: int = 0, *, odd_share: float = 0.95) -> DigitsModels:
    """Train the good and the odd-digit-biased models on ``load_digits`` (well under a second).

    Args:
        seed: shuffles the train/traffic split and picks the bad model's few even digits.
        odd_share: share of odd digits in the bad model's training set, in (0.5, 1).
    """
    if not 0.5 < odd_share < 1.0:
        raise ValueError(f"odd_share: must be in (0.5, 1), got {odd_share!r}")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    inputs = digits.data[order].astype(np.float64)
    labels = digits.target[order].astype(np.int64)
    n_train = int(0.6 * len(labels))
    train_x, train_y = inputs[:n_train], labels[:n_train]

    good = LogisticRegression(max_iter=1000).fit(train_x / PIXEL_MAX, train_y)

    odd_rows = np.flatnonzero(np.isin(train_y, ODD_DIGITS))
    even_rows = np.flatnonzero(~np.isin(train_y, ODD_DIGITS))
    n_even = max(1, round(len(odd_rows) * (1 - odd_share) / odd_share))
    chosen_even = rng.choice(even_rows, size=min(n_even, len(even_rows)), replace=False)
    biased = np.concatenate([odd_rows, chosen_even])
    # Strong regularisation lets the class priors dominate: the bad model essentially never
    # predicts an even digit, the failure the 2019 example showed.
    bad = LogisticRegression(max_iter=1000, C=0.1).fit(train_x[biased] / PIXEL_MAX, train_y[biased])
    return DigitsModels(
        good=good,
        bad=bad,
        traffic_inputs=inputs[n_train:],
        traffic_labels=labels[n_train:],
        feature_names=tuple(digits.feature_names),
        class_names=tuple(str(name) for name in digits.target_names),
        bad_model_odd_share=len(odd_rows) / len(biased),
    )


@dataclass(frozen=True)
class Timeline:
    """When the simulated traffic happens, in windows of ``window_seconds``.

    The anomaly (inverted inputs, bad model) covers windows
    ``[anomaly_start_window, anomaly_end_window)`` exactly, so every window is either fully
    normal or fully anomalous.
    """

    start_time: float  # epoch seconds of the first window's start; a multiple of the window
    window_seconds: float
    n_windows: int
    anomaly_start_window: int
    anomaly_end_window: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(f"window_seconds: must be > 0, got {self.window_seconds!r}")
        if self.n_windows < 1:
            raise ValueError(f"n_windows: must be >= 1, got {self.n_windows!r}")
        if not 0 <= self.anomaly_start_window <= self.anomaly_end_window <= self.n_windows:
            raise ValueError(
                "anomaly windows: expected 0 <= anomaly_start_window <= anomaly_end_window "
                f"<= n_windows, got {self.anomaly_start_window}, {self.anomaly_end_window}, "
                f"{self.n_windows}"
            )

    @classmethod
    def centred(
        cls,
        start_time: float,
        window_seconds: float,
        n_windows: int,
        anomaly_fraction: tuple[float, float] = (0.4, 0.7),
    ) -> Timeline:
        """A timeline whose anomaly spans the given fraction of the run, start aligned to the
        epoch grid of the window (as the stream app aligns its windows)."""
        window_ms = round(window_seconds * 1000)
        aligned_ms = math.ceil(start_time * 1000 / window_ms) * window_ms
        first, last = anomaly_fraction
        return cls(
            start_time=aligned_ms / 1000,
            window_seconds=window_seconds,
            n_windows=n_windows,
            anomaly_start_window=round(n_windows * first),
            anomaly_end_window=round(n_windows * last),
        )

    @property
    def end_time(self) -> float:
        return self.start_time + self.n_windows * self.window_seconds

    def window_index(self, event_time: float) -> int:
        return math.floor((event_time - self.start_time) / self.window_seconds)

    def window_start(self, index: int) -> float:
        return self.start_time + index * self.window_seconds

    def is_anomalous(self, event_time: float) -> bool:
        return self.anomaly_start_window <= self.window_index(event_time) < self.anomaly_end_window


@dataclass(frozen=True)
class DemoBatch:
    """One ``collect_data`` call of one agent, at a simulated event time."""

    agent_id: str
    event_time: float  # epoch seconds (simulated)
    phase: str
    probabilities: np.ndarray  # (rows, 10)
    features: np.ndarray  # (rows, 64) pixels
    labels: np.ndarray  # (rows,) true digits
    prediction_ids: tuple[str, ...] = ()
    #: per row, the index of the window at whose start its label is sent; NEVER: not sent
    label_window: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class TrafficSettings:
    """Shape of each agent's traffic; the defaults resemble the 2019 example."""

    min_batch_rows: int = 1
    max_batch_rows: int = 20
    batches_per_window: float = 20.0  # mean; arrival gaps are uniform in [0.5, 1.5] × mean gap
    agents: tuple[str, ...] = field(default=AGENTS)

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch_rows <= self.max_batch_rows:
            raise ValueError(
                "batch rows: expected 1 <= min_batch_rows <= max_batch_rows, got "
                f"{self.min_batch_rows}, {self.max_batch_rows}"
            )
        if not self.batches_per_window > 0:
            raise ValueError(f"batches_per_window: must be > 0, got {self.batches_per_window!r}")
        unknown = set(self.agents) - set(AGENTS)
        if unknown:
            raise ValueError(f"agents: unknown {sorted(unknown)}, expected some of {AGENTS}")


def generate_traffic(
    models: DigitsModels,
    timeline: Timeline,
    seed: int = 0,
    settings: TrafficSettings | None = None,
) -> Iterator[DemoBatch]:
    """Every agent's batches over the timeline, merged in event-time order.

    Deterministic for a given seed: each agent draws from its own generator, so adding or
    removing an agent does not change the others' traffic.
    """
    settings = settings or TrafficSettings()
    streams = [
        _agent_stream(
            agent,
            models,
            timeline,
            settings,
            np.random.default_rng([seed, number]),
            np.random.default_rng([seed, number, 1]),  # label delays: the traffic stays as is
        )
        for number, agent in enumerate(AGENTS)
        if agent in settings.agents
    ]
    yield from heapq.merge(*streams, key=lambda batch: batch.event_time)


def _agent_stream(
    agent_id: str,
    models: DigitsModels,
    timeline: Timeline,
    settings: TrafficSettings,
    rng: np.random.Generator,
    label_rng: np.random.Generator,
) -> Iterator[DemoBatch]:
    mean_gap = timeline.window_seconds / settings.batches_per_window
    event_time = timeline.start_time + rng.uniform(0, mean_gap)
    sent = 0
    while event_time < timeline.end_time:
        n_rows = int(rng.integers(settings.min_batch_rows, settings.max_batch_rows + 1))
        rows = rng.integers(0, len(models.traffic_labels), size=n_rows)
        pixels = models.traffic_inputs[rows]
        labels = models.traffic_labels[rows]
        phase, model = PHASE_NORMAL, models.good
        if timeline.is_anomalous(event_time):
            if agent_id == AGENT_WRONG_INPUTS:
                phase, pixels = PHASE_INVERTED, PIXEL_MAX - pixels
            elif agent_id == AGENT_WRONG_MODEL:
                phase, model = PHASE_BAD_MODEL, models.bad
        yield DemoBatch(
            agent_id=agent_id,
            event_time=event_time,
            phase=phase,
            probabilities=models.predict_proba(model, pixels),
            features=pixels,
            labels=labels,
            prediction_ids=tuple(f"{agent_id}-{sent + i}" for i in range(n_rows)),
            label_window=np.where(
                label_rng.random(n_rows) < LABEL_NEVER_SHARE,
                NEVER,
                timeline.window_index(event_time) + 1 + label_rng.choice(LABEL_DELAYS, n_rows),
            ),
        )
        sent += n_rows
        event_time += mean_gap * rng.uniform(0.5, 1.5)
