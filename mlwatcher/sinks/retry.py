"""What to do with an Anodot answer, and how long to wait before trying again (pure logic).

Anodot reports trouble three ways: transport failures (no answer, timeout), HTTP status
codes, and HTTP 200 with an ``errors`` array naming the index of each bad point and a code.
Retryable: transport failures, 429, 5xx and the 2002 (too many concurrent requests) /
2003 (metrics-per-second limit) entries. Property problems (2004-2012) are permanent for
that point. A 400 for a whole request means some point in it is bad; the client splits the
request to find which.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

RETRYABLE_ERROR_CODES = frozenset({2002, 2003})
#: Codes that mean the whole request (token, format) is wrong: no point can succeed.
FATAL_ERROR_CODES = frozenset({1001, 2001})


class Verdict(Enum):
    DONE = "done"  # every point accepted, or rejected for good (see ``rejected``)
    RETRY = "retry"  # resend ``retry`` (indices) after a backoff
    SPLIT = "split"  # the request as a whole was refused for its content: bisect it
    FATAL = "fatal"  # configuration problem (token, URL): stop the sink, commit nothing


@dataclass
class Outcome:
    verdict: Verdict
    #: indices (into the request) to resend
    retry: list[int] = field(default_factory=list)
    #: index -> reason, rejected for good
    rejected: dict[int, str] = field(default_factory=dict)
    reason: str = ""
    retry_after: float | None = None


def classify_response(
    status: int, body: bytes, n_points: int, retry_after_header: str | None = None
) -> Outcome:
    """Interpret one HTTP answer to a request of ``n_points`` points."""
    retry_after = _parse_retry_after(retry_after_header)
    if status == 429 or 500 <= status <= 599:
        return Outcome(
            Verdict.RETRY,
            retry=list(range(n_points)),
            reason=f"HTTP {status}",
            retry_after=retry_after,
        )
    if status in (400, 413):
        if n_points > 1:
            return Outcome(Verdict.SPLIT, reason=f"HTTP {status}: {_snippet(body)}")
        return Outcome(Verdict.DONE, rejected={0: f"HTTP {status}: {_snippet(body)}"})
    if status != 200:
        return Outcome(Verdict.FATAL, reason=f"HTTP {status}: {_snippet(body)}")
    return _classify_errors_array(body, n_points)


def _classify_errors_array(body: bytes, n_points: int) -> Outcome:
    if not body.strip():
        return Outcome(Verdict.DONE)
    try:
        document = json.loads(body)
    except ValueError:
        return Outcome(Verdict.DONE)  # 200 with a non-JSON body: Anodot took the points
    errors = document.get("errors") if isinstance(document, dict) else None
    if not errors:
        return Outcome(Verdict.DONE)
    retry: set[int] = set()
    rejected: dict[int, str] = {}
    for entry in errors:
        if not isinstance(entry, dict):
            continue
        code = _int_or_none(entry.get("error", entry.get("code")))
        description = str(entry.get("description", entry.get("message", "")))
        index = _int_or_none(entry.get("index"))
        if index is None or not 0 <= index < n_points:
            # An error about the whole request.
            if code in RETRYABLE_ERROR_CODES:
                return Outcome(Verdict.RETRY, retry=list(range(n_points)), reason=f"{code}")
            return Outcome(Verdict.FATAL, reason=f"Anodot error {code}: {description}")
        if code in RETRYABLE_ERROR_CODES:
            retry.add(index)
        elif code in FATAL_ERROR_CODES:
            return Outcome(Verdict.FATAL, reason=f"Anodot error {code}: {description}")
        else:
            rejected[index] = f"Anodot error {code}: {description}"
    retry -= rejected.keys()
    verdict = Verdict.RETRY if retry else Verdict.DONE
    reason = f"Anodot errors 2002/2003 for {len(retry)} points" if retry else ""
    return Outcome(verdict, retry=sorted(retry), rejected=rejected, reason=reason)


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _parse_retry_after(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None  # HTTP-date form: ignore, our own backoff applies


def _snippet(body: bytes, limit: int = 200) -> str:
    return body[:limit].decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: delay ~ U(0, min(cap, base * 2**attempt)).

    Full jitter spreads the retries of many sink processes so they do not hit Anodot in
    lock-step after an outage. ``max_attempts`` None retries until the sink is stopped:
    the data waits in Kafka meanwhile, nothing is committed or lost.
    """

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"need 0 < base <= cap, got base={self.base}, cap={self.cap}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts}")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay after failed attempt number ``attempt`` (0-based)."""
        return min(self.cap, self.base * 2 ** min(attempt, 62))

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        jittered = uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            return max(jittered, min(retry_after, self.cap))
        return jittered

    def exhausted(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts
