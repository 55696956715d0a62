"""``mlwatcher demo``: the whole pipeline on the digits scenarios, then the report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlwatcher.config import parse_kafka_options

#: --short: 24 windows of 5 s (10 normal, 7 anomalous, 7 normal) sent in about 15 s
SHORT_DURATION_S = 120.0
SHORT_SPEED = 8.0


@click.command()
@click.option(
    "--output",
    "-o",
    "output_dir",
    default="mlwatcher-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the Parquet metrics, the report and the process logs.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=20.0),
    default=300.0,
    show_default=True,
    help="Seconds of simulated traffic (each agent sends batches of 1-20 rows).",
)
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(min=1.0),
    default=5.0,
    show_default=True,
    help="Window length of every agent, in seconds.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0),
    default=5.0,
    show_default=True,
    help="Simulated seconds per real second.",
)
@click.option(
    "--short",
    is_flag=True,
    help=f"CI mode: {SHORT_DURATION_S:g} s of traffic at {SHORT_SPEED:g}x (overrides "
    "--duration and --speed).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the models and the traffic.")
@click.option(
    "--bootstrap-servers",
    "-b",
    envvar="MLWATCHER_DEMO_BOOTSTRAP_SERVERS",
    default=None,
    help="Run on this Kafka cluster instead of the embedded Tansu broker; the demo creates "
    "its own uniquely named topics there [env MLWATCHER_DEMO_BOOTSTRAP_SERVERS].",
)
@click.option(
    "--kafka-option",
    "-X",
    "kafka_option",
    multiple=True,
    help="Extra librdkafka option KEY=VALUE for --bootstrap-servers (SASL/SSL), repeatable.",
)
@click.option(
    "--anodot-url",
    envvar="MLWATCHER_ANODOT_URL",
    default=None,
    help="Anodot API base URL [env MLWATCHER_ANODOT_URL].",
)
@click.option(
    "--anodot-token",
    envvar="MLWATCHER_ANODOT_TOKEN",
    default=None,
    show_envvar=False,
    help="Also run the Anodot sink with this data-collection token [env MLWATCHER_ANODOT_TOKEN].",
)
@click.option(
    "--offline",
    is_flag=True,
    help="No Kafka at all: compute the windows' metrics in-process, then the report.",
)
@click.option("--no-report", is_flag=True, help="Stop after the Parquet data set is written.")
def demo(
    output_dir: Path,
    duration: float,
    window_s: float,
    speed: float,
    short: bool,
    seed: int,
    bootstrap_servers: str | None,
    kafka_option: tuple[str, ...],
    anodot_url: str | None,
    anodot_token: str | None,
    offline: bool,
    no_report: bool,
) -> None:
    """Monitor three digits classifiers end to end and write a report.

    digits_ok runs normally; digits_wrong_inputs gets inverted pixels and digits_wrong_model
    is replaced by a model trained on ~95% odd digits, both for the middle 30% of the run.
    Without --bootstrap-servers the demo starts an embedded Tansu broker (no Docker, no
    Java). Ctrl-C stops every process it started.
    """
    from mlwatcher.demo.orchestrator import DemoSettings, run_demo, run_offline
    from mlwatcher.demo.processes import DemoProcessError

    if short:
        duration, speed = SHORT_DURATION_S, SHORT_SPEED
    try:
        settings = DemoSettings(
            output_dir=output_dir,
            duration_s=duration,
            window_s=window_s,
            speed=speed,
            seed=seed,
            bootstrap_servers=bootstrap_servers,
            kafka_options=parse_kafka_options(kafka_option),
            anodot_url=anodot_url,
            anodot_token=anodot_token,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    echo = _echo
    try:
        if offline:
            run_offline(settings, echo, make_report=not no_report)
        else:
            result = run_demo(settings, echo, make_report=not no_report)
            if result.windows_written < 3 * result.timeline.n_windows:
                raise click.ClickException(
                    f"only {result.windows_written} of {3 * result.timeline.n_windows} windows "
                    f"reached Parquet; see the logs in {output_dir / 'logs'}"
                )
    except KeyboardInterrupt:
        click.echo("demo interrupted; every process it started has been stopped", err=True)
        sys.exit(130)
    except (DemoProcessError, TimeoutError) as error:
        raise click.ClickException(str(error)) from error


def _echo(message: str) -> None:
    click.echo(message)
