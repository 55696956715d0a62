"""``mlwatcher report`` on a Parquet data set generated offline from the demo scenarios."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, f1_score

from mlwatcher.cli import main
from mlwatcher.demo import offline
from mlwatcher.demo.scenarios import (
    AGENT_OK,
    AGENT_WRONG_INPUTS,
    AGENT_WRONG_MODEL,
    AGENTS,
    DemoBatch,
    Timeline,
    generate_traffic,
    train_models,
)
from mlwatcher.report import data
from mlwatcher.report.render import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Timeline, list[DemoBatch]]:
    models = train_models(seed=5)
    timeline = Timeline.centred(1_764_400_003, window_seconds=5.0, n_windows=12)
    traffic = list(generate_traffic(models, timeline, seed=5))
    windows = offline.window_metrics(traffic, timeline, models, offline.reference_profile(models))
    root = tmp_path_factory.mktemp("metrics")
    offline.write_metrics_dataset(windows, root)
    return root, timeline, traffic


@pytest.fixture(scope="module")
def frame(scenario: tuple[Path, Timeline, list[DemoBatch]]) -> pd.DataFrame:
    return data.load_metrics(scenario[0])


def _window_start(timeline: Timeline, index: int) -> pd.Timestamp:
    return pd.Timestamp(round(timeline.window_start(index) * 1000), unit="ms", tz="UTC")


def test_data_set_is_hive_partitioned_long_format(
    scenario: tuple[Path, Timeline, list[DemoBatch]], frame: pd.DataFrame
) -> None:
    root = scenario[0]
    assert sorted(p.name for p in root.iterdir()) == [f"agent_id={a}" for a in sorted(AGENTS)]
    assert all(p.name.startswith("date=") for p in (root / f"agent_id={AGENT_OK}").iterdir())
    assert data.agents(frame) == sorted(AGENTS)
    assert str(frame["window_start"].dtype) == "datetime64[ms, UTC]"
    # the confusion matrix points differ only in extra: none may be lost to de-duplication
    confusion = frame[(frame["what"] == "confusion_count") & (frame["agent_id"] == AGENT_OK)]
    assert len(confusion) == 12 * 10 * 10


def test_series_match_independent_computations(
    scenario: tuple[Path, Timeline, list[DemoBatch]], frame: pd.DataFrame
) -> None:
    _, timeline, traffic = scenario
    rows = frame[frame["agent_id"] == AGENT_WRONG_MODEL]
    index = timeline.anomaly_start_window  # a bad-model window
    batches = [
        b
        for b in traffic
        if b.agent_id == AGENT_WRONG_MODEL and timeline.window_index(b.event_time) == index
    ]
    truth = np.concatenate([b.labels for b in batches])
    predicted = np.concatenate([b.probabilities.argmax(axis=1) for b in batches])
    start = _window_start(timeline, index)

    scores = data.label_scores(rows)
    assert scores.loc[start, "accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert scores.loc[start, "macro_f1"] == pytest.approx(
        f1_score(truth, predicted, average="macro", labels=list(range(10)), zero_division=0)
    )
    assert data.rows_per_window(rows).loc[start] == len(truth)

    frequencies = data.class_frequencies(rows)
    assert list(frequencies.columns) == [str(d) for d in range(10)]
    np.testing.assert_allclose(frequencies.sum(axis=1), 1.0)
    expected = np.bincount(predicted, minlength=10) / len(predicted)
    np.testing.assert_allclose(frequencies.loc[start].to_numpy(), expected)

    pred1 = np.concatenate([b.probabilities.max(axis=1) for b in batches])
    band = data.quantile_band(rows, "max_prediction_proba")
    assert band.loc[start, "median"] == pytest.approx(np.median(pred1))
    assert band.loc[start, "q25"] == pytest.approx(np.percentile(pred1, 25))


def test_drift_table_lists_the_inversion_windows(
    scenario: tuple[Path, Timeline, list[DemoBatch]], frame: pd.DataFrame
) -> None:
    timeline = scenario[1]
    drifted = data.drifted_windows(frame)
    inverted = drifted[(drifted["agent_id"] == AGENT_WRONG_INPUTS) & drifted["dataset_drift"]]
    expected = [
        _window_start(timeline, i)
        for i in range(timeline.anomaly_start_window, timeline.anomaly_end_window)
    ]
    assert list(inverted["window_start"]) == expected
    assert (inverted["drift_share"] > 0.5).all()
    assert not drifted[drifted["agent_id"] != AGENT_WRONG_INPUTS]["dataset_drift"].any()
    heatmap = data.feature_drift(frame[frame["agent_id"] == AGENT_WRONG_INPUTS]).flags
    assert heatmap.shape == (64, 12)
    assert list(heatmap.index[:9]) == [f"pixel_0_{i}" for i in range(8)] + ["pixel_1_0"]


def test_report_writes_pngs_and_a_self_contained_page(
    scenario: tuple[Path, Timeline, list[DemoBatch]], tmp_path: Path
) -> None:
    report = build_report(scenario[0], tmp_path / "out")
    assert set(report.images) == {"overview", *AGENTS, *(f"{a} reliability" for a in AGENTS)}
    for path in report.images.values():
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 20_000, path
    page = report.html_path.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 7
    assert all(base64.b64decode(e).startswith(PNG_SIGNATURE) for e in embedded)
    assert 'src="http' not in page and "<script" not in page
    timeline = scenario[1]
    inverted = timeline.anomaly_end_window - timeline.anomaly_start_window
    assert page.count("<td>digits_wrong_inputs</td>") >= inverted
    assert (tmp_path / "out" / "drifted_windows.csv").is_file()


def test_cli_report(scenario: tuple[Path, Timeline, list[DemoBatch]], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(scenario[0]), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert (tmp_path / "agent_digits_ok.png").stat().st_size > 0


def test_cli_report_draws_the_references_reliability(
    scenario: tuple[Path, Timeline, list[DemoBatch]], tmp_path: Path
) -> None:
    offline.reference_profile(train_models(seed=5)).save(tmp_path / "ref.npz")
    args = ["report", str(scenario[0]), "--output", str(tmp_path / "out")]
    without = CliRunner().invoke(main, args)
    with_reference = CliRunner().invoke(
        main, [*args, "--reference", f"{AGENT_OK}={tmp_path / 'ref.npz'}"]
    )
    assert without.exit_code == 0 and with_reference.exit_code == 0, with_reference.output
    assert "reliability_digits_ok.png" in with_reference.output
    bad = CliRunner().invoke(main, [*args, "--reference", "no-equals-sign"])
    assert bad.exit_code != 0 and "AGENT=PATH" in bad.output
    missing = CliRunner().invoke(main, [*args, "--reference", f"a={tmp_path / 'none.npz'}"])
    assert missing.exit_code != 0 and "none.npz" in missing.output


def test_estimates_show_what_confidence_based_estimation_can_and_cannot_see(
    scenario: tuple[Path, Timeline, list[DemoBatch]], frame: pd.DataFrame
) -> None:
    """Inverted inputs: the model stays confident and always wrong, so the estimate stays
    high while the realised accuracy collapses (the drift panels catch it). The wrong model
    is unsure of itself: estimate and realisation both fall. Normal windows: they agree."""
    timeline = scenario[1]
    anomaly = [
        _window_start(timeline, i)
        for i in range(timeline.anomaly_start_window, timeline.anomaly_end_window)
    ]
    per_agent = {a: data.accuracy_estimates(frame[frame["agent_id"] == a]) for a in AGENTS}
    for table in per_agent.values():
        normal = table.drop(index=anomaly)
        assert (normal["estimated"] > 0.9).all() and (normal["realised"] > 0.9).all()
        assert ((normal["realised"] - normal["estimated"]).abs() < 0.06).all()
        assert (table["estimated_stderr"] > 0).all() and (table["realised_stderr"] >= 0).all()
    inverted = per_agent[AGENT_WRONG_INPUTS].loc[anomaly]
    assert (inverted["realised"] < 0.05).all() and (inverted["estimated"] > 0.7).all()
    wrong_model = per_agent[AGENT_WRONG_MODEL].loc[anomaly]
    assert (wrong_model["realised"] < 0.7).all() and (wrong_model["estimated"] < 0.8).all()


def test_reliability_of_the_latest_window_matches_a_direct_computation(
    scenario: tuple[Path, Timeline, list[DemoBatch]], frame: pd.DataFrame
) -> None:
    _, timeline, traffic = scenario
    window, table = data.reliability(frame[frame["agent_id"] == AGENT_OK])
    last = timeline.n_windows - 1
    assert window == _window_start(timeline, last)
    batches = [
        b for b in traffic if b.agent_id == AGENT_OK and timeline.window_index(b.event_time) == last
    ]
    probs = np.concatenate([b.probabilities for b in batches])
    correct = probs.argmax(axis=1) == np.concatenate([b.labels for b in batches])
    bins = np.minimum((probs.max(axis=1) * 15).astype(int), 14)
    np.testing.assert_array_equal(table["rows"], np.bincount(bins, minlength=15))
    for k in np.flatnonzero(np.bincount(bins, minlength=15)):
        assert table.loc[k, "accuracy"] == pytest.approx(correct[bins == k].mean())
        assert table.loc[k, "confidence"] == pytest.approx(probs.max(axis=1)[bins == k].mean())


def test_extra_as_json_text_and_windows_as_epoch_ms_are_read(tmp_path: Path) -> None:
    # Another writer's encoding of the same long format must give the same series.
    rows = pd.DataFrame(
        {
            "agent_id": ["a", "a", "a"],
            "window_start": [60_000, 60_000, 60_000],
            "window_end": [120_000, 120_000, 120_000],
            "what": ["f1", "f1", "overall_accuracy"],
            "class_name": [None, None, None],
            "feat_name": [None, None, None],
            "stat": [None, None, None],
            "target_type": ["gauge"] * 3,
            "value": [0.25, 0.75, 0.5],
            "extra": ['{"average": "macro"}', '{"average": "micro"}', ""],
        }
    )
    rows.to_parquet(tmp_path / "points.parquet")
    scores = data.label_scores(data.load_metrics(tmp_path / "points.parquet"))
    assert scores.index[0] == pd.Timestamp(60_000, unit="ms", tz="UTC")
    assert scores.iloc[0].to_dict() == {"accuracy": 0.5, "macro_f1": 0.25}


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(data.ReportDataError, match="does not exist"):
        data.load_metrics(tmp_path / "nowhere")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(data.ReportDataError, match=r"columns \['agent_id'"):
        data.load_metrics(tmp_path / "x.parquet")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "x.parquet")])
    assert result.exit_code != 0 and "long format" in result.output


def test_offline_demo_honours_no_report_and_writes_the_sinks_schema(tmp_path: Path) -> None:
    from mlwatcher.cli import main
    from mlwatcher.sinks.parquet_format import SCHEMA

    result = CliRunner().invoke(
        main, ["demo", "--offline", "--no-report", "--short", "--output", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "parquet").rglob("*.parquet"))
    assert files, result.output
    assert all(pq.read_schema(f).equals(SCHEMA, check_metadata=True) for f in files)
    assert not (tmp_path / "report").exists()
    assert "report:" not in result.output


def test_report_draws_each_windows_latest_revision(tmp_path: Path) -> None:
    from mlwatcher.sinks.parquet_files import write_records
    from tests.sinks.sink_helpers import revision_stream

    records = revision_stream(["late labels"], windows=5)
    # two files, as a sink writes them; one revision read twice (two sink processes)
    write_records(
        records[:7], tmp_path / "data", "m-0-00000000000000000000-00000000000000000006.parquet"
    )
    write_records(
        records[6:], tmp_path / "data", "m-0-00000000000000000006-00000000000000000014.parquet"
    )
    newest = {}
    for record in records:
        if record.revision >= newest.get(record.window_start_ms, record).revision:
            newest[record.window_start_ms] = record

    def value(record, what: str) -> float:  # type: ignore[no-untyped-def]
        return next(p.value for p in record.points if p.what == what and p.class_name is None)

    frame = data.load_metrics(tmp_path / "data")
    scores = data.label_scores(frame)
    expected = {
        pd.Timestamp(start, unit="ms", tz="UTC"): value(record, "overall_accuracy")
        for start, record in newest.items()
    }
    assert scores["accuracy"].to_dict() == pytest.approx(expected)
    # the rest from revision 0, once per window
    per_window = frame.groupby("window_start")["what"].value_counts().unstack()
    assert (per_window["prediction_count"] == 1).all() and (per_window["feature_value"] == 4).all()
    assert (per_window["overall_accuracy"] == 1).all()

    points = data.load_points(tmp_path / "data")
    fill = data.label_fill(points)
    first = [r for r in records if r.revision == 0]
    assert fill["labelled_at_close"].tolist() == [value(r, "labelled_rows") for r in first]
    assert fill["labelled"].tolist() == [
        value(newest[r.window_start_ms], "labelled_rows") for r in first
    ]
    assert fill["revision"].tolist() == [newest[r.window_start_ms].revision for r in first]
    assert (fill["labelled"] > fill["labelled_at_close"]).all()
    earlier = data.earlier_accuracy(points)
    want = sorted(
        (
            pd.Timestamp(r.window_start_ms, unit="ms", tz="UTC"),
            r.revision,
            value(r, "overall_accuracy"),
        )
        for r in records
        if r.revision < newest[r.window_start_ms].revision
    )
    assert sorted(earlier.itertuples(index=False, name=None)) == want

    report = build_report(tmp_path / "data", tmp_path / "report")
    page = report.html_path.read_text()
    labels = page[page.index("<h2>Labels</h2>") : page.index("<h2>Windows flagged")]
    cells = re.findall(r"<td>([^<]*)</td>", labels)
    at_close = sum(value(r, "labelled_rows") for r in first)
    now = sum(value(newest[r.window_start_ms], "labelled_rows") for r in first)
    assert cells[:6] == ["late labels", "5", "5", "2", str(int(at_close)), str(int(now))]
    assert report.images["late labels"].read_bytes().startswith(PNG_SIGNATURE)
