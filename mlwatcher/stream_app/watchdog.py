"""Stall detection: a worker that owns lagging partitions but makes no progress must say so.

Pure: :class:`StallDetector` is fed what the worker owns, how far it has applied each
partition and where each partition ends; it answers which partitions are stalled. The wiring
logs, counts and remedies (first by resuming and re-seeking the consumer, then by exiting
non-zero so the supervisor restarts the worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_STALL_TIMEOUT_S = 20.0


@dataclass
class _Watch:
    next_offset: int | None
    since: float


@dataclass
class StallDetector:
    timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    _watches: dict[int, _Watch] = field(default_factory=dict)
    stalled_since: float | None = None

    def observe(
        self,
        now: float,
        next_offsets: Mapping[int, int | None],
        end_offsets: Mapping[int, int],
        *,
        busy: bool,
    ) -> dict[int, int]:
        """Stalled partitions and their lag, given each owned partition's next offset to apply.

        A partition stalls when it has lag and its next offset has not moved for
        ``timeout_s``. A worker busy inside one long batch is not stalled (it is slow).
        """
        for p in list(self._watches):
            if p not in next_offsets:
                del self._watches[p]
        stalled: dict[int, int] = {}
        for p, next_offset in next_offsets.items():
            watch = self._watches.get(p)
            if watch is None or watch.next_offset != next_offset:
                self._watches[p] = watch = _Watch(next_offset, now)
            end = end_offsets.get(p)
            if end is None or next_offset is None:
                continue
            lag = end - next_offset
            if busy:
                watch.since = now
            elif lag > 0 and now - watch.since >= self.timeout_s:
                stalled[p] = lag
        if stalled and self.stalled_since is None:
            self.stalled_since = now
        elif not stalled:
            self.stalled_since = None
        return stalled
