"""A points-per-second limit that holds when measured at the server (pure logic + a clock).

A classic token bucket lets ``capacity + rate * T`` points through in any interval ``T``:
with 1000-point requests and 2000 points/s that is up to 3000 points in one second as
counted by Anodot, which answers 2003 ("metrics per second limit"). This limiter instead
keeps a log of recent sends and admits a request only if, together with everything sent in
the last ``window`` seconds, it stays within ``rate * window``. A send's slot is counted
from its start until ``window`` seconds after its *response* arrived: the server saw the
request somewhere in between, so any ``window``-long interval of arrival times at the server
holds at most ``rate * window`` points. (Burst = one window's budget; the long-run average
is ``rate``.) Thread-safe: one limiter is shared by everything a sink process sends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class RateLimitAborted(Exception):
    """Waiting for the rate limit was interrupted by the abort event."""


@dataclass
class _Slot:
    points: int
    ended_at: float | None = None  # None while the request is in flight


@dataclass
class Permit:
    """Admission of one request; call :meth:`release` when its response (or error) is in."""

    _limiter: RateLimiter
    _slot: _Slot
    _released: bool = field(default=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self._slot)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RateLimiter:
    """At most ``rate * window`` points in any ``window``-second interval at the server."""

    def __init__(
        self,
        rate: float,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 points/s, got {rate}")
        if window <= 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        self.rate = rate
        self.window = window
        self.budget = int(rate * window)
        if self.budget < 1:
            raise ValueError(f"rate * window must allow at least one point, got {rate * window}")
        self._clock = clock
        self._slots: deque[_Slot] = deque()
        self._in_window = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def _expire(self, now: float) -> None:
        # Slots end in release order, which is not strictly their queue order when several
        # threads send at once; scan past in-flight slots instead of stopping at them.
        kept: deque[_Slot] = deque()
        for slot in self._slots:
            if slot.ended_at is not None and slot.ended_at + self.window <= now:
                self._in_window -= slot.points
            else:
                kept.append(slot)
        self._slots = kept

    def wait_time(self, points: int) -> float:
        """Seconds until ``points`` could be admitted (0 if now); inf while blocked by in-flight."""
        with self._lock:
            return self._wait_time_locked(points, self._clock())

    def _wait_time_locked(self, points: int, now: float) -> float:
        self._expire(now)
        if self._in_window + points <= self.budget:
            return 0.0
        # Free the oldest finished slots until the request fits.
        needed = self._in_window + points - self.budget
        ends = sorted(
            (slot.ended_at, slot.points) for slot in self._slots if slot.ended_at is not None
        )
        freed = 0
        for ended_at, slot_points in ends:
            freed += slot_points
            if freed >= needed:
                return max(0.0, ended_at + self.window - now)
        return float("inf")  # only an in-flight request's release can make room

    def try_acquire(self, points: int) -> Permit | None:
        """A permit if ``points`` fit now, else None (never blocks)."""
        self._check(points)
        with self._lock:
            if self._wait_time_locked(points, self._clock()) > 0:
                return None
            return self._admit(points)

    def acquire(self, points: int, abort: threading.Event | None = None) -> Permit:
        """Block until ``points`` fit; RateLimitAborted if ``abort`` is set meanwhile."""
        self._check(points)
        with self._lock:
            while True:
                if abort is not None and abort.is_set():
                    raise RateLimitAborted("aborted while waiting for the rate limit")
                delay = self._wait_time_locked(points, self._clock())
                if delay <= 0:
                    return self._admit(points)
                # Wake up at the expiry time, on a release, or to look at the abort flag.
                self._changed.wait(timeout=min(delay, 0.1))

    def _check(self, points: int) -> None:
        if points < 1:
            raise ValueError(f"points must be >= 1, got {points}")
        if points > self.budget:
            raise ValueError(
                f"a request of {points} points can never fit a limit of {self.rate:g} points/s "
                f"over {self.window:g} s ({self.budget} points); send smaller requests"
            )

    def _admit(self, points: int) -> Permit:
        slot = _Slot(points)
        self._slots.append(slot)
        self._in_window += points
        return Permit(self, slot)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.ended_at = self._clock()
            self._changed.notify_all()
