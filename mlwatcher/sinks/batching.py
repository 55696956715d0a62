"""Grouping points into Anodot requests, and knowing which Kafka offsets are then safe to commit.

Pure bookkeeping, no I/O. Requests are sent one after another, in the order the records
were consumed, so a point's position in that order is all the commit logic needs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class RequestBatcher(Generic[T]):
    """Cuts a stream of points into requests of at most ``max_points`` points.

    A request never holds two points of the same series: if a retry had to resend only the
    older of two such points, Anodot would already have seen the newer one and would drop
    the older one as out of order. Cutting the request there keeps every series in time
    order whatever part of a request fails.
    """

    def __init__(self, max_points: int) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.max_points = max_points
        self._items: list[T] = []
        self._series: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, series: Hashable) -> list[T] | None:
        """Queue ``item``; returns a request that is complete and must be sent first, if any."""
        full: list[T] | None = None
        if series in self._series or len(self._items) >= self.max_points:
            full = self.take()
        self._items.append(item)
        self._series.add(series)
        if len(self._items) >= self.max_points:
            if full is not None:  # cannot happen for max_points >= 1, kept for clarity
                raise AssertionError("two complete requests at once")
            return self.take()
        return full

    def take(self) -> list[T]:
        """Remove and return the queued (possibly partial) request."""
        items, self._items, self._series = self._items, [], set()
        return items


@dataclass
class _PendingRecord:
    topic: str
    partition: int
    offset: int
    last_point: int  # sequence number after the record's last point


class OffsetTracker:
    """Which consumed records are fully handled, as offsets to commit.

    Records are added in consumption order and their points numbered consecutively;
    points are resolved (accepted or dead-lettered) in the same order, so a record is done
    once the resolved count passes its last point. Committed offsets are ``offset + 1``.
    """

    def __init__(self) -> None:
        self._added = 0
        self._resolved = 0
        self._pending: deque[_PendingRecord] = deque()
        self._done: dict[tuple[str, int], int] = {}

    @property
    def unresolved_points(self) -> int:
        return self._added - self._resolved

    def add_record(self, topic: str, partition: int, offset: int, n_points: int) -> None:
        if n_points < 0:
            raise ValueError(f"n_points must be >= 0, got {n_points}")
        self._added += n_points
        self._pending.append(_PendingRecord(topic, partition, offset, self._added))
        self._advance()

    def resolve(self, n_points: int) -> None:
        """The next ``n_points`` points (in order) are accepted or dead-lettered."""
        if n_points < 0 or self._resolved + n_points > self._added:
            raise ValueError(
                f"cannot resolve {n_points} points: only {self._added - self._resolved} pending"
            )
        self._resolved += n_points
        self._advance()

    def _advance(self) -> None:
        while self._pending and self._pending[0].last_point <= self._resolved:
            record = self._pending.popleft()
            self._done[(record.topic, record.partition)] = record.offset + 1

    def take_committable(self) -> dict[tuple[str, int], int]:
        """Offsets (next offset to read) per partition that became committable since last call."""
        done, self._done = self._done, {}
        return done

    def forget(self) -> None:
        """Drop everything (partitions revoked without being able to finish)."""
        self._added = self._resolved = 0
        self._pending.clear()
        self._done.clear()
