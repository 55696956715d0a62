"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``:
every alert fires on its scenario and stays quiet on the others)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.prometheus_tools import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DEPLOY,
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts == firing == quiet
    assert alerts >= {
        "MLWatcherDatasetDrift",
        "MLWatcherAccuracyDrop",
        "MLWatcherEstimatedAccuracyDrop",
        "MLWatcherAgentSilent",
        "MLWatcherWorkerStalled",
        "MLWatcherWorkerLagging",
        "MLWatcherDeadLettersRising",
    }


def test_compose_prometheus_scrapes_the_sink_and_every_worker(tmp_path: Path) -> None:
    root = DEPLOY.parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sink_env = services["sink-prometheus"]["environment"]
    assert sink_env["MLWATCHER_PROMETHEUS_HOST"] == "0.0.0.0"
    [sink_target] = jobs["mlwatcher-sink"]["static_configs"][0]["targets"]
    assert sink_target == f"sink-prometheus:{sink_env['MLWATCHER_PROMETHEUS_PORT']}"
    [workers] = jobs["mlwatcher-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert str(workers["port"]) == services["worker"]["environment"]["MLWATCHER_WEB_PORT"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert [mounts["./deploy/prometheus/alerts.yml"]] == config["rule_files"]
    # promtool checks the file as Prometheus would load it (rule path as mounted -> local)
    config["rule_files"] = [str(DEPLOY / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = _promtool("check", "config", str(local))
    assert result.returncode == 0, result.stdout + result.stderr
