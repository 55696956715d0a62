"""Publish a model's predictions to Kafka: ``MonitoringAgent(...).collect_data(proba, X, y)``,
and labels that arrive later: ``collect_labels(ids, y)``."""

from mlwatcher.prediction_ids import hash_prediction_ids
from mlwatcher.producer.agent import DEFAULT_TOPIC, PRODUCER_DEFAULTS, MonitoringAgent
from mlwatcher.validation import InvalidBatchError

__all__ = [
    "DEFAULT_TOPIC",
    "PRODUCER_DEFAULTS",
    "InvalidBatchError",
    "MonitoringAgent",
    "hash_prediction_ids",
]
