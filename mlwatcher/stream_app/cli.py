"""``mlwatcher worker``: run one stream worker process (several share the work)."""

from __future__ import annotations

import logging
import os

import click

from mlwatcher.config import DurationType, kafka_options, parse_kafka_options
from mlwatcher.stream_app.kafka_security import KafkaSecurityError, broker_credentials
from mlwatcher.stream_app.settings import (
    DEFAULT_EMPTY_WINDOW_LIMIT,
    DEFAULT_IDLE_CLOSE_DELAY_MS,
    DEFAULT_LABEL_REVISION_INTERVAL_MS,
    DEFAULT_LABEL_TTL_MS,
    DEFAULT_MAX_PENDING_LABELS,
    WindowPolicy,
    WorkerSettings,
    parse_references,
)


@click.command()
@kafka_options
@click.option(
    "--app-id",
    envvar="MLWATCHER_APP_ID",
    default="mlwatcher-worker",
    show_default=True,
    help="Consumer group and changelog prefix; workers with the same id share the "
    "work [env MLWATCHER_APP_ID].",
)
@click.option(
    "--partitions",
    envvar="MLWATCHER_PARTITIONS",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Partitions of topics the worker creates; an existing predictions topic "
    "keeps its count [env MLWATCHER_PARTITIONS].",
)
@click.option(
    "--grace-ms",
    envvar="MLWATCHER_GRACE_MS",
    type=click.IntRange(min=0),
    default=None,
    help="Grace period for late batches, in ms. Default: 20% of each "
    "agent's window, clamped to [1 s, 5 min] [env MLWATCHER_GRACE_MS].",
)
@click.option(
    "--idle-close-delay-ms",
    envvar="MLWATCHER_IDLE_CLOSE_DELAY_MS",
    type=click.IntRange(min=0),
    default=DEFAULT_IDLE_CLOSE_DELAY_MS,
    show_default=True,
    help="A quiet agent's window closes this long after end + grace on the worker's "
    "clock [env MLWATCHER_IDLE_CLOSE_DELAY_MS].",
)
@click.option(
    "--empty-window-limit",
    envvar="MLWATCHER_EMPTY_WINDOW_LIMIT",
    type=click.IntRange(min=0),
    default=DEFAULT_EMPTY_WINDOW_LIMIT,
    show_default=True,
    help="Zero-count records emitted for at most this many windows after an agent's "
    "last window with rows [env MLWATCHER_EMPTY_WINDOW_LIMIT].",
)
@click.option(
    "--label-ttl",
    envvar="MLWATCHER_LABEL_TTL",
    type=DurationType(),
    default=f"{DEFAULT_LABEL_TTL_MS // 3_600_000}h",
    show_default=True,
    help="How long a prediction sent with prediction_ids waits for its delayed label "
    "(collect_labels), in the agent's event time: 500ms, 90s, 15m, 24h, 7d "
    "[env MLWATCHER_LABEL_TTL].",
)
@click.option(
    "--max-pending-labels",
    envvar="MLWATCHER_MAX_PENDING_LABELS",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_PENDING_LABELS,
    show_default=True,
    help="Prediction rows per agent kept waiting for a label; beyond it the oldest batches "
    "expire. About 8 + 2 + 4 x classes + 17 bytes per row in memory "
    "[env MLWATCHER_MAX_PENDING_LABELS].",
)
@click.option(
    "--label-revision-interval",
    envvar="MLWATCHER_LABEL_REVISION_INTERVAL",
    type=DurationType(),
    default=f"{DEFAULT_LABEL_REVISION_INTERVAL_MS // 1000}s",
    show_default=True,
    help="A closed window that got delayed labels is revised (a record with revision n >= 1 "
    "and its label metrics) at most this often [env MLWATCHER_LABEL_REVISION_INTERVAL].",
)
@click.option(
    "--web-host",
    envvar="MLWATCHER_WEB_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address of the /health and /metrics endpoint [env MLWATCHER_WEB_HOST].",
)
@click.option(
    "--web-port",
    envvar="MLWATCHER_WEB_PORT",
    type=click.IntRange(1, 65535),
    default=6066,
    show_default=True,
    help="Port of the web endpoint [env MLWATCHER_WEB_PORT].",
)
@click.option(
    "--reference",
    "references",
    multiple=True,
    envvar="MLWATCHER_REFERENCES",
    metavar="AGENT=PATH",
    help="Baseline reference profile file for an agent's drift "
    "metrics (default: the agent's previous window); repeatable "
    "[env MLWATCHER_REFERENCES, space-separated].",
)
@click.option(
    "--tick-interval",
    envvar="MLWATCHER_TICK_INTERVAL",
    type=click.FloatRange(0.05),
    default=0.25,
    show_default=True,
    help="Seconds between checks for windows of quiet agents to close.",
)
@click.option(
    "--stall-timeout",
    envvar="MLWATCHER_STALL_TIMEOUT",
    type=click.FloatRange(1.0),
    default=20.0,
    show_default=True,
    help="Seconds without progress on a lagging owned partition before the worker reports "
    "itself stalled (/health 'stalled', mlwatcher_worker_stalled 1) and re-seeks; after twice "
    "as long it exits with status 75 so its supervisor restarts it.",
)
@click.option(
    "--log-level",
    envvar="MLWATCHER_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Worker log level [env MLWATCHER_LOG_LEVEL].",
)
def worker(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    predictions_topic: str,
    metrics_topic: str,
    dead_letter_topic: str,
    app_id: str,
    partitions: int,
    grace_ms: int | None,
    idle_close_delay_ms: int,
    empty_window_limit: int,
    label_ttl: int,
    max_pending_labels: int,
    label_revision_interval: int,
    web_host: str,
    web_port: int,
    references: tuple[str, ...],
    tick_interval: float,
    stall_timeout: float,
    log_level: str,
) -> None:
    """Run a stream worker: prediction batches in, one metric record per agent and window out
    (plus label revisions of closed windows when labels arrive later).

    Stop it with Ctrl-C or SIGTERM; offsets are committed and state is in the changelog.
    """
    try:
        reference_paths = parse_references(references)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--reference") from None
    for agent, path in reference_paths.items():
        if not os.path.isfile(path):
            raise click.BadParameter(
                f"reference profile for agent {agent!r}: {path} is not a file",
                param_hint="--reference",
            )
    options = parse_kafka_options(kafka_option)
    try:
        broker_credentials(options)  # refuse options the Faust worker cannot honour, up front
    except KafkaSecurityError as exc:
        raise click.BadParameter(str(exc), param_hint="-X/--kafka-option") from None
    settings = WorkerSettings(
        bootstrap_servers=bootstrap_servers,
        predictions_topic=predictions_topic,
        metrics_topic=metrics_topic,
        dead_letter_topic=dead_letter_topic,
        app_id=app_id,
        partitions=partitions,
        policy=WindowPolicy(
            grace_ms=grace_ms,
            idle_close_delay_ms=idle_close_delay_ms,
            empty_window_limit=empty_window_limit,
            label_ttl_ms=label_ttl,
            max_pending_labels=max_pending_labels,
            label_revision_interval_ms=label_revision_interval,
        ),
        web_host=web_host,
        web_port=web_port,
        references=reference_paths,
        tick_interval_s=tick_interval,
        stall_timeout_s=stall_timeout,
        kafka_options=options,
    )
    run_worker(settings, log_level.upper())


def run_worker(settings: WorkerSettings, log_level: str = "INFO") -> None:
    """Start a Faust worker for ``settings`` and block until it is stopped."""
    from faust.worker import Worker

    from mlwatcher.stream_app.wiring import create_app

    app = create_app(settings)
    logging.getLogger("mlwatcher").setLevel(log_level)
    Worker(app, loglevel=log_level, quiet=True).execute_from_commandline()
