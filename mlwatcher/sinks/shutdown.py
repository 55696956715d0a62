"""Graceful stop for sink processes: first SIGTERM/Ctrl-C drains, a second one (or a grace
period running out) abandons in-flight retries. Nothing is committed for abandoned work, so
it is delivered again after the restart."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class Abandoned(Exception):
    """Raised by a sink that gave up on unsent work because ``Shutdown.abort`` is set."""


class Shutdown:
    """``stopping``: stop consuming, finish and commit what is buffered.
    ``abort``: give up on sending what is left (it stays uncommitted)."""

    def __init__(self, grace_seconds: float = 30.0) -> None:
        self.stopping = threading.Event()
        self.abort = threading.Event()
        self.grace_seconds = grace_seconds
        self._timer: threading.Timer | None = None

    def request_stop(self) -> None:
        if self.stopping.is_set():
            self.abort.set()
            return
        self.stopping.set()
        self._timer = threading.Timer(self.grace_seconds, self.abort.set)
        self._timer.daemon = True
        self._timer.start()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT call :meth:`request_stop` (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.stopping.is_set():
                log.warning("%s again: abandoning unsent points (they stay uncommitted)", name)
            else:
                log.info(
                    "%s: draining (flush, commit); again or %.0f s later abandons the rest",
                    name,
                    self.grace_seconds,
                )
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
