"""Classification of Anodot answers and the backoff policy."""

from __future__ import annotations

import json

import pytest

from mlwatcher.sinks.retry import BackoffPolicy, Verdict, classify_response


def _errors(*entries: dict[str, object]) -> bytes:
    return json.dumps({"errors": list(entries)}).encode()


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_throttling_and_server_errors_retry_everything(status: int) -> None:
    outcome = classify_response(status, b"", 3, retry_after_header="2")
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry == [0, 1, 2]
    assert outcome.retry_after == 2.0


def test_200_without_errors_is_done() -> None:
    assert classify_response(200, b"{}", 5).verdict is Verdict.DONE
    assert classify_response(200, b"", 5).verdict is Verdict.DONE


def test_200_with_rate_errors_retries_only_those_points() -> None:
    body = _errors(
        {"index": 3, "error": 2003, "description": "mps"},
        {"index": 1, "error": 2002, "description": "concurrent"},
        {"index": 4, "error": 2008, "description": "bad chars"},
    )
    outcome = classify_response(200, body, 5)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry == [1, 3]
    assert outcome.rejected == {4: "Anodot error 2008: bad chars"}


def test_property_errors_only_are_done_with_rejections() -> None:
    outcome = classify_response(200, _errors({"index": 0, "code": 2005}), 2)
    assert outcome.verdict is Verdict.DONE
    assert 0 in outcome.rejected and "2005" in outcome.rejected[0]


def test_token_and_parse_errors_are_fatal() -> None:
    assert classify_response(200, _errors({"error": 2001}), 2).verdict is Verdict.FATAL
    assert classify_response(401, b"", 2).verdict is Verdict.FATAL
    assert classify_response(404, b"", 2).verdict is Verdict.FATAL


def test_400_splits_until_single_point_is_rejected() -> None:
    assert classify_response(400, b"bad", 2).verdict is Verdict.SPLIT
    single = classify_response(400, b"bad point", 1)
    assert single.verdict is Verdict.DONE
    assert single.rejected == {0: "HTTP 400: bad point"}


def test_full_jitter_stays_below_exponential_ceiling() -> None:
    policy = BackoffPolicy(base=0.5, cap=8.0)
    assert [policy.ceiling(a) for a in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert policy.delay(3, uniform=lambda lo, hi: hi) == 4.0
    assert policy.delay(3, uniform=lambda lo, hi: lo) == 0.0
    assert policy.delay(0, retry_after=5.0, uniform=lambda lo, hi: lo) == 5.0
    delays = [policy.delay(2) for _ in range(500)]
    assert all(0 <= d <= 2.0 for d in delays) and max(delays) > 1.0


def test_attempt_limit() -> None:
    assert not BackoffPolicy().exhausted(10**6)
    assert BackoffPolicy(max_attempts=3).exhausted(3)
    with pytest.raises(ValueError, match="max_attempts"):
        BackoffPolicy(max_attempts=0)
