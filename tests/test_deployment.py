"""What CI can check of the Docker deployment without a Docker engine.

The compose file parses; every service running our image runs a real ``mlwatcher``
subcommand that answers ``--help`` and knows every flag the service passes; every
``MLWATCHER_*`` variable the deployment sets is one the application reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PACKAGE = ROOT / "mlwatcher"
_ENV_NAME = re.compile(r"\bMLWATCHER_[A-Z0-9_]+\b")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _app_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image", "").startswith("mlwatcher") or "build" in service
    }


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlwatcher.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def _split_command(command: list[str]) -> tuple[list[str], list[str]]:
    """``["mlwatcher", "sink", "parquet", "--output", "x"]`` -> (["sink", "parquet"], flags)."""
    assert command[0] == "mlwatcher", f"command must start with 'mlwatcher': {command}"
    words = command[1:]
    first_flag = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
    subcommand = [w for w in words[:first_flag] if not w.startswith("/")]
    flags = [w.split("=")[0] for w in words[first_flag:] if w.startswith("--")]
    return subcommand, flags


def test_compose_file_parses_with_the_expected_services() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"kafka", "topics", "worker", "sink-parquet", "sink-anodot"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    assert {"kafka-data", "parquet-data"} <= set(compose["volumes"])
    # --scale needs services without fixed names or host ports
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert services["topics"]["restart"] == "no"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "parquet-data:/data/parquet" in services["sink-parquet"]["volumes"]


@pytest.mark.parametrize("service", sorted(_app_services()))
def test_service_command_is_a_real_subcommand_with_known_flags(service: str) -> None:
    command = _app_services()[service]["command"]
    subcommand, flags = _split_command(command)
    assert subcommand, f"{service}: no subcommand in {command}"
    result = _run_cli(*subcommand, "--help")
    assert result.returncode == 0, f"{service}: `mlwatcher {' '.join(subcommand)} --help` " + (
        result.stderr or result.stdout
    )
    assert "Usage:" in result.stdout
    for flag in flags:
        assert flag in result.stdout, f"{service}: {flag} is not an option of {subcommand}"


def _environment_names() -> set[str]:
    names: set[str] = set()
    for service in _compose()["services"].values():
        names |= {k for k in service.get("environment", {}) if k.startswith("MLWATCHER_")}
    names |= set(_ENV_NAME.findall(DOCKERFILE.read_text()))
    return names


def _names_the_package_reads() -> set[str]:
    read: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        read |= set(_ENV_NAME.findall(path.read_text()))
    return read


def test_every_environment_variable_set_is_read_by_the_app() -> None:
    names = _environment_names()
    assert "MLWATCHER_BOOTSTRAP_SERVERS" in names
    unknown = names - _names_the_package_reads()
    assert not unknown, f"set in the deployment but never read by mlwatcher: {sorted(unknown)}"


def test_env_variables_reach_the_cli_help() -> None:
    # The variables are documented on the flags they feed ([env NAME] in --help).
    result = _run_cli("worker", "--help")
    assert "MLWATCHER_BOOTSTRAP_SERVERS" in result.stdout


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert "pip install" in text and "COPY mlwatcher" in text
    assert re.search(r"^USER (?!root)", text, re.MULTILINE), "the image must not run as root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored


def test_dockerfile_installs_the_extras_of_every_role_it_runs() -> None:
    from mlwatcher.cli import EXTRAS

    match = re.search(r"^ARG EXTRAS=([\w,]+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile names the extras it installs in ARG EXTRAS"
    installed = set(match.group(1).split(","))
    assert 'pip install ".[${EXTRAS}]"' in DOCKERFILE.read_text()
    for name, service in _app_services().items():
        subcommand, _ = _split_command(service["command"])
        assert EXTRAS[subcommand[0]] in installed, (
            f"{name}: needs mlwatcher[{EXTRAS[subcommand[0]]}]"
        )
