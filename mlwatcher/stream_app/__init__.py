"""Faust stream workers: per-agent event-time tumbling windows -> one metric record each.

``mlwatcher worker`` (see :mod:`.cli`) or ``faust -A mlwatcher.stream_app.app worker`` run it;
:class:`~mlwatcher.stream_app.windows.WindowManager` holds the Kafka-free window logic.
"""

from mlwatcher.stream_app.settings import WindowPolicy, WorkerSettings

__all__ = ["WindowPolicy", "WorkerSettings"]
