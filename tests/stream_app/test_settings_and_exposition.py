"""Worker settings, the CLI's argument checks and the Prometheus exposition (no broker)."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from mlwatcher.stream_app.cli import worker
from mlwatcher.stream_app.observability import WorkerStats, parse_prometheus, render_prometheus
from mlwatcher.stream_app.settings import WindowPolicy, WorkerSettings, parse_references
from mlwatcher.stream_app.wiring import is_tick


@pytest.mark.parametrize(
    ("window_ms", "grace_ms"),
    [(2_000, 1_000), (60_000, 12_000), (3_600_000, 300_000), (86_400_000, 300_000)],
)
def test_default_grace_is_a_fifth_of_the_window_clamped(window_ms: int, grace_ms: int) -> None:
    assert WindowPolicy().grace_for(window_ms) == grace_ms


def test_explicit_grace_wins_and_bad_values_name_the_field() -> None:
    assert WindowPolicy(grace_ms=0).grace_for(60_000) == 0
    with pytest.raises(ValueError, match="idle_close_delay_ms"):
        WindowPolicy(idle_close_delay_ms=-1)


def test_settings_from_env() -> None:
    settings = WorkerSettings.from_env(
        {
            "MLWATCHER_BOOTSTRAP_SERVERS": "k:1",
            "MLWATCHER_APP_ID": "x",
            "MLWATCHER_GRACE_MS": "250",
            "MLWATCHER_EMPTY_WINDOW_LIMIT": "3",
            "MLWATCHER_REFERENCES": "a=/p/a b=/p/b",
            "MLWATCHER_WEB_PORT": "7000",
        }
    )
    assert (settings.bootstrap_servers, settings.app_id, settings.web_port) == ("k:1", "x", 7000)
    assert settings.web_host == "127.0.0.1"
    assert settings.policy.grace_ms == 250 and settings.policy.empty_window_limit == 3
    assert settings.references == {"a": "/p/a", "b": "/p/b"}
    with pytest.raises(ValueError, match="MLWATCHER_PARTITIONS"):
        WorkerSettings.from_env({"MLWATCHER_PARTITIONS": "many"})
    with pytest.raises(ValueError, match="AGENT=PATH"):
        parse_references(["no-equals-sign"])


def test_cli_refuses_a_missing_reference_file_before_touching_kafka() -> None:
    result = CliRunner().invoke(worker, ["--reference", "agent=/does/not/exist"])
    assert result.exit_code == 2
    assert "/does/not/exist is not a file" in result.output
    result = CliRunner().invoke(worker, ["--reference", "oops"])
    assert result.exit_code == 2 and "AGENT=PATH" in result.output


def test_tick_header_detection() -> None:
    assert is_tick([("mlwatcher-control", b"tick")])
    assert is_tick({"mlwatcher-control": b"tick"})
    assert not is_tick(None) and not is_tick([("other", b"tick")])


def test_prometheus_exposition() -> None:
    stats = WorkerStats(started_at=0.0, rows=1500, dead_letters=Counter(late=2, undecodable=1))
    for seconds in (0.05, 0.3, 0.3, 1.2, 45.0):
        stats.observe_close_delay(seconds)
    text = render_prometheus(
        stats,
        open_windows=4,
        lag_by_partition={0: 7, 1: 0},
        assigned_partitions=2,
        now=lambda: 10.0,
    )
    lines = set(text.splitlines())
    assert "mlwatcher_worker_rows_total 1500" in lines
    assert "mlwatcher_worker_late_batches_total 2" in lines
    assert 'mlwatcher_worker_dead_letters_total{reason="undecodable"} 1' in lines
    assert 'mlwatcher_worker_consumer_lag{partition="0"} 7' in lines
    assert "mlwatcher_worker_open_windows 4" in lines
    assert 'mlwatcher_worker_window_close_delay_seconds_bucket{le="0.1"} 1' in lines
    assert 'mlwatcher_worker_window_close_delay_seconds_bucket{le="0.5"} 3' in lines
    assert 'mlwatcher_worker_window_close_delay_seconds_bucket{le="30.0"} 4' in lines
    assert 'mlwatcher_worker_window_close_delay_seconds_bucket{le="+Inf"} 5' in lines
    assert "mlwatcher_worker_window_close_delay_seconds_count 5" in lines
    assert "# TYPE mlwatcher_worker_window_close_delay_seconds histogram" in lines
    samples = parse_prometheus(text)
    assert samples["mlwatcher_worker_rows_total"] == 1500
    assert samples['mlwatcher_worker_consumer_lag{partition="0"}'] == 7
    assert len(samples) == sum(1 for line in text.splitlines() if not line.startswith("#"))
