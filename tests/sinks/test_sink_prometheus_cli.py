"""`mlwatcher sink prometheus` flags: the config file reaches the filters; bad values are
refused before anything starts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mlwatcher.cli import main


def test_filters_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "mlwatcher.toml"
    config.write_text(
        '[sink.prometheus]\nexclude_what = ["confusion_count", "log_loss"]\nweb_port = 7777\n'
    )
    result = CliRunner().invoke(
        main,
        ["--config", str(config), "sink", "prometheus", "--help"],
        terminal_width=300,
    )
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if "--" in line}
    assert "confusion_count, log_loss" in lines["--exclude-what"]
    assert "7777" in lines["--web-port"]
    assert "feature_drift" in lines["--feature-what"]  # the built-in default


def test_bad_values_are_refused_with_the_flag_named() -> None:
    for args, flag in (
        (["--expire-after-windows", "0"], "--expire-after-windows"),
        (["--web-port", "70000"], "--web-port"),
        (["--lookback-seconds", "-1"], "--lookback-seconds"),
    ):
        result = CliRunner().invoke(main, ["sink", "prometheus", *args])
        assert result.exit_code == 2, result.output
        assert flag in result.output
