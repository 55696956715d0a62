"""The command line: --help everywhere, config file and environment precedence, docs current."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlwatcher.cli import main
from mlwatcher.kafka_admin import topic_partition_counts

ROOT = Path(__file__).resolve().parents[1]


def _all_commands() -> list[list[str]]:
    ctx = click.Context(main, info_name="mlwatcher")
    found: list[list[str]] = [[]]

    def walk(group: click.Group, path: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, f"mlwatcher {' '.join([*path, name])} does not load"
            found.append([*path, name])
            if isinstance(command, click.Group):
                walk(command, [*path, name])

    walk(main, [])
    return found


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "mlwatcher")
def test_every_command_answers_help(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="mlwatcher")
    assert result.exit_code == 0, result.output
    assert "Usage: mlwatcher" in result.output


def test_config_file_then_environment_then_flag(tmp_path: Path) -> None:
    config = tmp_path / "mlwatcher.toml"
    config.write_text('bootstrap_servers = "from-file:1"\n[topics.create]\npartitions = 17\n')
    runner = CliRunner()
    shown = runner.invoke(
        main, ["--config", str(config), "topics", "create", "--help"], terminal_width=300
    )
    assert shown.exit_code == 0, shown.output
    assert "from-file:1" in shown.output and "17" in shown.output


def test_environment_beats_file_and_flag_beats_environment(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Which servers and topic names win is seen on the real broker: the topics appear there."""
    unreachable = "127.0.0.1:9"
    suffix = uuid.uuid4().hex[:8]
    config = tmp_path / "mlwatcher.toml"
    config.write_text(
        f'bootstrap_servers = "{unreachable}"\n'
        f'metrics_topic = "m-{suffix}"\ndead_letter_topic = "d-{suffix}"\n'
        f'[topics.create]\npartitions = 3\npredictions_topic = "p-file-{suffix}"\n'
    )
    runner = CliRunner()
    env = {"MLWATCHER_BOOTSTRAP_SERVERS": kafka_bootstrap}
    created = runner.invoke(main, ["--config", str(config), "topics", "create"], env=env)
    assert created.exit_code == 0, created.output
    flagged = runner.invoke(
        main,
        [
            "--config",
            str(config),
            "topics",
            "create",
            "-b",
            kafka_bootstrap,
            "--predictions-topic",
            f"p-flag-{suffix}",
        ],
        env={"MLWATCHER_BOOTSTRAP_SERVERS": unreachable},
    )
    assert flagged.exit_code == 0, flagged.output
    counts = topic_partition_counts(kafka_bootstrap)
    assert counts[f"p-file-{suffix}"] == 3 and counts[f"p-flag-{suffix}"] == 3


def test_bad_config_file_is_reported_clearly(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("bootstrap_servers = \n")
    result = CliRunner().invoke(main, ["--config", str(config), "topics", "create", "--help"])
    assert result.exit_code != 0
    assert "not valid TOML" in result.output


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("make_cli", ROOT / "docs/make_cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs/cli.md").read_text() == module.render(), (
        "docs/cli.md is stale: run python docs/make_cli_reference.py"
    )
