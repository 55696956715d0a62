"""MonitoringAgent: the helper a model process calls to publish its predictions.

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
from mlwatcher.schemas import PredictionBatch
from mlwatcher.validation import (
    DEFAULT_SUM_TOLERANCE,
    Features,
    InvalidBatchError,
    check_batch,
    check_categorical_values,
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


class MonitoringAgent:
    """Publish a classifier's predictions (and optionally inputs and labels) to Kafka.

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
    ) -> None:
        """Validate one batch and queue it for Kafka; never blocks on or raises for the network.

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
        for start, stop in self._row_chunks(probabilities, features):
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
            )
            self._enqueue(batch.encode(), stop - start)

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

    def _row_chunks(
        self, probabilities: np.ndarray, features: np.ndarray | None
    ) -> list[tuple[int, int]]:
        """Split so each message stays under the broker's size limit."""
        n_rows = probabilities.shape[0]
        row_bytes = probabilities.shape[1] * 4 + 4
        if features is not None:
            row_bytes += features.shape[1] * features.itemsize
        budget = self.max_message_bytes - _ENVELOPE_BYTES - 64 * len(self.feature_names or [])
        rows_per_message = max(1, budget // row_bytes)
        return [(s, min(s + rows_per_message, n_rows)) for s in range(0, n_rows, rows_per_message)]

    def _enqueue(self, payload: bytes, n_rows: int) -> None:
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
                self._count("rows_dropped", n_rows)
                self._queue_full.error(
                    f"{len(self._producer)} messages queued: dropped a batch of {n_rows} rows"
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
