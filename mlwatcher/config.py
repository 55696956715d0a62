"""Configuration shared by every ``mlwatcher`` command.

Precedence, lowest first: built-in defaults < config file (TOML) < environment variables
(``MLWATCHER_*``) < command-line flags. The config file's top-level keys apply to every command;
a table named after a command (``[worker]``, ``[sink.parquet]``) applies to that command only.
Keys are the commands' parameter names, listed as "config key" in docs/cli.md (mostly the long
flag with ``_`` for ``-``: ``bootstrap_servers``, ``metrics_topic``, ``output_dir``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_PREDICTIONS_TOPIC = "mlwatcher.predictions"
DEFAULT_METRICS_TOPIC = "mlwatcher.metrics"
DEFAULT_DEAD_LETTER_TOPIC = "mlwatcher.dead-letter"

F = TypeVar("F", bound=Callable[..., Any])


def parse_kafka_options(pairs: Iterable[str]) -> dict[str, str]:
    """``-X sasl.mechanism=PLAIN`` style librdkafka options into a dict."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE (a librdkafka option), got {pair!r}")
        options[key.strip()] = value.strip()
    return options


ALL_TOPICS = ("predictions", "metrics", "dead_letter")


def kafka_options(
    func: F | None = None, *, topics: tuple[str, ...] = ALL_TOPICS
) -> F | Callable[[F], F]:
    """Flags every Kafka-facing command shares: ``@kafka_options``, or
    ``@kafka_options(topics=("metrics", "dead_letter"))`` for a command that uses only those
    topics (a flag a command would ignore is not offered)."""
    topic_options = {
        "predictions": click.option(
            "--predictions-topic",
            envvar="MLWATCHER_PREDICTIONS_TOPIC",
            default=DEFAULT_PREDICTIONS_TOPIC,
            show_default=True,
            help="Topic of prediction batches [env MLWATCHER_PREDICTIONS_TOPIC].",
        ),
        "metrics": click.option(
            "--metrics-topic",
            envvar="MLWATCHER_METRICS_TOPIC",
            default=DEFAULT_METRICS_TOPIC,
            show_default=True,
            help="Topic of metric records [env MLWATCHER_METRICS_TOPIC].",
        ),
        "dead_letter": click.option(
            "--dead-letter-topic",
            envvar="MLWATCHER_DEAD_LETTER_TOPIC",
            default=DEFAULT_DEAD_LETTER_TOPIC,
            show_default=True,
            help="Topic for refused input, with the reason in headers "
            "[env MLWATCHER_DEAD_LETTER_TOPIC].",
        ),
    }
    unknown = set(topics) - set(topic_options)
    if unknown:
        raise ValueError(f"kafka_options: unknown topics {sorted(unknown)}")
    options = [
        click.option(
            "--bootstrap-servers",
            "-b",
            envvar="MLWATCHER_BOOTSTRAP_SERVERS",
            default=DEFAULT_BOOTSTRAP_SERVERS,
            show_default=True,
            help="Kafka bootstrap servers [env MLWATCHER_BOOTSTRAP_SERVERS].",
        ),
        click.option(
            "--kafka-option",
            "-X",
            "kafka_option",
            multiple=True,
            envvar="MLWATCHER_KAFKA_OPTIONS",
            help="Extra librdkafka option KEY=VALUE, repeatable (SASL/SSL...) "
            "[env MLWATCHER_KAFKA_OPTIONS, space-separated].",
        ),
        *(topic_options[name] for name in ALL_TOPICS if name in topics),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate if func is None else decorate(func)


def load_config_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise click.BadParameter(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"config file {path} is not valid TOML: {exc}") from exc


def default_map_for(group: click.Group, config: dict[str, Any], ctx: click.Context) -> dict:
    """Click's nested default_map: top-level scalar keys reach every (sub)command."""
    common = {key: value for key, value in config.items() if not isinstance(value, dict)}
    return _defaults(group, config, common, ctx)


def _defaults(
    group: click.Group, section: dict[str, Any], common: dict, ctx: click.Context
) -> dict:
    result: dict[str, Any] = dict(common)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        own = section.get(name, {}) if isinstance(section.get(name), dict) else {}
        own_scalars = {k: v for k, v in own.items() if not isinstance(v, dict)}
        if isinstance(command, click.Group):
            result[name] = _defaults(command, own, {**common, **own_scalars}, ctx)
        else:
            result[name] = {**common, **own_scalars}
    return result


_DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"500ms"``, ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` (or plain milliseconds) in ms."""
    value = text.strip().lower()
    for unit in sorted(_DURATION_UNITS_MS, key=len, reverse=True):
        if value.endswith(unit):
            number = value.removesuffix(unit)
            break
    else:
        unit, number = "ms", value
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(
            f"expected a duration like 500ms, 90s, 15m, 24h or 7d, got {text!r}"
        ) from None
    if amount < 0:
        raise ValueError(f"a duration must be >= 0, got {text!r}")
    return round(amount * _DURATION_UNITS_MS[unit])


class DurationType(click.ParamType):
    """A click parameter for :func:`parse_duration_ms` (the value is in milliseconds)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration_ms(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
