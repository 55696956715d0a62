"""The Anodot client against the fake Anodot server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from fake_anodot import FakeAnodot, Fault

from mlwatcher.metrics import Point
from mlwatcher.sinks.anodot_client import (
    AnodotClient,
    AnodotFatalError,
    AnodotUnavailableError,
)
from mlwatcher.sinks.anodot_format import AnodotPoint, to_anodot_point
from mlwatcher.sinks.rate_limit import RateLimiter
from mlwatcher.sinks.retry import BackoffPolicy

TOKEN = "s3cr3t-T0KEN-value"
FAST_BACKOFF = BackoffPolicy(base=0.01, cap=0.05)


@pytest.fixture
def server() -> Iterator[FakeAnodot]:
    with FakeAnodot(token=TOKEN) as fake:
        yield fake


def _points(n: int, what: str = "w", start: int = 0) -> list[AnodotPoint]:
    return [
        to_anodot_point(
            "agent", 1_700_000_000_000, Point(what, "gauge", float(i), class_name=str(i))
        )
        for i in range(start, start + n)
    ]


def _client(base_url: str, token: str = TOKEN, **kwargs: object) -> AnodotClient:
    options: dict[str, object] = {
        "rate_limiter": RateLimiter(100_000),
        "backoff": FAST_BACKOFF,
        "timeout": 2.0,
    }
    options.update(kwargs)
    return AnodotClient(base_url, token, **options)  # type: ignore[arg-type]


def _accepted_values(server: FakeAnodot) -> list[float]:
    return sorted(p.value for p in server.accepted())


def test_all_points_accepted_once(server: FakeAnodot) -> None:
    with _client(server.base_url) as client:
        report = client.send(_points(50))
    assert report.rejected == {} and report.requests == 1
    assert _accepted_values(server) == [float(i) for i in range(50)]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_throttling_and_server_errors(server: FakeAnodot, status: int) -> None:
    server.inject(Fault("status", status=status, count=2))
    with _client(server.base_url) as client:
        report = client.send(_points(10))
    assert report.retries == 2
    assert _accepted_values(server) == [float(i) for i in range(10)]


def test_resends_only_the_points_reported_2002_2003(server: FakeAnodot) -> None:
    server.inject(Fault("errors", code=2003, indices=[1, 3], count=1))
    server.inject(Fault("errors", code=2002, indices=[0], count=1))
    with _client(server.base_url) as client:
        report = client.send(_points(5))
    sizes = [r.n_points for r in server.requests()]
    assert sizes == [5, 2, 1]
    assert report.retries == 2
    assert _accepted_values(server) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_property_errors_are_rejected_with_reason(server: FakeAnodot) -> None:
    server.reject_what["bad"] = 2012
    points = _points(3) + _points(2, what="bad", start=10)
    with _client(server.base_url) as client:
        report = client.send(points)
    assert sorted(report.rejected) == [3, 4]
    assert all("2012" in reason for reason in report.rejected.values())
    assert len(server.requests()) == 1  # no retry of permanent errors


def test_request_refused_as_a_whole_is_split(server: FakeAnodot) -> None:
    server.max_points = 3
    with _client(server.base_url) as client:
        report = client.send(_points(8))
    assert report.rejected == {}
    assert _accepted_values(server) == [float(i) for i in range(8)]
    assert [r.n_points for r in server.requests()] == [8, 4, 2, 2, 4, 2, 2]


def test_slow_answer_times_out_and_is_resent(server: FakeAnodot) -> None:
    server.inject(Fault("slow", delay=1.0, count=1))
    with _client(server.base_url, timeout=0.3) as client:
        report = client.send(_points(4))
    assert report.retries == 1
    # The slow request was taken by the server: the resend duplicates it (Anodot
    # de-duplicates by series + timestamp). Nothing is lost.
    assert _accepted_values(server) == sorted([float(i) for i in range(4)] * 2)


def test_bad_token_is_fatal_and_not_in_the_message(server: FakeAnodot) -> None:
    client = _client(server.base_url, token="wrong-" + TOKEN)
    with client, pytest.raises(AnodotFatalError) as raised:
        client.send(_points(1))
    assert TOKEN not in str(raised.value)
    assert raised.value.__cause__ is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_token_never_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{_free_port()}"
    client = _client(url, backoff=BackoffPolicy(base=0.01, cap=0.02, max_attempts=2))
    with client, pytest.raises(AnodotUnavailableError) as raised:
        client.send(_points(2))
    assert "ConnectionError" in str(raised.value)
    assert TOKEN not in str(raised.value) and TOKEN not in repr(client)
    assert (raised.value.__cause__ is None and raised.value.__context__ is None) or (
        TOKEN not in str(raised.value.__context__)
    )
    assert caplog.records, "expected retry warnings in the log"
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_token_not_in_urllib3_debug_log(
    server: FakeAnodot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _client(server.base_url) as client:
        client.send(_points(1))
    request_lines = [r.getMessage() for r in caplog.records if "POST" in r.getMessage()]
    assert request_lines, "urllib3 should log the request line at DEBUG"
    assert all(TOKEN not in line for line in request_lines)


def test_rate_measured_at_the_server_stays_within_limit(server: FakeAnodot) -> None:
    limiter = RateLimiter(400)
    with _client(server.base_url, rate_limiter=limiter, max_points_per_request=100) as client:
        for start in range(0, 1200, 100):
            client.send(_points(100, start=start))
    assert server.accepted_count() == 1200
    assert server.max_points_in_window(1.0) <= 400
    first, last = server.requests()[0].arrival, server.requests()[-1].arrival
    assert last - first >= 2.0  # 1200 points at 400/s cannot go faster


def test_request_larger_than_allowed_is_a_caller_error(server: FakeAnodot) -> None:
    client = _client(server.base_url, max_points_per_request=10)
    with client, pytest.raises(ValueError, match="at most 10"):
        client.send(_points(11))
