"""Request batching (size, one point per series) and commit bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwatcher.sinks.batching import OffsetTracker, RequestBatcher


def _batch_all(items: list[tuple[int, str]], max_points: int) -> list[list[tuple[int, str]]]:
    batcher: RequestBatcher[tuple[int, str]] = RequestBatcher(max_points)
    batches = []
    for item in items:
        complete = batcher.add(item, item[1])
        if complete:
            batches.append(complete)
    last = batcher.take()
    if last:
        batches.append(last)
    return batches


@given(
    st.lists(st.sampled_from("abcdefgh"), max_size=300),
    st.integers(min_value=1, max_value=50),
)
def test_batches_keep_order_size_and_series_uniqueness(series: list[str], max_points: int) -> None:
    items = list(enumerate(series))
    batches = _batch_all(items, max_points)
    assert [item for batch in batches for item in batch] == items
    for batch in batches:
        assert 1 <= len(batch) <= max_points
        names = [s for _, s in batch]
        assert len(names) == len(set(names))


def test_full_batch_is_returned_at_once() -> None:
    batcher: RequestBatcher[int] = RequestBatcher(2)
    assert batcher.add(1, "a") is None
    assert batcher.add(2, "b") == [1, 2]
    assert len(batcher) == 0


def test_invalid_size() -> None:
    with pytest.raises(ValueError, match="max_points"):
        RequestBatcher(0)


def test_offsets_become_committable_only_when_all_points_resolved() -> None:
    tracker = OffsetTracker()
    tracker.add_record("t", 0, 10, 3)
    tracker.add_record("t", 1, 5, 0)  # no points: done once everything before it is
    tracker.add_record("t", 0, 11, 2)
    assert tracker.take_committable() == {}
    tracker.resolve(2)
    assert tracker.take_committable() == {}
    tracker.resolve(1)
    assert tracker.take_committable() == {("t", 0): 11, ("t", 1): 6}
    tracker.resolve(2)
    assert tracker.take_committable() == {("t", 0): 12}
    assert tracker.unresolved_points == 0


def test_record_without_points_first_is_done_at_once() -> None:
    tracker = OffsetTracker()
    tracker.add_record("t", 3, 7, 0)
    assert tracker.take_committable() == {("t", 3): 8}


def test_cannot_resolve_more_than_added() -> None:
    tracker = OffsetTracker()
    tracker.add_record("t", 0, 0, 1)
    with pytest.raises(ValueError, match="only 1 pending"):
        tracker.resolve(2)
