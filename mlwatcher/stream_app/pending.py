"""Prediction rows waiting for a delayed label: a vectorised id index, bounded by age and count.

An agent's prediction batches that carry ``prediction_ids`` stay here after their rows were
counted, so a label sent later (a :class:`~mlwatcher.schemas.LabelBatch`) can find its row by
id hash. Per row only what the label metrics need is kept: the id hash (8 bytes), the
predicted class (2), the probabilities (4 per class, float32 as on the wire), its window (8)
and two flags (2), plus 16 bytes in the index: 36 + 4·C bytes, 76 bytes at 10 classes.

A batch is *live* until it is ``ttl`` older than the agent's stream time or, when the agent
holds more than ``max_rows`` live rows, until it is the oldest (by offset); then it
*expires*: its data goes and only its ids stay, so a label that comes too late is told apart
from one that never had a prediction, for one more ttl (and at most ``max_rows`` ids), after
which the batch is *forgotten*.

Every row has a global number (in arrival order). The index is a log-structured merge of
sorted runs of (id, row number), runs of similar size merged on insert; the rows' data sit
in column arrays indexed by row number (compacted as old rows expire). So adding a batch and
joining a batch of labels cost O(log) per row, with numpy doing the per-row work.
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
    live: bool = True
    first_row: int = -1  # global number of row 0

    @property
    def n_rows(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Expiry:
    expired: list[PendingBatch]
    forgotten: list[PendingBatch]


class PendingRows:
    """One agent's pending prediction rows (all of one class count)."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.live: dict[int, PendingBatch] = {}  # by offset, insertion (= offset) order
        self.expired: dict[int, PendingBatch] = {}  # by offset, expiry order
        self.live_rows = 0
        self.expired_rows = 0
        self._by_age: list[tuple[int, int]] = []  # heap of (event time, offset), lazy
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted ids, row numbers)
        self._starts: list[int] = []  # first_row of every indexed batch, ascending
        self._indexed: list[PendingBatch | None] = []  # aligned with _starts; None: forgotten
        self._alive: np.ndarray | None = None  # cache: which indexed batches are not forgotten
        self._next_row = 0
        # Row data by row number - base: only rows from base on have data.
        self._base = 0
        self._probs = np.empty((0, n_classes), np.float32)
        self._predicted = np.empty(0, np.int16)
        self._window = np.empty(0, np.int64)
        self._labelled = np.empty(0, bool)
        self._is_live = np.empty(0, bool)

    def __contains__(self, offset: int) -> bool:
        return offset in self.live or offset in self.expired

    def __bool__(self) -> bool:
        return bool(self.live or self.expired)

    @property
    def nbytes(self) -> int:
        """Bytes held for the live rows and the expired ids (data, index, ids)."""
        per_live = 4 * self.n_classes + 2 + 8 + 1 + 1
        rows = self.live_rows + self.expired_rows
        return per_live * self.live_rows + (8 + INDEX_BYTES_PER_ROW) * rows

    def oldest_offset(self) -> int | None:
        """The smallest offset still known (live or expired)."""
        return min(next(iter(d)) for d in (self.live, self.expired) if d) if self else None

    # -- changes ------------------------------------------------------------------------------
    def add(
        self,
        batch: PendingBatch,
        predicted: np.ndarray | None = None,
        probs: np.ndarray | None = None,
        labelled: np.ndarray | None = None,
    ) -> None:
        """Index a batch: live with its rows' data, or (restored as such) already expired."""
        n = batch.n_rows
        batch.first_row = self._next_row
        self._next_row += n
        self._starts.append(batch.first_row)
        self._indexed.append(batch)
        self._alive = None
        if batch.live:
            assert predicted is not None and probs is not None and labelled is not None
            at = self._reserve(n)
            self._probs[at : at + n] = probs
            self._predicted[at : at + n] = predicted
            self._window[at : at + n] = batch.window_start_ms
            self._labelled[at : at + n] = labelled
            self._is_live[at : at + n] = True
            self.live[batch.offset] = batch
            self.live_rows += n
            heapq.heappush(self._by_age, (batch.event_time_ms, batch.offset))
        else:
            at = self._reserve(n)
            self._is_live[at : at + n] = False
            self.expired[batch.offset] = batch
            self.expired_rows += n
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
        return Expiry(expired, self._forget_due(stream_time_ms, ttl_ms, max_rows))

    def expire_all(self) -> list[PendingBatch]:
        return [self._expire(offset) for offset in list(self.live)]

    def _expire(self, offset: int) -> PendingBatch:
        batch = self.live.pop(offset)
        self.live_rows -= batch.n_rows
        batch.live = False
        at = batch.first_row - self._base
        self._is_live[at : at + batch.n_rows] = False
        self.expired[offset] = batch
        self.expired_rows += batch.n_rows
        return batch

    def _forget_due(self, stream_time_ms: int, ttl_ms: int, max_rows: int) -> list[PendingBatch]:
        forgotten = []
        while self.expired:
            oldest = next(iter(self.expired.values()))
            if self.expired_rows <= max_rows and oldest.event_time_ms + 2 * ttl_ms > stream_time_ms:
                break
            self.expired.pop(oldest.offset)
            self.expired_rows -= oldest.n_rows
            self._indexed[int(np.searchsorted(self._starts, oldest.first_row))] = None
            self._alive = None
            forgotten.append(oldest)
        return forgotten

    # -- rows ---------------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row number of each id (-1: unknown or forgotten); of two equal ids, the newer one.

        Sorted ids search several times faster (memory order), so the caller may pass them so.
        """
        found = np.full(ids.shape[0], -1, np.int64)
        for run_ids, run_rows in reversed(self._runs):  # newest run first
            if not run_ids.size:
                continue
            # the rightmost equal id: within a merged run, the newer of two equal ids
            pos = np.searchsorted(run_ids, ids, side="right") - 1
            np.maximum(pos, 0, out=pos)
            hit = run_ids[pos] == ids
            hit &= found < 0
            found[hit] = run_rows[pos[hit]]
        known = found >= 0
        if known.any():
            found[known] = np.where(self._rows_known(found[known]), found[known], -1)
        return found

    def is_live(self, rows: np.ndarray) -> np.ndarray:
        """Whether each known row (>= 0) still has its data (not expired)."""
        at = rows - self._base
        out = at >= 0
        out[out] = self._is_live[at[out]]
        return out

    def labelled(self, rows: np.ndarray) -> np.ndarray:
        return self._labelled.take(rows - self._base)

    def mark_labelled(self, rows: np.ndarray) -> None:
        self._labelled[rows - self._base] = True

    def data(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, predicted class, window start) of live rows."""
        at = rows - self._base
        # take(): several times faster than fancy indexing for a gather of rows
        predicted = self._predicted.take(at).astype(np.intp)
        return self._probs.take(at, axis=0), predicted, self._window.take(at)

    def batch_of(self, row: int) -> PendingBatch:
        batch = self._indexed[int(np.searchsorted(self._starts, row, side="right")) - 1]
        assert batch is not None
        return batch

    # -- internals ----------------------------------------------------------------------------
    def _reserve(self, n: int) -> int:
        """Room for ``n`` new rows' data; returns where the first goes."""
        end = self._next_row - self._base  # _next_row already counts the new rows
        if end > self._probs.shape[0]:
            oldest_live = next(iter(self.live.values())).first_row if self.live else None
            keep_from = (self._next_row - n) if oldest_live is None else oldest_live
            keep = slice(keep_from - self._base, self._next_row - n - self._base)
            capacity = max(1024, 2 * (self._next_row - keep_from))
            probs = np.empty((capacity, self.n_classes), np.float32)
            columns = [np.empty(capacity, a.dtype) for a in self._row_columns()]
            kept = keep.stop - keep.start
            probs[:kept] = self._probs[keep]
            for new, old in zip(columns, self._row_columns(), strict=True):
                new[:kept] = old[keep]
            self._probs = probs
            self._predicted, self._window, self._labelled, self._is_live = columns
            self._base = keep_from
        return self._next_row - n - self._base

    def _row_columns(self) -> list[np.ndarray]:
        return [self._predicted, self._window, self._labelled, self._is_live]

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
