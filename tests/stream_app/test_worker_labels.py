"""Delayed labels end to end on the real broker: MonitoringAgent.collect_labels -> worker ->
metric records and label revisions, checked against scikit-learn on the joined rows; refused
labels on the dead-letter topic; kill -9 between a prediction and its label."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from mlwatcher.dead_letter import HEADER_REASON
from mlwatcher.producer.agent import MonitoringAgent
from mlwatcher.schemas import LabelBatch
from tests.helpers import wait_until
from tests.stream_app.conftest import TopicReader, WorkerProcess
from tests.stream_app.label_checks import assert_label_metrics

WINDOW_MS = 30_000
GRACE_MS = 6_000  # the default: 20% of 30 s
TTL_MS = 60_000
C = 3

# float32 probabilities sum to 1 within 1e-7; scikit-learn warns, the values are unaffected
pytestmark = pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")


def window_ahead() -> int:
    """A window far enough ahead that no worker clock closes it: event times decide."""
    ahead = int(time.time() * 1000) + 120_000
    return ahead - ahead % WINDOW_MS


class Model:
    """An agent whose clock the test sets, and what it sent."""

    def __init__(self, bootstrap: str, topic: str, agent_id: str, seed: int) -> None:
        self.now_ms = 0
        self.agent = MonitoringAgent(
            frequency=WINDOW_MS / 60_000,
            max_buffer_size=100,
            n_classes=C,
            agent_id=agent_id,
            bootstrap_servers=bootstrap,
            topic=topic,
            clock=lambda: self.now_ms / 1000,
        )
        self.rng = np.random.default_rng(seed)
        self.probs: dict[str, np.ndarray] = {}
        self.agent_id = agent_id

    def predict(self, at_ms: int, rows: int, in_call_labels: int = 0) -> list[str]:
        self.now_ms = at_ms
        ids = [f"{self.agent_id}-{uuid.uuid4().hex[:12]}" for _ in range(rows)]
        probs = self.rng.dirichlet(np.ones(C), size=rows)
        labels = np.full(rows, -1)
        labels[:in_call_labels] = self.rng.integers(0, C, in_call_labels)
        self.agent.collect_data(
            probs, label_matrix=labels if in_call_labels else None, prediction_ids=ids
        )
        for i, row in zip(ids, probs.astype(np.float32), strict=True):
            self.probs[i] = row
        self.in_call = {ids[k]: int(labels[k]) for k in range(in_call_labels)}
        return ids

    def label(self, at_ms: int, ids: list[str], labels: np.ndarray | None = None) -> np.ndarray:
        self.now_ms = at_ms
        labels = self.rng.integers(0, C, len(ids)) if labels is None else labels
        self.agent.collect_labels(ids, labels)
        return labels

    def close(self) -> None:
        self.agent.close()


def dead_letters(bootstrap: str, topic: str, count: int) -> list[tuple[str, LabelBatch | None]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[tuple[str, LabelBatch | None]] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            reason = dict(message.headers() or [])[HEADER_REASON].decode()
            try:
                found.append((reason, LabelBatch.decode(message.value())))
            except ValueError:
                found.append((reason, None))
    finally:
        consumer.close()
    return found


def test_labels_join_open_and_closed_windows_and_refusals_are_dead_lettered(
    unique_topics: Callable[..., dict[str, str]],
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
) -> None:
    topics = unique_topics({"predictions": 2, "metrics": 2, "dead": 1})
    worker = worker_factory(
        topics, f"labels-{uuid.uuid4().hex[:8]}",
        "--label-revision-interval", "1s", "--label-ttl", f"{TTL_MS}ms",
    )  # fmt: skip
    worker.wait_ready(90)
    model = Model(kafka_bootstrap, topics["predictions"], "labelled", seed=1)
    start = window_ahead()
    try:
        ids = model.predict(start + 1_000, 200, in_call_labels=40)
        in_call = np.array(list(model.in_call.values()))
        open_labels = model.label(start + 2_000, ids[40:100])  # window still open
        model.predict(start + WINDOW_MS + GRACE_MS, 5)  # closes the window
        late = model.label(start + WINDOW_MS + GRACE_MS + 2_000, ids[100:160])
        # refused: an unknown id, two ids labelled already, and (later) one past the ttl
        model.label(start + WINDOW_MS + GRACE_MS + 3_000, ["never-predicted", *ids[40:42]])
        model.predict(start + WINDOW_MS + TTL_MS + 1_000, 5)  # the first batch expires
        model.label(start + WINDOW_MS + TTL_MS + 2_000, ids[160:161])
        model.agent.flush(30)
    finally:
        model.close()

    reader = TopicReader(kafka_bootstrap, topics["metrics"], 2)
    try:
        reader.wait_for(
            lambda _: [r for r in reader.records("labelled") if r.window_start_ms == start][1:],
            90,
            "the window's record and its label revision",
        )
        reader.poll(2.0)
        records = [r for r in reader.records("labelled") if r.window_start_ms == start]
    finally:
        reader.close()
    first, revision = records[0], records[-1]
    assert (first.revision, revision.revision) == (0, 1)
    assert len({(r.revision, r.encode()) for r in records}) == 2  # re-sent only identically
    probs = np.stack([model.probs[i] for i in ids])
    assert_label_metrics(first, probs[:100], np.concatenate([in_call, open_labels]), C)
    assert_label_metrics(revision, probs[:160], np.concatenate([in_call, open_labels, late]), C)
    assert revision.rows_seen == first.rows_seen == 200
    assert not {p.what for p in revision.points} & {"rows_seen", "prediction_count"}

    refused = dead_letters(kafka_bootstrap, topics["dead"], 3)
    by_reason = {reason: batch for reason, batch in refused}
    assert set(by_reason) == {"label-unmatched", "label-duplicate", "label-expired"}
    assert by_reason["label-unmatched"].n_rows == 1  # type: ignore[union-attr]
    assert by_reason["label-duplicate"].n_rows == 2  # type: ignore[union-attr]
    assert by_reason["label-expired"].n_rows == 1  # type: ignore[union-attr]
    counts = worker.metrics()
    assert counts['mlwatcher_worker_labels_total{outcome="joined"}'] == 120
    assert counts['mlwatcher_worker_labels_total{outcome="label-duplicate"}'] == 2
    assert counts["mlwatcher_worker_label_revisions_total"] == 1


def test_kill_9_between_predictions_and_their_labels_loses_nothing(
    unique_topics: Callable[..., dict[str, str]],
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    partitions = 4
    topics = unique_topics({"predictions": partitions, "metrics": partitions, "dead": 1})
    app_id = f"labels-kill-{uuid.uuid4().hex[:8]}"
    first = worker_factory(topics, app_id, "--label-revision-interval", "1s")
    second = worker_factory(topics, app_id, "--label-revision-interval", "1s")
    first.wait_ready(90)
    second.wait_ready(90)

    def shared() -> bool:
        a, b = first.health(), second.health()
        return bool(a and b and a["assigned_partitions"] and b["assigned_partitions"])

    wait_until(shared, 60, "both workers to own partitions")
    models = [Model(kafka_bootstrap, topics["predictions"], f"agent-{i}", seed=i) for i in range(6)]
    start = window_ahead()
    sent: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}
    try:
        for model in models:
            ids = model.predict(start + 1_000, 120)
            model.agent.flush(30)
            sent[model.agent_id] = (ids, np.array([]), np.array([]))
        wait_until(
            lambda: (
                sum(w.metrics().get("mlwatcher_worker_rows_total", 0) for w in (first, second))
                >= 6 * 120
            ),
            60,
            "both workers to apply the predictions",
        )
        first.kill()  # the pending rows of its agents live only in the changelog now
        for model in models:
            ids = sent[model.agent_id][0]
            open_labels = model.label(start + 2_000, ids[:50])
            model.predict(start + WINDOW_MS + GRACE_MS, 3)  # closes the window
            late = model.label(start + WINDOW_MS + GRACE_MS + 2_000, ids[50:90])
            model.agent.flush(30)
            sent[model.agent_id] = (ids, open_labels, late)
    finally:
        for model in models:
            model.close()

    reader = TopicReader(kafka_bootstrap, topics["metrics"], partitions)

    def revised(_: object) -> bool:
        got = {(r.agent_id, r.revision) for r in reader.records() if r.window_start_ms == start}
        return all((m.agent_id, 1) in got for m in models)

    try:
        reader.wait_for(revised, 150, "every agent's window and its revision after the kill")
        reader.poll(1.0)
        records = [r for r in reader.records() if r.window_start_ms == start]
    finally:
        reader.close()
    for model in models:
        ids, open_labels, late = sent[model.agent_id]
        mine = {r.revision: r for r in records if r.agent_id == model.agent_id}
        assert set(mine) == {0, 1}
        probs = np.stack([model.probs[i] for i in ids])
        assert_label_metrics(mine[0], probs[:50], open_labels, C)
        assert_label_metrics(mine[1], probs[:90], np.concatenate([open_labels, late]), C)
        assert mine[0].rows_seen == 120
    # a record re-emitted after the takeover is byte-identical to the first emission
    for key in {(r.agent_id, r.revision) for r in records}:
        assert len({r.encode() for r in records if (r.agent_id, r.revision) == key}) == 1
