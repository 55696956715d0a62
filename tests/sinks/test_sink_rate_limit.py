"""The sliding-window rate limit, driven by a fake clock, and a check against real time."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwatcher.sinks.rate_limit import RateLimitAborted, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_then_wait_until_the_window_passes() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2000, clock=clock)
    first = limiter.try_acquire(1000)
    assert first is not None
    clock.now = 0.010
    first.release()
    second = limiter.try_acquire(1000)
    assert second is not None
    clock.now = 0.020
    second.release()
    assert limiter.try_acquire(1) is None
    # the first slot counts until 1 s after its response (t = 0.010), now is 0.020
    assert limiter.wait_time(1000) == pytest.approx(0.99)
    clock.now = 1.0101
    assert limiter.try_acquire(1000) is not None


def test_in_flight_request_blocks_until_released() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    permit = limiter.try_acquire(100)
    assert permit is not None
    clock.now = 50.0
    assert limiter.wait_time(1) == float("inf")
    permit.release()
    assert limiter.wait_time(1) == pytest.approx(1.0)


def test_request_bigger_than_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="never fit"):
        RateLimiter(500).try_acquire(501)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=300),  # points per request
            st.floats(min_value=0, max_value=0.3),  # gap before trying
            st.floats(min_value=0, max_value=0.2),  # request duration
            st.floats(min_value=0, max_value=1),  # where in the request the server sees it
        ),
        max_size=60,
    )
)
def test_any_window_at_the_server_stays_within_budget(
    requests: list[tuple[int, float, float, float]],
) -> None:
    """Simulate sequential requests; arrival at the server is anywhere within the request."""
    clock = FakeClock()
    limiter = RateLimiter(300, window=1.0, clock=clock)
    arrivals: list[tuple[float, int]] = []
    for points, gap, duration, where in requests:
        clock.now += gap
        clock.now += limiter.wait_time(points)
        permit = limiter.try_acquire(points)
        assert permit is not None
        arrivals.append((clock.now + where * duration, points))
        clock.now += duration
        permit.release()
    arrivals.sort()
    for i, (start, _) in enumerate(arrivals):
        in_window = sum(n for t, n in arrivals[i:] if t < start + 1.0)
        assert in_window <= 300


def test_acquire_blocks_in_real_time_and_can_be_aborted() -> None:
    limiter = RateLimiter(50, window=0.5)  # budget 25 per 0.5 s
    limiter.acquire(25).release()
    started = time.monotonic()
    limiter.acquire(25).release()
    assert time.monotonic() - started >= 0.45
    abort = threading.Event()
    threading.Timer(0.1, abort.set).start()
    with pytest.raises(RateLimitAborted):
        limiter.acquire(25, abort)
