"""Delayed labels: labels joined per second, bytes per pending row, revision records per second.

    python -m benchmarks.bench_labels

1. **Join, in the engine** (no Kafka): one agent, 10 classes, 200 prediction batches of 1000
   rows with ids, then 20 label batches of 10k labels for random pending rows (in shuffled
   order, so every label batch touches every prediction batch and many windows). Timed:
   ``WindowManager.on_message`` of the label batches: decode, lookup, the label counters per
   window, and the encoded state entries. Baseline in the same run: a per-row Python join (a
   dict from id to row, one lookup and one confusion-matrix increment per label).
2. **Join, in one worker** (real broker, ``mlwatcher worker``): the same messages produced to
   the predictions topic; labels per second from the first label batch's arrival until
   ``mlwatcher_worker_labels_total{outcome="joined"}`` counts all of them.
3. **Pending bytes per row**: memory of the pending rows and changelog bytes of their entries,
   per row.
4. **Revisions per second**: 1000 closed windows with new labels revised at once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import requests
from threadpoolctl import threadpool_limits

from benchmarks._common import local_kafka, print_table, produce_all, wait_for
from mlwatcher.brokers import free_port
from mlwatcher.kafka_admin import create_topics
from mlwatcher.metrics.counters import ExactCounters
from mlwatcher.schemas import LabelBatch, MetricRecord, PredictionBatch
from mlwatcher.stream_app.actions import PutState
from mlwatcher.stream_app.labels import AgentLabels, ClosedWindow, LabelWindow
from mlwatcher.stream_app.observability import parse_prometheus
from mlwatcher.stream_app.settings import WindowPolicy
from mlwatcher.stream_app.state_codec import PENDING, parse_key
from mlwatcher.stream_app.windows import WindowManager

CLASSES = 10
PRED_BATCHES, PRED_ROWS = 200, 1_000
LABEL_BATCHES, LABEL_ROWS = 20, 10_000
WINDOW_MS = 60_000
T0 = 1_900_000_000_000 - 1_900_000_000_000 % WINDOW_MS
POLICY = WindowPolicy(grace_ms=1_000, empty_window_limit=0, max_pending_labels=1_000_000)
TARGET_LABELS_PER_S = 500_000


def _messages(agent_id: str = "agent") -> tuple[list[PredictionBatch], list[LabelBatch]]:
    rng = np.random.default_rng(0)
    predictions = []
    for i in range(PRED_BATCHES):
        probs = rng.dirichlet(np.ones(CLASSES), size=PRED_ROWS).astype(np.float32)
        predictions.append(
            PredictionBatch(
                agent_id=agent_id,
                batch_id=uuid.UUID(int=i + 1).hex,
                event_time_ms=T0 + i * 1_000,  # 60 batches a window: 4 windows, 3 closed
                window_ms=WINDOW_MS,
                max_buffer_size=500,
                probabilities=probs,
                prediction_ids=rng.integers(0, 2**64, PRED_ROWS, dtype=np.uint64),
            )
        )
    ids = np.concatenate([b.prediction_ids for b in predictions])  # type: ignore[misc]
    chosen = rng.permutation(ids.size)[: LABEL_BATCHES * LABEL_ROWS]
    labels = [
        LabelBatch(
            agent_id=agent_id,
            batch_id=uuid.UUID(int=10_000 + k).hex,
            sent_time_ms=T0 + PRED_BATCHES * 1_000,
            prediction_ids=ids[part],
            labels=rng.integers(0, CLASSES, part.size).astype(np.int32),
            n_classes=CLASSES,
        )
        for k, part in enumerate(np.array_split(chosen, LABEL_BATCHES))
    ]
    return predictions, labels


def _engine(predictions: list[PredictionBatch], labels: list[LabelBatch]) -> dict[str, float]:
    threadpool_limits(limits=1, user_api="blas")  # as in the worker (stream_app/wiring.py)
    manager = WindowManager(0, POLICY)
    pending_entry_bytes = 0
    for offset, batch in enumerate(predictions):
        for action in manager.on_message(batch.encode(), offset):
            if isinstance(action, PutState) and parse_key(action.key)[0] == PENDING:
                pending_entry_bytes += len(action.value)
    agent_labels = manager.agents["agent"].labels
    assert agent_labels is not None
    rows = agent_labels.pending.live_rows
    memory_bytes = agent_labels.pending.nbytes
    encoded = [b.encode() for b in labels]
    began = time.perf_counter()
    for k, value in enumerate(encoded):
        manager.on_message(value, len(predictions) + k)
    seconds = time.perf_counter() - began
    joined = sum(b.n_rows for b in labels)
    return {
        "labels_per_s": joined / seconds,
        "pending_bytes_per_row_memory": memory_bytes / rows,
        "pending_bytes_per_row_changelog": pending_entry_bytes / rows,
    }


def _python_join(predictions: list[PredictionBatch], labels: list[LabelBatch]) -> float:
    """Baseline: the obvious per-row join, labels per second."""
    index: dict[int, tuple[int, int]] = {}
    for b, batch in enumerate(predictions):
        for row, key in enumerate(batch.prediction_ids.tolist()):  # type: ignore[union-attr]
            index[key] = (b, row)
    predicted = [batch.probabilities.argmax(axis=1).tolist() for batch in predictions]
    confusion = [[0] * CLASSES for _ in range(CLASSES)]
    began = time.perf_counter()
    for batch in labels:
        for key, label in zip(batch.prediction_ids.tolist(), batch.labels.tolist(), strict=True):
            found = index.get(key)
            if found is not None:
                confusion[label][predicted[found[0]][found[1]]] += 1
    return sum(b.n_rows for b in labels) / (time.perf_counter() - began)


def _revisions(windows: int = 1_000) -> float:
    labels = AgentLabels(0, "agent")
    rng = np.random.default_rng(1)
    for w in range(windows):
        probs = rng.dirichlet(np.ones(CLASSES), size=50)
        counters = ExactCounters.of_labels(
            probs, probs.argmax(axis=1), rng.integers(0, CLASSES, 50)
        )
        closed = ClosedWindow(WINDOW_MS, 1000, 500, 10, "", (), ExactCounters(CLASSES, 0))
        labels.windows[w * WINDOW_MS] = LabelWindow(w * WINDOW_MS, counters, 1, closed)
        labels.dirty.add(w * WINDOW_MS)
    began = time.perf_counter()
    actions = labels.revise(10**15, 0)
    seconds = time.perf_counter() - began
    records = [a for a in actions if hasattr(a, "record")]
    assert len(records) == windows
    encode_began = time.perf_counter()
    for action in records:
        record: MetricRecord = action.record  # type: ignore[union-attr]
        record.encode()
    return windows / (seconds + time.perf_counter() - encode_began)


def _worker(predictions: list[PredictionBatch], labels: list[LabelBatch]) -> float:
    topics = {name: f"bench-labels-{name}-{uuid.uuid4().hex[:6]}" for name in ("p", "m", "d")}
    port = free_port()
    with local_kafka() as bootstrap, tempfile.TemporaryDirectory() as workdir:
        create_topics(bootstrap, dict.fromkeys(topics.values(), 1))
        worker = subprocess.Popen(
            [sys.executable, "-m", "mlwatcher", "worker", "--bootstrap-servers", bootstrap,
             "--predictions-topic", topics["p"], "--metrics-topic", topics["m"],
             "--dead-letter-topic", topics["d"], "--app-id", f"bench-labels-{port}",
             "--partitions", "1", "--web-port", str(port), "--grace-ms", "1000",
             "--empty-window-limit", "0", "--max-pending-labels", "1000000"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:

            def metrics() -> dict[str, float]:
                try:
                    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except requests.RequestException:
                    return {}
                return parse_prometheus(text)

            wait_for(lambda: metrics(), 120, "the worker's /metrics")
            produce_all(bootstrap, topics["p"], [(b"agent", b.encode()) for b in predictions])
            rows = PRED_BATCHES * PRED_ROWS
            wait_for(lambda: metrics().get("mlwatcher_worker_rows_total", 0) >= rows, 180,
                     "the predictions")  # fmt: skip
            total = sum(b.n_rows for b in labels)
            began = time.perf_counter()
            produce_all(bootstrap, topics["p"], [(b"agent", b.encode()) for b in labels])
            joined = 'mlwatcher_worker_labels_total{outcome="joined"}'
            wait_for(lambda: metrics().get(joined, 0) >= total, 180, "the labels", step=0.02)
            return total / (time.perf_counter() - began)
        finally:
            worker.terminate()
            worker.wait(30)


def run() -> dict[str, float]:
    predictions, labels = _messages()
    engine = _engine(predictions, labels)
    baseline = _python_join(predictions, labels)
    figures = {
        "labels_joined_per_s_engine": engine["labels_per_s"],
        "labels_joined_per_s_python_loop_baseline": baseline,
        "engine_speedup_vs_python_loop": engine["labels_per_s"] / baseline,
        "labels_joined_per_s_one_worker": _worker(predictions, labels),
        "target_labels_joined_per_s": TARGET_LABELS_PER_S,
        "pending_bytes_per_row_memory_10_classes": engine["pending_bytes_per_row_memory"],
        "pending_bytes_per_row_changelog_10_classes": engine["pending_bytes_per_row_changelog"],
        "revision_records_per_s": _revisions(),
    }
    print_table(
        "Delayed labels (10 classes; 200k pending rows, 200k labels in batches of 10k)",
        [(k, f"{v:,.1f}") for k, v in figures.items()],
        ("figure", "value"),
    )
    return figures


if __name__ == "__main__":
    run()
