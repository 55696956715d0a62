"""A local HTTP server that behaves like Anodot's Metrics 2.0 endpoint, for tests and demos.

``POST /api/v1/metrics?token=...&protocol=anodot20`` with a JSON array of points. Like
Anodot it checks the token (401), the JSON (200 + error 1001), the request size (400 above
``max_points``) and every point's properties (200 + an ``errors`` entry with the point's
index). Its error codes for property problems, in the 2004-2012 range Anodot uses:

====  =====================================================
2004  ``what`` missing / properties not an object
2005  more than 20 properties
2006  property key longer than 50 characters
2007  property value longer than 150 characters
2008  non-ASCII, ``.``, space or empty key/value
2009  timestamp not an integer number of epoch seconds
2010  value not a finite number
2011  target_type not gauge/counter
2012  refused on purpose (``reject_what``)
====  =====================================================

Faults can be injected for the next N requests or for a time span: HTTP 429 / 500, slow
answers (the points are taken on arrival, the answer comes after ``delay`` seconds, as when
Anodot is slow to respond), and HTTP 200 with ``errors`` 2002/2003 for some indices.
Every accepted point is recorded with its arrival time; every request too.

    with FakeAnodot(token="secret") as server:
        server.inject(Fault("status", status=429, count=3))
        ... AnodotClient(server.base_url, "secret", ...) ...
        server.wait_for(lambda s: s.accepted_count() >= 100, timeout=10)
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

MAX_PROPERTIES = 20
MAX_KEY_LENGTH = 50
MAX_VALUE_LENGTH = 150


@dataclass
class Fault:
    """One injected misbehaviour.

    kind: ``"status"`` (answer ``status``), ``"slow"`` (take the points, answer after
    ``delay`` s), ``"errors"`` (200 with ``errors`` of ``code`` for ``indices``; None = all).
    Applies to the next ``count`` requests, or until ``seconds`` from now (whichever is set).
    """

    kind: Literal["status", "slow", "errors"]
    status: int = 500
    delay: float = 0.0
    code: int = 2003
    indices: list[int] | None = None
    count: int | None = 1
    seconds: float | None = None
    retry_after: float | None = None
    _until: float = field(default=0.0, repr=False)


@dataclass(frozen=True)
class AcceptedPoint:
    arrival: float  # time.monotonic() when the request arrived
    request_id: int
    properties: tuple[tuple[str, str], ...]
    timestamp: int
    value: float

    @property
    def series(self) -> tuple[tuple[str, str], ...]:
        return self.properties


@dataclass(frozen=True)
class RequestLog:
    request_id: int
    arrival: float
    n_points: int
    status: int
    accepted: int
    fault: str | None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or get killed reset their connections: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeAnodot:
    def __init__(self, token: str = "test-token", max_points: int = 1000) -> None:
        self.token = token
        self.max_points = max_points
        self.reject_what: dict[str, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[Fault] = []
        self._accepted: list[AcceptedPoint] = []
        self._requests: list[RequestLog] = []
        self._request_ids = itertools.count()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnodot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAnodot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        if fault.seconds is not None:
            fault.count = None
            fault._until = time.monotonic() + fault.seconds
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- observations --------------------------------------------------------------------
    def accepted(self) -> list[AcceptedPoint]:
        with self._lock:
            return list(self._accepted)

    def accepted_count(self) -> int:
        with self._lock:
            return len(self._accepted)

    def requests(self) -> list[RequestLog]:
        with self._lock:
            return list(self._requests)

    def wait_for(self, condition: Callable[[FakeAnodot], bool], timeout: float) -> None:
        """Wait until ``condition(self)`` holds; AssertionError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"fake Anodot: condition not met within {timeout} s "
                    f"({self.accepted_count()} points accepted, {len(self.requests())} requests)"
                )
            with self._changed:
                self._changed.wait(min(remaining, 0.1))

    def max_points_in_window(self, window: float) -> int:
        """Most points received (accepted or not) within any ``window``-second span."""
        arrivals = sorted((r.arrival, r.n_points) for r in self.requests() if r.n_points)
        best = total = start = 0
        for end in range(len(arrivals)):
            total += arrivals[end][1]
            while arrivals[end][0] - arrivals[start][0] >= window:
                total -= arrivals[start][1]
                start += 1
            best = max(best, total)
        return best

    # -- request handling ----------------------------------------------------------------
    def _active_fault(self) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            for fault in list(self._faults):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
                if now < fault._until:
                    return fault
                self._faults.remove(fault)
        return None

    def _handle(self, path: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str], float]:
        arrival = time.monotonic()
        url = urlsplit(path)
        query = parse_qs(url.query)
        if url.path != "/api/v1/metrics":
            return 404, {"errors": [{"description": "not found"}]}, {}, 0.0
        if query.get("token") != [self.token]:
            return 401, {"errors": [{"error": 2001, "description": "invalid token"}]}, {}, 0.0
        if query.get("protocol") != ["anodot20"]:
            return 400, {"errors": [{"description": "protocol=anodot20 expected"}]}, {}, 0.0
        try:
            points = json.loads(body)
        except ValueError:
            return 200, {"errors": [{"error": 1001, "description": "JSON parse error"}]}, {}, 0.0
        if not isinstance(points, list):
            return 200, {"errors": [{"error": 1001, "description": "array expected"}]}, {}, 0.0
        if len(points) > self.max_points:
            self._log(arrival, len(points), 400, 0, None)
            return 400, {"errors": [{"description": f"more than {self.max_points}"}]}, {}, 0.0
        fault = self._active_fault()
        fault_name = None if fault is None else f"{fault.kind}:{fault.status}:{fault.code}"
        if fault is not None and fault.kind == "status":
            self._log(arrival, len(points), fault.status, 0, fault_name)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return fault.status, {"errors": [{"description": "injected"}]}, headers, 0.0
        errors: list[dict[str, Any]] = []
        failed: set[int] = set()
        if fault is not None and fault.kind == "errors":
            chosen = range(len(points)) if fault.indices is None else fault.indices
            for index in chosen:
                if 0 <= index < len(points):
                    errors.append({"index": index, "error": fault.code, "description": "injected"})
                    failed.add(index)
        accepted: list[AcceptedPoint] = []
        request_id = next(self._request_ids)
        for index, point in enumerate(points):
            if index in failed:
                continue
            problem = self._check_point(point)
            if problem is not None:
                errors.append({"index": index, "error": problem[0], "description": problem[1]})
                continue
            accepted.append(
                AcceptedPoint(
                    arrival,
                    request_id,
                    tuple(sorted(point["properties"].items())),
                    point["timestamp"],
                    float(point["value"]),
                )
            )
        with self._changed:
            self._accepted.extend(accepted)
        self._log(arrival, len(points), 200, len(accepted), fault_name, request_id)
        delay = fault.delay if fault is not None and fault.kind == "slow" else 0.0
        return 200, ({"errors": errors} if errors else {}), {}, delay

    def _log(
        self,
        arrival: float,
        n: int,
        status: int,
        accepted: int,
        fault: str | None,
        request_id: int | None = None,
    ) -> None:
        with self._changed:
            if request_id is None:
                request_id = next(self._request_ids)
            self._requests.append(RequestLog(request_id, arrival, n, status, accepted, fault))
            self._changed.notify_all()

    def _check_point(self, point: Any) -> tuple[int, str] | None:
        if not isinstance(point, dict) or not isinstance(point.get("properties"), dict):
            return 2004, "properties object missing"
        properties: dict[str, Any] = point["properties"]
        if "what" not in properties:
            return 2004, "what is mandatory"
        if len(properties) > MAX_PROPERTIES:
            return 2005, f"more than {MAX_PROPERTIES} properties"
        for key, value in properties.items():
            if len(key) > MAX_KEY_LENGTH:
                return 2006, f"key {key!r} too long"
            if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
                return 2007, f"value of {key!r} too long or not a string"
            for text in (key, value):
                if not text or not text.isascii() or "." in text or " " in text:
                    return 2008, f"invalid characters in {key!r}={value!r}"
        if properties.get("target_type", "gauge") not in ("gauge", "counter"):
            return 2011, "target_type must be gauge or counter"
        timestamp = point.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp <= 0:
            return 2009, "timestamp must be epoch seconds"
        value = point.get("value")
        if not isinstance(value, int | float) or not math.isfinite(value):
            return 2010, "value must be a finite number"
        if properties["what"] in self.reject_what:
            return self.reject_what[properties["what"]], f"what={properties['what']} refused"
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real service
            # Headers and body leave in two writes; with Nagle on, the body waits for the
            # client's delayed ACK (~40 ms per request), which no real HTTP server imposes.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, document, headers, delay = fake._handle(self.path, body)
                if delay:
                    time.sleep(delay)
                payload = json.dumps(document).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the token: never print it

        return Handler


def series_in_order(points: list[AcceptedPoint]) -> Iterator[tuple[Any, list[int]]]:
    """Per series, the timestamps in arrival order (first arrival of each timestamp)."""
    by_series: dict[Any, list[int]] = {}
    seen: set[tuple[Any, int]] = set()
    for point in sorted(points, key=lambda p: (p.arrival, p.request_id)):
        if (point.series, point.timestamp) in seen:
            continue
        seen.add((point.series, point.timestamp))
        by_series.setdefault(point.series, []).append(point.timestamp)
    yield from by_series.items()
