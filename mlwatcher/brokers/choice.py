"""Pick a local broker: Apache Kafka when this machine can run it, else Tansu."""

from __future__ import annotations

import os
import shutil
from typing import Literal

from mlwatcher.brokers._process import ManagedBroker
from mlwatcher.brokers.apache_kafka import ApacheKafkaBroker
from mlwatcher.brokers.kafka_jars import KafkaJarFetchError, ensure_kafka_jars
from mlwatcher.brokers.tansu import TansuBroker

BrokerChoice = Literal["auto", "apache-kafka", "tansu"]


def apache_kafka_unavailable_reason() -> str | None:
    """Why Apache Kafka cannot run here (no Java, jars not fetchable), or ``None``.

    Fetches and caches the jars as a side effect when they are missing.
    """
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java on PATH (and JAVA_HOME unset)"
    try:
        ensure_kafka_jars()
    except KafkaJarFetchError as error:
        return str(error)
    return None


def local_broker(choice: BrokerChoice = "auto") -> ManagedBroker:
    """An unstarted local broker. ``"auto"`` means Apache Kafka if possible, else Tansu."""
    if choice == "tansu":
        return TansuBroker()
    if choice == "apache-kafka":
        return ApacheKafkaBroker()
    if choice == "auto":
        return ApacheKafkaBroker() if apache_kafka_unavailable_reason() is None else TansuBroker()
    raise ValueError(f"broker choice must be 'auto', 'apache-kafka' or 'tansu', got {choice!r}")
