"""MonitoringAgent: the helper a model process calls to publish its predictions (and, with
``collect_labels``, the true labels that arrive later).

It keeps the 2019 agent's constructor and ``collect_data`` signature, but instead of buffering
in-process it validates each batch, encodes it (Avro single-object) and hands it to
confluent-kafka's local queue. The model's thread never waits on the network: delivery happens
in librdkafka's threads, and a small daemon thread serves the delivery callbacks.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from mlwatcher.outage_log import OutageLog, client_logging
from mlwatcher.prediction_ids import hash_prediction_ids
from mlwatcher.schemas import LabelBatch, PredictionBatch
from mlwatcher.validation import (
    DEFAULT_SUM_TOLERANCE,
    NO_LABEL,
    Features,
    InvalidBatchError,
    check_batch,
    check_categorical_values,
    check_labels,
    check_threshold,
)

DEFAULT_TOPIC = "mlwatcher.predictions"

#: librdkafka defaults we override: durable (idempotent, acks=all), compressed, and batched for
#: a few milliseconds; 5 minutes to deliver before a batch counts as failed (covers a broker
#: restart or a slow start).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,
    "message.timeout.ms": 300_000,
    "queue.buffering.max.kbytes": 262_144,
}

#: collect_data's argument names, as the contract's messages name them
_ARGUMENTS = ("predict_proba_matrix", "input_matrix", "label_matrix")

_ENVELOPE_BYTES = 4096  # Avro header, names and strings around the matrices, generously
_ID_BYTES = 8  # one uint64 prediction-id hash per row
_LABEL_BYTES = 4  # one int32 label per row


class MonitoringAgent:
    """Publish a classifier's predictions (and optionally inputs and labels) to Kafka, and
    with ``collect_labels`` the labels of earlier predictions (named by ``prediction_ids``).

    Args:
        frequency: window length in minutes (floats allowed, e.g. 0.1 = 6 s).
        max_buffer_size: rows kept per window for distribution statistics (reservoir size).
        n_classes: number of columns of ``predict_proba`` (>= 2).
        agent_id: names the monitored model; the Kafka key, so one agent's batches stay ordered.
        bootstrap_servers: Kafka bootstrap servers.
        kafka_config: any librdkafka producer option (SASL/SSL, ...), overriding our defaults.
        queue_full_policy: what ``collect_data`` does when the local queue is full (broker
            unreachable for long): ``"drop"`` (default) drops the batch and counts it, never
            blocking the model; ``"block"`` waits up to ``queue_full_timeout`` seconds first.
        log_interval: while Kafka is unreachable, one WARNING line per this many seconds says
            for how long (``stats()["kafka_errors"]`` counts every error).
    """

    def __init__(
        self,
        frequency: float = 5,
        max_buffer_size: int = 500,
        n_classes: int = 2,
        agent_id: str = "1",
        *,
        bootstrap_servers: str = "localhost:9092",
        topic: str = DEFAULT_TOPIC,
        kafka_config: Mapping[str, Any] | None = None,
        model_version: str = "",
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        categorical_features: Sequence[int | str] = (),
        threshold: float = 0.5,
        sum_tolerance: float = DEFAULT_SUM_TOLERANCE,
        max_message_bytes: int = 900_000,
        queue_full_policy: str = "drop",
        queue_full_timeout: float = 1.0,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(n_classes, int | np.integer) or n_classes < 2:
            raise ValueError(f"n_classes: must be an integer >= 2, got {n_classes!r}")
        if not (isinstance(frequency, int | float) and math.isfinite(frequency) and frequency > 0):
            raise ValueError(f"frequency: must be a positive number of minutes, got {frequency!r}")
        if not isinstance(max_buffer_size, int | np.integer) or max_buffer_size < 1:
            raise ValueError(f"max_buffer_size: must be an integer >= 1, got {max_buffer_size!r}")
        if not agent_id or not isinstance(agent_id, str):
            raise ValueError(f"agent_id: must be a non-empty string, got {agent_id!r}")
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(
                f"class_names: {len(class_names)} names given, expected n_classes={n_classes}"
            )
        if queue_full_policy not in ("drop", "block"):
            raise ValueError(f"queue_full_policy: 'drop' or 'block', got {queue_full_policy!r}")
        check_threshold(threshold)
        self.agent_id = agent_id
        self.n_classes = int(n_classes)
        self.frequency = float(frequency)
        self.window_ms = max(1, round(frequency * 60_000))
        self.max_buffer_size = int(max_buffer_size)
        self.topic = topic
        self.model_version = model_version
        self.class_names = list(class_names or [])
        self.feature_names = list(feature_names) if feature_names is not None else None
        self._categorical_spec = list(categorical_features)
        self.threshold = float(threshold)
        self.sum_tolerance = float(sum_tolerance)
        self.max_message_bytes = int(max_message_bytes)
        self.queue_full_policy = queue_full_policy
        self.queue_full_timeout = float(queue_full_timeout)
        self._clock = clock
        self._n_features: int | None = None
        self._log = logging.getLogger(f"mlwatcher.producer.{agent_id}")
        self._lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "batches_accepted",
                "rows_accepted",
                "batches_rejected",
                "messages_sent",
                "messages_delivered",
                "delivery_failures",
                "dropped_queue_full",
                "rows_dropped",
                "label_batches_accepted",
                "labels_accepted",
                "label_batches_rejected",
                "labels_dropped",
            ),
            0,
        )
        # librdkafka's errors are summarised by the outage log (one line per interval instead
        # of one per connection attempt); its other log lines go to Python logging.
        self._outage = OutageLog(
            f"agent {agent_id}: Kafka ({bootstrap_servers})", self._log, interval=log_interval
        )
        self._delivery_failures = OutageLog(
            f"agent {agent_id}: delivery of batches to Kafka",
            self._log,
            interval=log_interval,
            down="failing",
        )
        self._queue_full = OutageLog(
            f"agent {agent_id}: local Kafka queue", self._log, interval=log_interval, down="full"
        )
        config = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": bootstrap_servers,
            "logger": client_logging(f"{self._log.name}.librdkafka"),
            "error_cb": self._outage.error,
        }
        config.update(kafka_config or {})
        config.setdefault("message.max.bytes", max(1_000_000, self.max_message_bytes + 100_000))
        self._producer = Producer(config)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=_poll_forever,
            args=(
                weakref.ref(self),
                self._producer,
                self._closed,
                (self._outage, self._delivery_failures, self._queue_full),
            ),
            name=f"mlwatcher-poll-{agent_id}",
            daemon=True,
        )
        self._poller.start()
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- public API -------------------------------------------------------------------------

    def collect_data(
        self,
        predict_proba_matrix: Any,
        input_matrix: Any = None,
        label_matrix: Any = None,
        threshold: float | None = None,
        *,
        prediction_ids: Any = None,
    ) -> None:
        """Validate one batch and queue it for Kafka; never blocks on or raises for the network.

        ``prediction_ids`` (optional): one unique id per row, a str or an integer (``42`` and
        ``"42"`` are the same id), so that ``collect_labels`` can send the rows' true labels
        later. Each id travels as its 64-bit hash (:mod:`mlwatcher.prediction_ids`).

        Raises InvalidBatchError (a ValueError naming the argument) for bad input; nothing is
        sent then.
        """
        event_time_ms = int(self._clock() * 1000)
        try:
            batch_threshold = check_threshold(self.threshold if threshold is None else threshold)
            checked = check_batch(
                predict_proba_matrix,
                input_matrix,
                label_matrix,
                n_classes=self.n_classes,
                names=_ARGUMENTS,
                sum_tolerance=self.sum_tolerance,
            )
            feature_names, categorical = self._feature_layout(checked.features)
            id_hashes = None
            if prediction_ids is not None:
                id_hashes = self._id_hashes(prediction_ids, checked.probabilities.shape[0])
        except InvalidBatchError:
            self._count("batches_rejected")
            raise
        # The wire format: probabilities as float32 (7 digits are plenty, half the bytes),
        # labels as int32, features in their own float dtype.
        probabilities = np.ascontiguousarray(checked.probabilities, dtype=np.float32)
        labels = None if checked.labels is None else checked.labels.astype(np.int32)
        features = None if checked.features is None else checked.features.values
        self._count("batches_accepted")
        self._count("rows_accepted", probabilities.shape[0])
        for start, stop in self._row_chunks(probabilities, features, id_hashes is not None):
            batch = PredictionBatch(
                agent_id=self.agent_id,
                batch_id=uuid.uuid4().hex,
                event_time_ms=event_time_ms,
                window_ms=self.window_ms,
                max_buffer_size=self.max_buffer_size,
                probabilities=probabilities[start:stop],
                threshold=float(batch_threshold),
                model_version=self.model_version,
                class_names=self.class_names,
                labels=None if labels is None else labels[start:stop],
                features=None if features is None else features[start:stop],
                feature_names=feature_names,
                categorical_features=categorical,
                prediction_ids=None if id_hashes is None else id_hashes[start:stop],
            )
            self._enqueue(batch.encode(), stop - start)

    def collect_labels(self, prediction_ids: Any, label_matrix: Any) -> None:
        """Send the true labels of predictions made earlier with ``collect_data(...,
        prediction_ids=...)``; never blocks on or raises for the network.

        ``prediction_ids``: n unique ids (str or integers, as given to ``collect_data``);
        ``label_matrix``: their true classes in ``collect_data``'s label formats (an int vector,
        an ``(n, 1)`` int matrix or a one-hot ``(n, n_classes)`` matrix). Every row needs a
        label: ``-1`` or a missing value is refused (send a label once it is known).

        **Co-partitioning.** A label batch goes to the predictions topic (``topic``) with the
        same Kafka key as the agent's prediction batches, ``agent_id``. The same key lands on
        the same partition, so it is consumed by the worker that owns the agent's predictions
        and their windows; and within a partition, a message sent after another is read after
        it. Labels sent by this agent after ``collect_data`` returned are behind their
        predictions (the idempotent producer keeps the order through retries); labels sent by
        another process (a ``MonitoringAgent`` with the same ``agent_id``, topic and
        partitioner, or any producer using the same key and partitioner) are behind them once
        the predictions were delivered (``flush()`` on their side). The worker joins each label
        to the pending prediction row with the same id hash; the label counts in that row's
        window, however late it arrives.

        Raises InvalidBatchError (a ValueError naming the argument) for bad input; nothing is
        sent then, and ``stats()["label_batches_rejected"]`` counts it.
        """
        sent_time_ms = int(self._clock() * 1000)
        try:
            if prediction_ids is None:
                raise InvalidBatchError("prediction_ids", "is required, got None")
            id_hashes = hash_prediction_ids(prediction_ids)
            if id_hashes.size == 0:
                raise InvalidBatchError("prediction_ids", "is empty: send at least one label")
            labels = self._check_delayed_labels(label_matrix, id_hashes.size)
        except InvalidBatchError:
            self._count("label_batches_rejected")
            raise
        self._count("label_batches_accepted")
        self._count("labels_accepted", labels.size)
        for start, stop in self._chunks(labels.size, _ID_BYTES + _LABEL_BYTES):
            batch = LabelBatch(
                agent_id=self.agent_id,
                batch_id=uuid.uuid4().hex,
                sent_time_ms=sent_time_ms,
                prediction_ids=id_hashes[start:stop],
                labels=labels[start:stop],
                n_classes=self.n_classes,
            )
            self._enqueue(batch.encode(), stop - start, dropped="labels_dropped")

    def stats(self) -> dict[str, int]:
        """Counters since creation, plus the messages still waiting in the local queue."""
        with self._lock:
            snapshot = dict(self._stats)
        snapshot["queued"] = (
            snapshot["messages_sent"]
            - snapshot["messages_delivered"]
            - snapshot["delivery_failures"]
        )
        snapshot["kafka_errors"] = self._outage.errors
        return snapshot

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` seconds for queued batches; return how many are still queued."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self._closed.is_set():
            return
        remaining = self.flush(timeout)
        if remaining:
            self._log.warning("closing with %d batches not delivered", remaining)
        self._closed.set()
        self._poller.join(timeout=2.0)

    def __enter__(self) -> MonitoringAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _feature_layout(self, checked: Features | None) -> tuple[list[str], list[int]]:
        """Feature names and categorical indices; a feature count may not change between batches."""
        if checked is None:
            return [], []
        n_features = checked.values.shape[1]
        if self._n_features is None:
            names = checked.names or self.feature_names
            if names is not None and len(names) != n_features:
                raise InvalidBatchError(
                    "input_matrix", f"has {n_features} columns but {len(names)} feature names"
                )
            self._n_features = n_features
            self.feature_names = list(names) if names is not None else None
            self._categorical = sorted(
                set(checked.categorical) | set(self._resolve_categorical(n_features))
            )
        elif n_features != self._n_features:
            raise InvalidBatchError(
                "input_matrix",
                f"has {n_features} columns, earlier batches of agent {self.agent_id!r} had "
                f"{self._n_features}",
            )
        check_categorical_values(checked.values, self._categorical, argument="input_matrix")
        return list(self.feature_names or []), self._categorical

    def _resolve_categorical(self, n_features: int) -> list[int]:
        indices = []
        for spec in self._categorical_spec:
            if isinstance(spec, str):
                if not self.feature_names or spec not in self.feature_names:
                    raise InvalidBatchError(
                        "input_matrix", f"categorical feature {spec!r} is not a feature name"
                    )
                indices.append(self.feature_names.index(spec))
            elif 0 <= int(spec) < n_features:
                indices.append(int(spec))
            else:
                raise InvalidBatchError(
                    "input_matrix",
                    f"categorical feature index {spec} outside [0, {n_features - 1}]",
                )
        return indices

    def _id_hashes(self, prediction_ids: Any, n_rows: int) -> np.ndarray:
        hashes = hash_prediction_ids(prediction_ids)
        if hashes.size != n_rows:
            raise InvalidBatchError(
                "prediction_ids",
                f"expected {n_rows} ids (one per row of predict_proba_matrix), got {hashes.size}",
            )
        return hashes

    def _check_delayed_labels(self, label_matrix: Any, n_rows: int) -> np.ndarray:
        """collect_data's label rules, minus the "no label" row: as int32."""
        if label_matrix is None:
            raise InvalidBatchError("label_matrix", "is required, got None")
        missing = _first_missing_row(label_matrix)
        if missing is not None:
            raise InvalidBatchError(
                "label_matrix",
                f"row {missing} has no label (missing value): collect_labels sends known labels "
                f"only; leave out the rows whose label is not known yet",
            )
        try:
            labels = check_labels(label_matrix, n_rows, self.n_classes, argument="label_matrix")
        except InvalidBatchError as error:
            # The shared range message allows -1, which collect_labels refuses.
            problem = error.problem.replace(f" (or {NO_LABEL}: row without label)", "")
            raise InvalidBatchError("label_matrix", problem) from None
        unlabelled = np.flatnonzero(labels == NO_LABEL)
        if unlabelled.size:
            raise InvalidBatchError(
                "label_matrix",
                f"row {int(unlabelled[0])} is {NO_LABEL} (no label): collect_labels sends known "
                f"labels, in [0, {self.n_classes - 1}]; leave out the rows whose label is not "
                f"known yet",
            )
        return labels.astype(np.int32)

    def _row_chunks(
        self, probabilities: np.ndarray, features: np.ndarray | None, with_ids: bool = False
    ) -> list[tuple[int, int]]:
        """Split so each message stays under the broker's size limit."""
        row_bytes = probabilities.shape[1] * 4 + _LABEL_BYTES
        if features is not None:
            row_bytes += features.shape[1] * features.itemsize
        if with_ids:
            row_bytes += _ID_BYTES
        overhead = 64 * len(self.feature_names or [])
        return self._chunks(probabilities.shape[0], row_bytes, overhead)

    def _chunks(self, n_rows: int, row_bytes: int, overhead: int = 0) -> list[tuple[int, int]]:
        budget = self.max_message_bytes - _ENVELOPE_BYTES - overhead
        rows_per_message = max(1, budget // row_bytes)
        return [(s, min(s + rows_per_message, n_rows)) for s in range(0, n_rows, rows_per_message)]

    def _enqueue(self, payload: bytes, n_rows: int, dropped: str = "rows_dropped") -> None:
        deadline = time.monotonic() + self.queue_full_timeout
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=payload,
                    key=self.agent_id.encode(),
                    on_delivery=self._on_delivery,
                )
                self._count("messages_sent")
                return
            except BufferError:
                if self.queue_full_policy == "block" and time.monotonic() < deadline:
                    self._producer.poll(0.05)
                    continue
                self._count("dropped_queue_full")
                self._count(dropped, n_rows)
                what = "labels" if dropped == "labels_dropped" else "rows"
                self._queue_full.error(
                    f"{len(self._producer)} messages queued: dropped a batch of {n_rows} {what}"
                )
                return

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._count("messages_delivered")
            return
        self._count("delivery_failures")
        self._delivery_failures.error(error.str())

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount


def _first_missing_row(label_matrix: Any) -> int | None:
    """The first row holding a missing value (None, NaN, pandas NA), else None."""
    if hasattr(label_matrix, "to_numpy"):
        label_matrix = label_matrix.to_numpy()
    try:
        array = np.asarray(label_matrix)
    except (ValueError, TypeError):
        return None  # ragged: check_labels says so
    if array.ndim == 0 or array.dtype.kind not in "fO":
        return None
    rows = array.reshape(array.shape[0], -1)
    if array.dtype.kind == "f":
        missing = np.isnan(rows).any(axis=1)
    else:
        missing = np.array([any(map(_is_missing, row)) for row in rows.tolist()])
    return int(np.argmax(missing)) if missing.any() else None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except TypeError:  # pandas.NA: its truth value is ambiguous
        return True


def _poll_forever(
    agent_ref: weakref.ref[MonitoringAgent],
    producer: Producer,
    closed: threading.Event,
    outages: Sequence[OutageLog],
) -> None:
    """Serve delivery and error callbacks; stops when the agent is closed or garbage-collected."""
    while not closed.is_set() and agent_ref() is not None:
        producer.poll(0.2)
        for outage in outages:
            outage.tick()


def _flush_at_exit(agent_ref: weakref.ref[MonitoringAgent]) -> None:
    agent = agent_ref()
    if agent is not None and not agent._closed.is_set():
        agent.close(timeout=10.0)
