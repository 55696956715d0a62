"""Prediction rows waiting for a delayed label: a vectorised id index, bounded by age and count.

An agent's prediction batches that carry ``prediction_ids`` stay here after their rows were
counted, so a label sent later (a :class:`~mlwatcher.schemas.LabelBatch`) can find its row by
id hash. Per row only what the label metrics need is kept: the id hash (8 bytes), the
predicted class (2), the probabilities (4 per class, float32 as on the wire) and a labelled
flag (1), plus 16 bytes in the index: 8 + 2 + 4·C + 1 + 16 bytes, 67 bytes at 10 classes.

A batch is *live* until it is ``ttl`` older than the agent's stream time or, when the agent
holds more than ``max_rows`` live rows, until it is the oldest (by offset); then it
*expires*: its data goes and only its ids stay, so a label that comes too late is told apart
from one that never had a prediction, for one more ttl (and at most ``max_rows`` ids), after
which the batch is *forgotten*.

The index is a log-structured merge of sorted runs (numpy ``searchsorted`` per run, runs of
similar size merged on insert), so adding a batch and looking up a batch of labels cost
O(log) per row with no per-row Python work.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

#: index bytes per row: the sorted id (8) and the row's global number (8)
INDEX_BYTES_PER_ROW = 16


@dataclass
class PendingBatch:
    offset: int  # the prediction batch's source offset: its identity and its age order
    window_start_ms: int
    event_time_ms: int
    ids: np.ndarray  # (n,) uint64
    predicted: np.ndarray | None  # (n,) int16; None once expired
    probs: np.ndarray | None  # (n, C) float32; None once expired
    labelled: np.ndarray | None  # (n,) bool; None once expired
    first_row: int = -1  # global number of row 0 in the index

    @property
    def live(self) -> bool:
        return self.probs is not None

    @property
    def n_rows(self) -> int:
        return int(self.ids.shape[0])

    def expire(self) -> None:
        self.predicted = self.probs = self.labelled = None

    @property
    def nbytes(self) -> int:
        parts = [self.ids, self.predicted, self.probs, self.labelled]
        return sum(p.nbytes for p in parts if p is not None) + INDEX_BYTES_PER_ROW * self.n_rows


@dataclass(frozen=True)
class Lookup:
    """Where each looked-up id is: ``batch_index`` into :attr:`batches` (-1: unknown id)."""

    batches: list[PendingBatch]
    batch_index: np.ndarray  # (k,) int64
    row: np.ndarray  # (k,) int64, row within its batch


@dataclass(frozen=True)
class Expiry:
    expired: list[PendingBatch]
    forgotten: list[PendingBatch]


class PendingRows:
    """One agent's pending prediction rows."""

    def __init__(self) -> None:
        self.live: dict[int, PendingBatch] = {}  # by offset, insertion (= offset) order
        self.expired: dict[int, PendingBatch] = {}  # by offset, expiry order
        self.live_rows = 0
        self.expired_rows = 0
        self._by_age: list[tuple[int, int]] = []  # heap of (event time, offset), lazy
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted ids, global rows)
        self._starts: list[int] = []  # first_row of every indexed batch, ascending
        self._indexed: list[PendingBatch | None] = []  # aligned with _starts; None: forgotten
        self._next_row = 0
        self._alive: np.ndarray | None = None  # cache: which indexed batches are not forgotten

    def __contains__(self, offset: int) -> bool:
        return offset in self.live or offset in self.expired

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.live.values()) + sum(
            b.nbytes for b in self.expired.values()
        )

    def oldest_offset(self) -> int | None:
        """The smallest offset still known (live or expired)."""
        return min(next(iter(d)) for d in (self.live, self.expired) if d) if self else None

    def __bool__(self) -> bool:
        return bool(self.live or self.expired)

    # -- changes ------------------------------------------------------------------------------
    def add(self, batch: PendingBatch) -> None:
        """Index a batch (live, or already expired when restored as such)."""
        batch.first_row = self._next_row
        self._next_row += batch.n_rows
        self._starts.append(batch.first_row)
        self._indexed.append(batch)
        self._alive = None
        if batch.live:
            self.live[batch.offset] = batch
            self.live_rows += batch.n_rows
            heapq.heappush(self._by_age, (batch.event_time_ms, batch.offset))
        else:
            self.expired[batch.offset] = batch
            self.expired_rows += batch.n_rows
        order = np.argsort(batch.ids, kind="stable")
        rows = np.arange(batch.first_row, self._next_row, dtype=np.int64)
        self._runs.append((batch.ids[order], rows[order]))
        while len(self._runs) > 1 and self._runs[-2][0].size <= 2 * self._runs[-1][0].size:
            self._merge_last_two()

    def expire_due(self, stream_time_ms: int, ttl_ms: int, max_rows: int) -> Expiry:
        """Expire what is past ``ttl_ms`` or beyond ``max_rows``; forget what is past both."""
        expired: list[PendingBatch] = []
        heap = self._by_age
        while heap and heap[0][0] + ttl_ms <= stream_time_ms:
            _, offset = heapq.heappop(heap)
            if offset in self.live:
                expired.append(self._expire(offset))
        while self.live_rows > max_rows:
            expired.append(self._expire(next(iter(self.live))))
        forgotten: list[PendingBatch] = []
        while self.expired:
            oldest = next(iter(self.expired.values()))
            if self.expired_rows <= max_rows and oldest.event_time_ms + 2 * ttl_ms > stream_time_ms:
                break
            forgotten.append(self._forget(oldest.offset))
        return Expiry(expired, forgotten)

    def _expire(self, offset: int) -> PendingBatch:
        batch = self.live.pop(offset)
        self.live_rows -= batch.n_rows
        batch.expire()
        self.expired[offset] = batch
        self.expired_rows += batch.n_rows
        return batch

    def _forget(self, offset: int) -> PendingBatch:
        batch = self.expired.pop(offset)
        self.expired_rows -= batch.n_rows
        slot = int(np.searchsorted(self._starts, batch.first_row))
        self._indexed[slot] = None
        self._alive = None
        return batch

    # -- lookup -------------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> Lookup:
        """Find each id's row; where an id was sent twice, the newer prediction wins."""
        found = np.full(ids.shape[0], -1, np.int64)
        for run_ids, run_rows in reversed(self._runs):  # newest run first
            if not run_ids.size:
                continue
            # the rightmost equal id: within a merged run, the newer of two equal ids
            pos = np.searchsorted(run_ids, ids, side="right") - 1
            np.maximum(pos, 0, out=pos)
            hit = (run_ids[pos] == ids) & (found < 0)
            found[hit] = run_rows[pos[hit]]
        batch_index = np.full(ids.shape[0], -1, np.int64)
        row = np.zeros(ids.shape[0], np.int64)
        has = found >= 0
        if has.any():
            starts = np.asarray(self._starts, np.int64)
            slot = np.searchsorted(starts, found[has], side="right") - 1
            known = self._alive_mask()[slot]
            batch_index[np.flatnonzero(has)[known]] = slot[known]
            row[np.flatnonzero(has)[known]] = found[has][known] - starts[slot[known]]
        return Lookup(self._indexed, batch_index, row)  # type: ignore[arg-type]

    def _merge_last_two(self) -> None:
        (ids_b, rows_b), (ids_a, rows_a) = self._runs.pop(), self._runs.pop()
        ids = np.concatenate((ids_a, ids_b))
        rows = np.concatenate((rows_a, rows_b))
        keep = self._rows_known(rows)
        if not keep.all():
            ids, rows = ids[keep], rows[keep]
        order = np.argsort(ids, kind="stable")  # two sorted runs: a linear merge
        self._runs.append((ids[order], rows[order]))
        self._compact_starts()

    def _rows_known(self, rows: np.ndarray) -> np.ndarray:
        starts = np.asarray(self._starts, np.int64)
        return self._alive_mask()[np.searchsorted(starts, rows, side="right") - 1]

    def _alive_mask(self) -> np.ndarray:
        if self._alive is None:
            self._alive = np.fromiter(
                (b is not None for b in self._indexed), bool, len(self._indexed)
            )
        return self._alive

    def _compact_starts(self) -> None:
        """Drop forgotten batches from the front of the row map once no run refers to them."""
        first_referenced = min((int(rows.min()) for _, rows in self._runs if rows.size), default=0)
        drop = 0
        while (
            drop < len(self._indexed) - 1
            and self._indexed[drop] is None
            and self._starts[drop + 1] <= first_referenced
        ):
            drop += 1
        if drop:
            del self._starts[:drop], self._indexed[:drop]
            self._alive = None
