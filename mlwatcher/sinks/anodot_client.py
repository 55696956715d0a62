"""HTTP client for Anodot's Metrics 2.0 endpoint: rate limit, retries, partial resends.

The data-collection token travels in the URL's query string, so every error message or log
line that could contain the URL is passed through :meth:`AnodotClient.redact`, exceptions
are re-raised without their (token-bearing) cause, and urllib3's debug log of request lines
is filtered while a client is open.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

import requests

from mlwatcher.sinks.anodot_format import AnodotPoint
from mlwatcher.sinks.rate_limit import RateLimitAborted, RateLimiter
from mlwatcher.sinks.retry import BackoffPolicy, Outcome, Verdict, classify_response
from mlwatcher.sinks.shutdown import Abandoned

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anodot.com"
MAX_POINTS_PER_REQUEST = 1000
REDACTED = "<redacted>"


class AnodotError(RuntimeError):
    """Anodot could not take the points; the message never contains the token."""


class AnodotFatalError(AnodotError):
    """A problem no retry can fix (bad token, wrong URL): stop, commit nothing."""


class AnodotUnavailableError(AnodotError):
    """Retryable failures went on for more than the allowed number of attempts."""


class SendAborted(Abandoned):
    """The caller's abort event was set while a request was waiting or being retried."""


@dataclass
class SendReport:
    """How one call to :meth:`AnodotClient.send` went."""

    #: index into the sent list -> reason, for points Anodot refused for good
    rejected: dict[int, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0


class _RedactingFilter(logging.Filter):
    def __init__(self, client: AnodotClient) -> None:
        super().__init__()
        self._client = client

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._client.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")


class AnodotClient:
    """Sends Metrics 2.0 points; one instance per sink process (it holds the rate limit).

    :meth:`send` returns only when every point is accepted or refused for good, retrying
    the rest with exponential backoff and full jitter. Requests go one at a time, so the
    points of a series reach Anodot in the order they were given.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate_limiter: RateLimiter,
        backoff: BackoffPolicy | None = None,
        timeout: float = 10.0,
        max_points_per_request: int = MAX_POINTS_PER_REQUEST,
        session: requests.Session | None = None,
    ) -> None:
        if not token:
            raise ValueError("token: the Anodot data-collection token must not be empty")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http(s) URL, got {base_url!r}")
        if not 1 <= max_points_per_request <= MAX_POINTS_PER_REQUEST:
            raise ValueError(
                f"max_points_per_request must be in 1..{MAX_POINTS_PER_REQUEST}, "
                f"got {max_points_per_request}"
            )
        if max_points_per_request > rate_limiter.budget:
            raise ValueError(
                f"max_points_per_request={max_points_per_request} exceeds the rate limit's "
                f"budget of {rate_limiter.budget} points per {rate_limiter.window:g} s"
            )
        self.url = base_url.rstrip("/") + "/api/v1/metrics"
        self._token = token
        self._secrets = {token, quote(token, safe=""), quote_plus(token)}
        self.limiter = rate_limiter
        self.backoff = backoff or BackoffPolicy()
        self.timeout = timeout
        self.max_points_per_request = max_points_per_request
        self._session = session or requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        self._filter = _RedactingFilter(self)
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)

    def __repr__(self) -> str:
        return f"AnodotClient(url={self.url!r}, token={REDACTED})"

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def close(self) -> None:
        self._session.close()
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def __enter__(self) -> AnodotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self, points: Sequence[AnodotPoint], abort: threading.Event | None = None
    ) -> SendReport:
        """Deliver ``points`` (at most ``max_points_per_request``); see the class docstring."""
        if len(points) > self.max_points_per_request:
            raise ValueError(
                f"{len(points)} points in one request, at most "
                f"{self.max_points_per_request} allowed"
            )
        report = SendReport()
        # Pieces still to deliver, in order; a 400 splits a piece in two.
        pieces: deque[list[int]] = deque([list(range(len(points)))] if points else [])
        attempt = 0
        while pieces:
            indices = pieces[0]
            outcome = self._post([points[i] for i in indices], abort)
            report.requests += 1
            for local, reason in outcome.rejected.items():
                report.rejected[indices[local]] = reason
            if outcome.verdict is Verdict.DONE:
                pieces.popleft()
                attempt = 0
            elif outcome.verdict is Verdict.SPLIT:
                pieces.popleft()
                middle = len(indices) // 2
                pieces.appendleft(indices[middle:])
                pieces.appendleft(indices[:middle])
            elif outcome.verdict is Verdict.FATAL:
                raise AnodotFatalError(f"Anodot refused the request: {self.redact(outcome.reason)}")
            else:
                pieces[0] = [indices[local] for local in outcome.retry]
                attempt += 1
                report.retries += 1
                if self.backoff.exhausted(attempt):
                    raise AnodotUnavailableError(
                        f"giving up after {attempt} attempts: {self.redact(outcome.reason)}"
                    )
                delay = self.backoff.delay(attempt - 1, outcome.retry_after)
                log.warning(
                    "Anodot: %s; resending %d points in %.2f s (attempt %d)",
                    self.redact(outcome.reason),
                    len(pieces[0]),
                    delay,
                    attempt + 1,
                )
                if abort is None:
                    time.sleep(delay)
                elif abort.wait(delay):
                    raise SendAborted("aborted while waiting to retry")
        return report

    def _post(self, points: list[AnodotPoint], abort: threading.Event | None) -> Outcome:
        body = json.dumps(points, separators=(",", ":"), allow_nan=False).encode()
        try:
            permit = self.limiter.acquire(len(points), abort)
        except RateLimitAborted:
            raise SendAborted("aborted while waiting for the rate limit") from None
        try:
            response = self._session.post(
                self.url,
                params={"token": self._token, "protocol": "anodot20"},
                data=body,
                timeout=self.timeout,
            )
        except requests.Timeout:
            return Outcome(
                Verdict.RETRY, retry=list(range(len(points))), reason=f"timeout ({self.timeout} s)"
            )
        except requests.RequestException as error:
            reason = f"{type(error).__name__}: {self.redact(str(error))}"
            return Outcome(Verdict.RETRY, retry=list(range(len(points))), reason=reason)
        finally:
            permit.release()
        return classify_response(
            response.status_code,
            response.content,
            len(points),
            response.headers.get("Retry-After"),
        )
