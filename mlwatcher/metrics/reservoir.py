"""A uniform reservoir sample of rows (probabilities, label and features of the same row).

Algorithm R, vectorised per batch: the row with 0-based stream index ``t`` enters slot ``t``
while the reservoir fills, afterwards it draws ``j`` uniformly in ``[0, t]`` and replaces
slot ``j`` when ``j < capacity``. Within one batch a later row that draws the same slot
overwrites an earlier one, exactly as the row-by-row algorithm would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlwatcher.metrics import kernels


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, slots=True)
class Sample:
    """The sampled rows of a window, as read-only views (no copy; valid until the next update).

    ``probabilities`` ``(n, C)``, ``labels`` ``(n,)`` (``-1``: row without label) and
    ``features_t`` ``(F, n)``, column-major because every statistic is computed per feature.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    features_t: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])


def fill_count(rows_seen_before: int, n_rows: int, capacity: int) -> int:
    """How many of a batch's first rows fill free slots (the rest may replace a row)."""
    return max(0, min(n_rows, capacity - rows_seen_before))


def replacement_draws(
    rows_seen_before: int, n_rows: int, capacity: int, rng: np.random.Generator
) -> tuple[int, np.ndarray]:
    """:func:`fill_count` of a batch and the uniforms its later rows draw from ``rng``
    (those of :func:`choose_slots`: the same draws give the same slots)."""
    n_fill = fill_count(rows_seen_before, n_rows, capacity)
    return n_fill, rng.random(n_rows - n_fill) if n_fill < n_rows else _NO_DRAWS


_NO_DRAWS = np.empty(0)


def choose_slots(
    rows_seen_before: int,
    n_rows: int,
    capacity: int,
    rng: np.random.Generator,
    *,
    compiled: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(slot, batch row index) pairs of the rows of a batch that end up in the reservoir,
    in increasing slot order. ``compiled``: :func:`kernels.replacement_slots` (the default
    with numba) or the NumPy code below; the same slots from the same draws."""
    n_fill = fill_count(rows_seen_before, n_rows, capacity)
    if n_fill == n_rows:
        fill_slots = np.arange(rows_seen_before, rows_seen_before + n_fill, dtype=np.int64)
        return fill_slots, np.arange(n_rows, dtype=np.int64)
    # Row t of the stream (0-based) replaces slot j = floor(u (t + 1)) if j < capacity, with u
    # uniform in [0, 1): j is uniform on [0, t] up to 2**-53 (u has 53 random bits), and one
    # draw of n floats costs a seventh of rng.integers with n different bounds.
    first = rows_seen_before + n_fill
    if kernels.use_compiled(compiled):
        uniforms = rng.random(n_rows - n_fill)
        return kernels.replacement_slots(uniforms, rows_seen_before, n_fill, capacity)
    scaled = rng.random(n_rows - n_fill)
    scaled *= np.arange(first + 1, rows_seen_before + n_rows + 1, dtype=np.float64)
    kept = np.flatnonzero(scaled < capacity)
    slots, rows = scaled[kept].astype(np.int64), kept
    if n_fill:
        slots = np.concatenate((np.arange(rows_seen_before, first, dtype=np.int64), slots))
        rows = np.concatenate((np.arange(n_fill, dtype=np.int64), rows + n_fill))
    else:
        rows += n_fill
    if slots.size < 2:
        return slots, rows
    # The last row that drew a slot wins: the last of each run of equal slots in a stable sort.
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    last = np.empty(ordered.size, bool)
    last[-1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=last[:-1])
    pick = order[last]
    return slots[pick], rows[pick]


class Reservoir:
    """Storage of the sampled rows; grows geometrically up to ``capacity`` to save memory.

    Features are stored column-major ``(n_features, rows)`` because every statistic is
    computed per feature.
    """

    def __init__(self, capacity: int, n_classes: int, n_features: int) -> None:
        self.capacity = capacity
        self.n_classes = n_classes
        self.n_features = n_features
        self.size = 0
        self._alloc(0)

    def _alloc(self, rows: int) -> None:
        self.probs = np.zeros((rows, self.n_classes), np.float64)
        self.labels = np.full(rows, -1, np.int64)
        self.features = np.full((self.n_features, rows), np.nan, np.float64)

    def _grow(self, needed: int) -> None:
        allocated = self.labels.size
        if needed <= allocated:
            return
        new = min(self.capacity, max(needed, 2 * allocated, 64))
        probs, labels, features = self.probs, self.labels, self.features
        self._alloc(new)
        self.probs[:allocated] = probs
        self.labels[:allocated] = labels
        self.features[:, :allocated] = features

    def write(
        self,
        slots: np.ndarray,
        probs: np.ndarray,
        labels: np.ndarray | None,
        features: np.ndarray | None,
    ) -> None:
        """Store rows at ``slots``, ascending (features row-major ``(k, n_features)``; None =
        missing)."""
        if slots.size == 0:
            return
        rows = slots.size
        kernels.scatter_rows(
            slots,
            np.asarray(probs, np.float64),
            np.full(rows, -1, np.int64) if labels is None else np.asarray(labels, np.int64),
            (
                np.full((rows, self.n_features), np.nan)
                if features is None
                else np.asarray(features, np.float64)
            ),
            self.writable(int(slots[-1]) + 1),
        )
        self.mark_written(slots)

    def writable(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The storage arrays (as :meth:`view`'s, past the filled slots), allocated for at
        least ``min(rows, capacity)`` rows: for a write, then :meth:`mark_written`."""
        self._grow(min(rows, self.capacity))
        return self.probs, self.labels, self.features

    def mark_written(self, slots: np.ndarray) -> None:
        """Count the ascending ``slots`` just written through :meth:`writable` as filled."""
        if slots.size:
            self.size = max(self.size, int(slots[-1]) + 1)

    def sample(self) -> Sample:
        probs, labels, features = self.view()
        return Sample(_read_only(probs), _read_only(labels), _read_only(features))

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs ``(n, C)``, labels ``(n,)``, features ``(F, n)``) of the filled slots."""
        n = self.size
        return self.probs[:n], self.labels[:n], self.features[:, :n]
