"""``mlwatcher topics create``: create the pipeline's topics with explicit partition counts."""

from __future__ import annotations

import click

from mlwatcher.config import kafka_options, parse_kafka_options


@click.group()
def topics() -> None:
    """Manage the pipeline's Kafka topics."""


@topics.command("create")
@kafka_options
@click.option(
    "--partitions",
    envvar="MLWATCHER_PARTITIONS",
    default=6,
    show_default=True,
    help="Partitions of the predictions and metrics topics (the most workers that can share "
    "the load) [env MLWATCHER_PARTITIONS].",
)
@click.option(
    "--replication-factor",
    envvar="MLWATCHER_REPLICATION_FACTOR",
    default=1,
    show_default=True,
    help="Replicas per partition (3 on a production cluster) [env MLWATCHER_REPLICATION_FACTOR].",
)
def create(
    bootstrap_servers: str,
    kafka_option: tuple[str, ...],
    predictions_topic: str,
    metrics_topic: str,
    dead_letter_topic: str,
    partitions: int,
    replication_factor: int,
) -> None:
    """Create the predictions, metrics and dead-letter topics (existing ones are kept)."""
    from mlwatcher.kafka_admin import create_topics

    names = {predictions_topic: partitions, metrics_topic: partitions, dead_letter_topic: 1}
    create_topics(
        bootstrap_servers,
        names,
        replication_factor=replication_factor,
        client_config=parse_kafka_options(kafka_option),
    )
    for name, count in names.items():
        click.echo(f"topic {name}: {count} partitions")
