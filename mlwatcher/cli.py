"""The ``mlwatcher`` command line; subcommands are imported only when used (fast ``--help``)."""

from __future__ import annotations

import importlib
import logging
import os

import click

from mlwatcher import __version__
from mlwatcher.config import default_map_for, load_config_file

#: command name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "topics": "mlwatcher.topics_cli:topics",
    "worker": "mlwatcher.stream_app.cli:worker",
    "sink": "mlwatcher.sinks.cli:sink",
    "reference": "mlwatcher.reference_cli:reference",
    "demo": "mlwatcher.demo.cli:demo",
    "report": "mlwatcher.report.cli:report",
}
#: command name -> the extra that installs what it needs (pyproject.toml)
EXTRAS: dict[str, str] = {
    "topics": "worker",
    "worker": "worker",
    "sink": "sinks",
    "reference": "worker",
    "demo": "embedded",
    "report": "report",
}


def _needs_extra(name: str, missing: str) -> click.Command:
    """A stand-in for a command whose libraries this install lacks: it says which extra."""

    def explain() -> None:
        raise click.ClickException(
            f"`mlwatcher {name}` needs {missing}, which this install lacks: "
            f"pip install 'mlwatcher[{EXTRAS[name]}]'"
        )

    return click.Command(
        name, callback=explain, help=f"(needs pip install 'mlwatcher[{EXTRAS[name]}]')"
    )


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # this install does not ship that command
            if exc.name and not exc.name.startswith("mlwatcher"):
                return _needs_extra(cmd_name, exc.name.split(".")[0])
            raise
        return getattr(module, attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlwatcher")
@click.option(
    "--config",
    "config_path",
    envvar="MLWATCHER_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML config file; its keys are flag names [env MLWATCHER_CONFIG].",
)
@click.option(
    "--log-level",
    envvar="MLWATCHER_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level [env MLWATCHER_LOG_LEVEL].",
)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """MLWatcher: monitor ML classifiers in production through Kafka.

    Model processes publish prediction batches (mlwatcher.producer.MonitoringAgent); stream
    workers turn them into per-window metrics; sinks forward the metrics to Anodot, Parquet
    and Prometheus.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if config_path:
        group = ctx.command
        assert isinstance(group, click.Group)
        ctx.default_map = default_map_for(group, load_config_file(config_path), ctx)
    # `mlwatcher worker` has a --log-level of its own (Faust's); with this, the top-level flag
    # also sets the worker's default, unless the environment already chose one.
    os.environ.setdefault("MLWATCHER_LOG_LEVEL", log_level.upper())
