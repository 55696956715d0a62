"""A real Prometheus server for the tests (Debian package ``prometheus``), on loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from mlwatcher.brokers import free_port
from tests.deploy.prometheus_tools import require_binary
from tests.helpers import wait_until

_TARGET_LABELS = ("__name__", "job", "instance")


class PrometheusServer:
    """``prometheus`` scraping ``targets`` (job name -> ``host:port`` list) every second."""

    def __init__(
        self,
        directory: Path,
        targets: Mapping[str, Sequence[str]],
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.binary = require_binary("prometheus")
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                for job, hosts in targets.items()
            ],
        }
        self.config_path = directory / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        log = open(self.log_path, "ab")  # the child owns it
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 60, "Prometheus to be ready", 0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log()[-3000:]}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant vector of ``promql`` (HTTP API ``/api/v1/query``): ``[{metric, value}]``."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]

    def values(self, promql: str) -> dict[frozenset[tuple[str, str]], float]:
        """``{labels: value}`` of ``promql``'s result, labels without the name, job and
        instance."""
        return {
            frozenset((k, v) for k, v in item["metric"].items() if k not in _TARGET_LABELS): float(
                item["value"][1]
            )
            for item in self.query(promql)
        }

    def series(self, selector: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``{(name, labels): value}`` of the series ``selector`` selects (labels without
        job and instance)."""
        return {
            (
                item["metric"]["__name__"],
                frozenset((k, v) for k, v in item["metric"].items() if k not in _TARGET_LABELS),
            ): float(item["value"][1])
            for item in self.query(selector)
        }

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its ``health`` and ``lastError`` (``/api/v1/rules``)."""
        body = requests.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def targets_up(self) -> dict[str, float]:
        return {item["metric"]["job"]: float(item["value"][1]) for item in self.query("up")}
