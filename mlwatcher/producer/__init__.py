"""Publish a model's predictions to Kafka: ``MonitoringAgent(...).collect_data(proba, X, y)``."""

from mlwatcher.producer.agent import DEFAULT_TOPIC, PRODUCER_DEFAULTS, MonitoringAgent
from mlwatcher.validation import InvalidBatchError

__all__ = ["DEFAULT_TOPIC", "PRODUCER_DEFAULTS", "InvalidBatchError", "MonitoringAgent"]
