"""Quiet failure logs: while Kafka is unreachable, one line per interval instead of a flood.

librdkafka reports a failed connection attempt every few tens of milliseconds, both as a log
line and through ``error_cb``. :class:`OutageLog` takes the ``error_cb`` reports, counts them
and logs at most one WARNING per ``interval`` saying what is down and for how long, then one
INFO line once the errors stop. :func:`client_logging` routes librdkafka's own log lines to
Python logging and demotes the per-attempt connection failures to DEBUG;
:class:`SummarisingFilter` does the same for clients that only log (aiokafka).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

#: librdkafka log facilities of a failed connection attempt (covered by OutageLog's summary)
_CONNECTION_FACILITIES = ("FAIL",)


class OutageLog:
    """Summarises a stream of client errors as one log line per ``interval`` seconds.

    ``errors`` counts every error reported since creation (for the process's metrics).
    ``down`` is how the WARNING line says what is wrong ("unreachable", "failing", "full").
    Thread-safe: errors may come from several threads.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        down: str = "unreachable",
    ) -> None:
        self.what = what
        self.down = down
        self._lock = threading.Lock()
        self.errors = 0
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._since: float | None = None  # first error of the current outage
        self._last_error_at = 0.0
        self._last_logged_at = 0.0
        self._unlogged = 0
        self._last_error = ""

    @property
    def down_since(self) -> float | None:
        """Clock time of the first error of the outage in progress, if any."""
        return self._since

    def error(self, error: Any) -> None:
        """One error (a KafkaError or any object whose ``str`` says what failed)."""
        with self._lock:
            self._error(error)

    def _error(self, error: Any) -> None:
        now = self._clock()
        self.errors += 1
        self._unlogged += 1
        describe = getattr(error, "str", None)  # KafkaError.str(): the text without the code
        self._last_error = describe() if callable(describe) else str(error)
        self._last_error_at = now
        if self._since is None:
            self._since = now
            self._emit(now)
        elif now - self._last_logged_at >= self._interval:
            self._emit(now)

    def tick(self) -> None:
        """Call now and then (e.g. once per poll loop): ends an outage once errors stopped."""
        with self._lock:
            self._tick()

    def _tick(self) -> None:
        if self._since is None:
            return
        now = self._clock()
        if now - self._last_error_at >= self._interval:
            self._log.info(
                "%s: no errors for %.0f s, back to normal (the outage lasted %.0f s, %d errors)",
                self.what,
                now - self._last_error_at,
                self._last_error_at - self._since,
                self._unlogged,
            )
            self._since = None
            self._unlogged = 0

    def _emit(self, now: float) -> None:
        assert self._since is not None
        self._log.warning(
            "%s %s for %.0f s (%d errors since the last line): %s",
            self.what,
            self.down,
            now - self._since,
            self._unlogged,
            self._last_error,
        )
        self._last_logged_at = now
        self._unlogged = 0


class SummarisingFilter(logging.Filter):
    """For clients that log their errors instead of reporting them (aiokafka, Faust): each
    record at WARNING or above is counted by ``outage`` and swallowed, so the outage log's
    one line per interval replaces the flood. Install with
    ``logging.getLogger("aiokafka").addFilter(SummarisingFilter(outage))`` and call
    ``outage.tick()`` now and then."""

    def __init__(self, outage: OutageLog, level: int = logging.WARNING) -> None:
        super().__init__()
        self.outage = outage
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        self.outage.error(record.getMessage())
        return False


class _DemoteConnectionFailures(logging.Filter):
    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno > logging.DEBUG and message.startswith(_CONNECTION_FACILITIES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._logger.isEnabledFor(logging.DEBUG)
        return True


def client_logging(name: str = "mlwatcher.librdkafka") -> logging.Logger:
    """The logger to pass as a confluent-kafka client's ``logger`` option."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DemoteConnectionFailures) for f in logger.filters):
        logger.addFilter(_DemoteConnectionFailures(logger))
    return logger


def quiet_client_config(outage: OutageLog) -> dict[str, Any]:
    """confluent-kafka options that send errors to ``outage`` and logs to Python logging."""
    return {"error_cb": outage.error, "logger": client_logging()}
