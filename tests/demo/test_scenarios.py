"""The demo's digits scenarios, without Kafka."""

from __future__ import annotations

import numpy as np
import pytest

from mlwatcher.demo.scenarios import (
    AGENT_OK,
    AGENT_WRONG_INPUTS,
    AGENT_WRONG_MODEL,
    AGENTS,
    LABEL_NEVER_SHARE,
    NEVER,
    ODD_DIGITS,
    PHASE_BAD_MODEL,
    PHASE_INVERTED,
    PHASE_NORMAL,
    DemoBatch,
    DigitsModels,
    Timeline,
    TrafficSettings,
    generate_traffic,
    train_models,
)


@pytest.fixture(scope="module")
def models() -> DigitsModels:
    return train_models(seed=3)


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return Timeline.centred(start_time=1_700_000_001.3, window_seconds=5.0, n_windows=20)


@pytest.fixture(scope="module")
def traffic(models: DigitsModels, timeline: Timeline) -> list[DemoBatch]:
    return list(generate_traffic(models, timeline, seed=11))


def _accuracy(batches: list[DemoBatch]) -> float:
    predicted = np.concatenate([b.probabilities.argmax(axis=1) for b in batches])
    truth = np.concatenate([b.labels for b in batches])
    return float(np.mean(predicted == truth))


def test_good_model_is_accurate_and_bad_model_ignores_even_digits(models: DigitsModels) -> None:
    x, y = models.traffic_inputs, models.traffic_labels
    good_pred = models.predict_proba(models.good, x).argmax(axis=1)
    bad_pred = models.predict_proba(models.bad, x).argmax(axis=1)
    assert np.mean(good_pred == y) > 0.9
    assert np.mean(bad_pred == y) < 0.6
    assert np.isin(bad_pred, ODD_DIGITS).mean() > 0.95
    assert models.bad_model_odd_share == pytest.approx(0.95, abs=0.01)
    assert models.feature_names[0] == "pixel_0_0" and len(models.feature_names) == 64
    assert models.class_names == tuple(str(d) for d in range(10))


def test_timeline_is_aligned_and_anomaly_is_in_the_middle(timeline: Timeline) -> None:
    assert (timeline.start_time * 1000) % 5000 == 0
    assert timeline.start_time >= 1_700_000_001.3
    assert (timeline.anomaly_start_window, timeline.anomaly_end_window) == (8, 14)
    assert not timeline.is_anomalous(timeline.window_start(7) + 4.99)
    assert timeline.is_anomalous(timeline.window_start(8))
    assert timeline.is_anomalous(timeline.window_start(13) + 4.99)
    assert not timeline.is_anomalous(timeline.window_start(14))


def test_traffic_is_ordered_sized_and_inside_the_timeline(
    traffic: list[DemoBatch], timeline: Timeline
) -> None:
    times = [b.event_time for b in traffic]
    assert times == sorted(times)
    assert timeline.start_time <= times[0] and times[-1] < timeline.end_time
    assert {b.agent_id for b in traffic} == set(AGENTS)
    for batch in traffic:
        assert 1 <= batch.n_rows <= 20
        assert batch.probabilities.shape == (batch.n_rows, 10)
        assert batch.features.shape == (batch.n_rows, 64)
        np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert batch.features.min() >= 0 and batch.features.max() <= 16
    # every agent has batches in every window (about 20 on average)
    for agent in AGENTS:
        windows = {timeline.window_index(b.event_time) for b in traffic if b.agent_id == agent}
        assert windows == set(range(timeline.n_windows))
    per_agent = sum(1 for b in traffic if b.agent_id == AGENT_OK) / timeline.n_windows
    assert 16 <= per_agent <= 24


def test_phases_follow_the_timeline(traffic: list[DemoBatch], timeline: Timeline) -> None:
    for batch in traffic:
        anomalous = timeline.is_anomalous(batch.event_time)
        expected = PHASE_NORMAL
        if anomalous and batch.agent_id == AGENT_WRONG_INPUTS:
            expected = PHASE_INVERTED
        elif anomalous and batch.agent_id == AGENT_WRONG_MODEL:
            expected = PHASE_BAD_MODEL
        assert batch.phase == expected, batch


def test_inverted_inputs_are_sixteen_minus_pixels_and_break_the_model(
    traffic: list[DemoBatch], models: DigitsModels
) -> None:
    inverted = [b for b in traffic if b.phase == PHASE_INVERTED]
    normal = [b for b in traffic if b.agent_id == AGENT_WRONG_INPUTS and b.phase == PHASE_NORMAL]
    assert inverted and normal
    # Inverted rows are 16 - x of real traffic rows: un-inverting must give a known row.
    known = {row.tobytes() for row in models.traffic_inputs}
    for batch in inverted[:20]:
        assert all((16.0 - row).tobytes() in known for row in batch.features)
    # Corner pixels are (almost) always 0 in digits, so inverted they are (almost) always 16.
    assert np.mean(np.concatenate([b.features[:, 0] for b in normal])) < 0.5
    assert np.mean(np.concatenate([b.features[:, 0] for b in inverted])) > 15.5
    assert _accuracy(normal) > 0.9 and _accuracy(inverted) < 0.3


def test_bad_model_stretch_drops_accuracy_and_keeps_inputs(traffic: list[DemoBatch]) -> None:
    bad = [b for b in traffic if b.phase == PHASE_BAD_MODEL]
    good = [b for b in traffic if b.agent_id == AGENT_WRONG_MODEL and b.phase == PHASE_NORMAL]
    assert _accuracy(good) > 0.9 and _accuracy(bad) < 0.6
    assert np.mean(np.concatenate([b.features[:, 0] for b in bad])) < 0.5
    ok = [b for b in traffic if b.agent_id == AGENT_OK]
    assert {b.phase for b in ok} == {PHASE_NORMAL} and _accuracy(ok) > 0.9


def test_same_seed_same_traffic_other_seed_other_traffic(
    models: DigitsModels, timeline: Timeline, traffic: list[DemoBatch]
) -> None:
    again = list(generate_traffic(train_models(seed=3), timeline, seed=11))
    assert len(again) == len(traffic)
    for first, second in zip(traffic, again, strict=True):
        assert first.event_time == second.event_time and first.agent_id == second.agent_id
        np.testing.assert_array_equal(first.features, second.features)
        np.testing.assert_array_equal(first.probabilities, second.probabilities)
    other = list(generate_traffic(models, timeline, seed=12))
    assert [b.event_time for b in other] != [b.event_time for b in traffic]


def test_agent_subset_keeps_each_agents_traffic(
    models: DigitsModels, timeline: Timeline, traffic: list[DemoBatch]
) -> None:
    only_ok = list(generate_traffic(models, timeline, 11, TrafficSettings(agents=(AGENT_OK,))))
    assert [b.event_time for b in only_ok] == [
        b.event_time for b in traffic if b.agent_id == AGENT_OK
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_batch_rows": 0}, "min_batch_rows"),
        ({"min_batch_rows": 5, "max_batch_rows": 4}, "max_batch_rows"),
        ({"batches_per_window": 0}, "batches_per_window"),
        ({"agents": ("nope",)}, "agents"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficSettings(**kwargs)


def test_bad_timeline_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        Timeline(0, 0, 3, 0, 1)
    with pytest.raises(ValueError, match="anomaly windows"):
        Timeline(0, 1, 3, 2, 5)
    with pytest.raises(ValueError, match="odd_share"):
        train_models(odd_share=0.3)
    assert AGENT_WRONG_MODEL in AGENTS and AGENT_WRONG_INPUTS in AGENTS


def test_labels_come_one_to_three_windows_late_or_never(
    traffic: list[DemoBatch], timeline: Timeline
) -> None:
    for agent in AGENTS:
        mine = [b for b in traffic if b.agent_id == agent]
        ids = [i for b in mine for i in b.prediction_ids]
        assert len(ids) == len(set(ids)) == sum(b.n_rows for b in mine)  # unique per agent
        plan = np.concatenate([b.label_window for b in mine])  # type: ignore[misc]
        assert abs(np.mean(plan == NEVER) - LABEL_NEVER_SHARE) < 0.05
        for batch in mine:
            sent = batch.label_window[batch.label_window != NEVER]  # type: ignore[index]
            delay = timeline.window_start(sent) - batch.event_time  # seconds
            assert (
                (delay > timeline.window_seconds) & (delay <= 3 * timeline.window_seconds)
            ).all()
