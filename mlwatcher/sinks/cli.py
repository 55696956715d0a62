"""``mlwatcher sink anodot | anodot-labels | parquet | prometheus | replay-anodot``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlwatcher.config import kafka_options, parse_kafka_options

if TYPE_CHECKING:
    from mlwatcher.sinks.anodot_client import AnodotClient
    from mlwatcher.sinks.shutdown import Shutdown

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

log = logging.getLogger(__name__)

#: a sink reads the metrics topic and writes dead letters; the predictions topic is not its business
SINK_TOPICS = ("metrics", "dead_letter")

_TOKEN_HELP = "Anodot data-collection token [env MLWATCHER_ANODOT_TOKEN]; never logged."


def _anodot_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option(
            "--base-url",
            envvar="MLWATCHER_ANODOT_URL",
            default="https://api.anodot.com",
            show_default=True,
            help="Anodot API base URL [env MLWATCHER_ANODOT_URL].",
        ),
        click.option(
            "--token",
            envvar="MLWATCHER_ANODOT_TOKEN",
            required=True,
            show_default=False,
            show_envvar=False,
            help=_TOKEN_HELP,
        ),
        click.option(
            "--rate-limit",
            type=click.FloatRange(min=1, min_open=False),
            default=2000.0,
            show_default=True,
            help="Points per second, shared by everything this process sends "
            "(measured over any 1 s span).",
        ),
        click.option(
            "--max-points-per-request",
            type=click.IntRange(1, 1000),
            default=1000,
            show_default=True,
            help="Points per HTTP request (Anodot takes about 1000).",
        ),
        click.option(
            "--request-timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds to wait for an answer before retrying.",
        ),
        click.option(
            "--max-attempts",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Give up (exit 1, nothing committed) after this many failed attempts of one "
            "request; 0 = retry until stopped.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _client(
    base_url: str,
    token: str,
    rate_limit: float,
    max_points_per_request: int,
    request_timeout: float,
    max_attempts: int,
) -> AnodotClient:
    from mlwatcher.sinks.anodot_client import AnodotClient
    from mlwatcher.sinks.rate_limit import RateLimiter
    from mlwatcher.sinks.retry import BackoffPolicy

    limiter = RateLimiter(rate_limit)
    try:
        return AnodotClient(
            base_url,
            token,
            rate_limiter=limiter,
            backoff=BackoffPolicy(max_attempts=max_attempts or None),
            timeout=request_timeout,
            max_points_per_request=min(max_points_per_request, limiter.budget),
        )
    except ValueError as error:
        raise click.BadParameter(str(error).replace(token, "<redacted>")) from None


@click.group()
def sink() -> None:
    """Forward metric records from the metrics topic to Anodot, Parquet files or Prometheus.

    Each sink kind is its own consumer group; run more processes of one kind to share the
    metrics topic's partitions. SIGTERM / Ctrl-C: finish, commit and exit; twice: exit now
    (unsent data stays uncommitted and is delivered after the restart).
    """


def _consumer_options(kind: str) -> Callable[[F], F]:
    """``--group-id`` and ``--progress-interval`` of a sink that consumes the metrics topic."""
    envvar = f"MLWATCHER_{kind.upper().replace('-', '_')}_GROUP_ID"

    def decorate(func: F) -> F:
        func = click.option(
            "--progress-interval",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds between progress log lines.",
        )(func)
        return click.option(
            "--group-id",
            envvar=envvar,
            default=f"mlwatcher-sink-{kind}",
            show_default=True,
            help=f"Consumer group; processes with the same id share the metrics topic "
            f"[env {envvar}].",
        )(func)

    return decorate


@sink.command("anodot")
@kafka_options(topics=SINK_TOPICS)
@_anodot_options
@_consumer_options("anodot")
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Send a partial request once its oldest point waited this many seconds.",
)
def anodot(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    metrics_topic: str,
    dead_letter_topic: str,
    base_url: str,
    token: str,
    rate_limit: float,
    max_points_per_request: int,
    request_timeout: float,
    max_attempts: int,
    group_id: str,
    linger: float,
    progress_interval: float,
) -> None:
    """Send metric records to Anodot (Metrics 2.0), at least once.

    Offsets are committed only once every point of a record is accepted by Anodot or written
    to the dead-letter topic with the reason.
    """
    from mlwatcher.sinks.anodot_sink import AnodotSink, AnodotSinkConfig

    client = _client(
        base_url, token, rate_limit, max_points_per_request, request_timeout, max_attempts
    )
    config = AnodotSinkConfig(
        bootstrap_servers=bootstrap_servers,
        metrics_topic=metrics_topic,
        dead_letter_topic=dead_letter_topic,
        group_id=group_id,
        kafka_options=parse_kafka_options(kafka_option),
        linger_seconds=linger,
        progress_interval=progress_interval,
    )
    log.info(
        "anodot sink: %s -> %s (group %s, %g points/s)",
        metrics_topic,
        client.url,
        group_id,
        rate_limit,
    )
    _with_anodot(client, AnodotSink(config, client).run)


@sink.command("anodot-labels")
@kafka_options(topics=SINK_TOPICS)
@_anodot_options
@_consumer_options("anodot-labels")
@click.option(
    "--label-wait",
    type=click.IntRange(min=0),
    default=3600,
    show_default=True,
    help="Seconds after a window's end to wait for late labels before its label metrics "
    "are sent; later label revisions are not sent.",
)
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Send a partial request once its oldest point waited this many seconds.",
)
def anodot_labels(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    metrics_topic: str,
    dead_letter_topic: str,
    base_url: str,
    token: str,
    rate_limit: float,
    max_points_per_request: int,
    request_timeout: float,
    max_attempts: int,
    group_id: str,
    label_wait: int,
    linger: float,
    progress_interval: float,
) -> None:
    """Send each window's label metrics to Anodot once, LABEL_WAIT seconds after it closed.

    Labels that come after their window closed reach the metrics topic as label revisions,
    which Metrics 2.0 cannot take into the series `sink anodot` fills (it drops points older
    than a series' latest). This sink sends accuracy, precision, ... of every window as they
    stand --label-wait seconds after its end, into series with the extra property
    label_wait=<seconds>s. Run it next to `sink anodot` (its own consumer group).
    """
    from mlwatcher.sinks.anodot_labels import AnodotLabelSink, AnodotLabelSinkConfig

    client = _client(
        base_url, token, rate_limit, max_points_per_request, request_timeout, max_attempts
    )
    config = AnodotLabelSinkConfig(
        bootstrap_servers=bootstrap_servers,
        metrics_topic=metrics_topic,
        dead_letter_topic=dead_letter_topic,
        group_id=group_id,
        kafka_options=parse_kafka_options(kafka_option),
        label_wait_seconds=label_wait,
        linger_seconds=linger,
        progress_interval=progress_interval,
    )
    log.info(
        "anodot label sink: %s -> %s (group %s, label wait %d s)",
        metrics_topic,
        client.url,
        group_id,
        label_wait,
    )
    _with_anodot(client, AnodotLabelSink(config, client).run)


def _with_anodot(client: AnodotClient, work: Callable[[Shutdown], R]) -> R:
    """Run ``work`` with the client open until SIGINT/SIGTERM; a fatal Anodot error (bad
    token, wrong URL) becomes a clean exit with the token redacted."""
    from mlwatcher.sinks.anodot_client import AnodotError
    from mlwatcher.sinks.shutdown import Shutdown

    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    try:
        with client:
            return work(shutdown)
    except AnodotError as error:
        raise click.ClickException(client.redact(str(error))) from None


@sink.command("parquet")
@kafka_options(topics=SINK_TOPICS)
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Root directory of the data set (agent_id=.../date=.../*.parquet).",
)
@_consumer_options("parquet")
@click.option(
    "--roll-bytes",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Write a partition's files once this many bytes of records are buffered.",
)
@click.option(
    "--roll-seconds",
    type=click.FloatRange(min=0.01),
    default=60.0,
    show_default=True,
    help="... or once the oldest buffered record waited this long.",
)
def parquet(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    metrics_topic: str,
    dead_letter_topic: str,
    output_dir: Path,
    group_id: str,
    roll_bytes: int,
    roll_seconds: float,
    progress_interval: float,
) -> None:
    """Write metric records to hive-partitioned Parquet files, exactly once.

    Files are named <topic>-<partition>-<first offset>-<last offset>.parquet, written to a
    temporary name, fsync'ed and renamed; offsets are committed after that. Files of
    uncommitted offsets are removed when a partition is assigned and written again.
    """
    from mlwatcher.sinks.parquet_sink import ParquetSink, ParquetSinkConfig
    from mlwatcher.sinks.shutdown import Shutdown

    config = ParquetSinkConfig(
        bootstrap_servers=bootstrap_servers,
        metrics_topic=metrics_topic,
        dead_letter_topic=dead_letter_topic,
        output_dir=output_dir,
        group_id=group_id,
        kafka_options=parse_kafka_options(kafka_option),
        roll_bytes=roll_bytes,
        roll_seconds=roll_seconds,
        progress_interval=progress_interval,
    )
    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    log.info("parquet sink: %s -> %s (group %s)", metrics_topic, output_dir, group_id)
    ParquetSink(config).run(shutdown)


@sink.command("migrate-parquet")
@click.argument("parquet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def migrate_parquet(parquet_dir: Path) -> None:
    """Rewrite a data set of an older Parquet schema version in place (stop its sink first).

    Version 2 files have no revision column (their rows become revision 0); version 1 files
    kept agent_id inside (pyarrow's hive reader refuses them) or, from `demo --offline`, extra
    as a map; current files are left alone.
    """
    from mlwatcher.sinks.parquet_files import migrate

    rewritten = migrate(parquet_dir)
    click.echo(f"migrated {len(rewritten)} files under {parquet_dir}")


@sink.command("replay-anodot")
@click.argument("parquet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_anodot_options
def replay_anodot(
    parquet_dir: Path,
    base_url: str,
    token: str,
    rate_limit: float,
    max_points_per_request: int,
    request_timeout: float,
    max_attempts: int,
) -> None:
    """Send a Parquet metrics data set (from `mlwatcher sink parquet`) to Anodot, offline."""
    from mlwatcher.sinks.replay import replay_parquet

    client = _client(
        base_url, token, rate_limit, max_points_per_request, request_timeout, max_attempts
    )
    stats = _with_anodot(
        client, lambda shutdown: replay_parquet(parquet_dir, client, shutdown.abort)
    )
    for series, reason in stats.rejected:
        log.warning("refused: %s: %s", series, reason)
    click.echo(
        f"rows={stats.rows} accepted={stats.points_accepted} refused={len(stats.rejected)} "
        f"requests={stats.requests} retries={stats.retries}"
    )
    if stats.rejected:
        raise SystemExit(2)


def _globs(name: str, envvar: str, default: tuple[str, ...], help_text: str) -> Any:
    return click.option(
        name,
        envvar=envvar,
        multiple=True,
        default=default,
        show_default=True,
        help=f"{help_text} Shell-style glob, repeatable [env {envvar}, space-separated].",
    )


@sink.command("prometheus")
@kafka_options(topics=SINK_TOPICS)
@_consumer_options("prometheus")
@click.option(
    "--web-host",
    envvar="MLWATCHER_PROMETHEUS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address of the /metrics endpoint [env MLWATCHER_PROMETHEUS_HOST].",
)
@click.option(
    "--web-port",
    envvar="MLWATCHER_PROMETHEUS_PORT",
    type=click.IntRange(0, 65535),
    default=6070,
    show_default=True,
    help="Port of the /metrics endpoint; 0 = any free port [env MLWATCHER_PROMETHEUS_PORT].",
)
@_globs("--include-what", "MLWATCHER_PROMETHEUS_INCLUDE_WHAT", ("*",), "Export these whats.")
@_globs("--exclude-what", "MLWATCHER_PROMETHEUS_EXCLUDE_WHAT", (), "... except these.")
@_globs(
    "--feature-what",
    "MLWATCHER_PROMETHEUS_FEATURE_WHAT",
    ("feature_drift",),
    "Whats exported per feature (points with a feat_name); '*' adds the per-feature "
    "statistics (8 series per feature and stat set).",
)
@_globs("--include-feature", "MLWATCHER_PROMETHEUS_INCLUDE_FEATURE", ("*",), "Features exported.")
@_globs("--exclude-feature", "MLWATCHER_PROMETHEUS_EXCLUDE_FEATURE", (), "... except these.")
@click.option(
    "--expire-after-windows",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Drop an agent's series once its latest window ended this many of its windows ago.",
)
@click.option(
    "--lookback-seconds",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="On start and rebalance, re-read this much of the metrics topic to rebuild every "
    "agent's latest window (cover expire-after-windows x your longest window).",
)
def prometheus(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    metrics_topic: str,
    dead_letter_topic: str,
    group_id: str,
    progress_interval: float,
    web_host: str,
    web_port: int,
    include_what: tuple[str, ...],
    exclude_what: tuple[str, ...],
    feature_what: tuple[str, ...],
    include_feature: tuple[str, ...],
    exclude_feature: tuple[str, ...],
    expire_after_windows: float,
    lookback_seconds: float,
) -> None:
    """Serve the latest closed window of every agent at /metrics, for Prometheus.

    One gauge per what (mlwatcher_<what>), labels agent_id, class_name, feat_name, stat and
    the extra properties, plus mlwatcher_window_end_timestamp_seconds per agent. By default
    every model-level series and per-feature drift are exported, not per-feature statistics.
    """
    from mlwatcher.sinks.prometheus_format import SeriesFilter
    from mlwatcher.sinks.prometheus_sink import PrometheusSink, PrometheusSinkConfig
    from mlwatcher.sinks.shutdown import Shutdown

    config = PrometheusSinkConfig(
        bootstrap_servers=bootstrap_servers,
        metrics_topic=metrics_topic,
        dead_letter_topic=dead_letter_topic,
        group_id=group_id,
        kafka_options=parse_kafka_options(kafka_option),
        progress_interval=progress_interval,
        web_host=web_host,
        web_port=web_port,
        series_filter=SeriesFilter(
            include_what=include_what,
            exclude_what=exclude_what,
            feature_what=feature_what,
            include_feature=include_feature,
            exclude_feature=exclude_feature,
        ),
        expire_after_windows=expire_after_windows,
        lookback_seconds=lookback_seconds,
    )
    shutdown = Shutdown()
    shutdown.install_signal_handlers()
    log.info("prometheus sink: %s -> http://%s:%d/metrics", metrics_topic, web_host, web_port)
    try:
        PrometheusSink(config).run(shutdown)
    except OSError as error:
        raise click.ClickException(f"cannot serve on {web_host}:{web_port}: {error}") from None
