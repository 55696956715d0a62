"""MLWatcher: Kafka-native monitoring of machine-learning classifiers in production."""

__version__ = "0.1.0"
