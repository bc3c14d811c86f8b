"""Sandbox payment provider: a real HTTP server that speaks the gateway protocol.

Pure standard library (no Django) so it runs in a thread inside tests or as its own process
(``manage.py run_sandbox_provider``). Protocol, base URL ``PAYMENT_PROVIDER_URL``:

    POST /v1/payments               {"amount","currency","source","reference"} -> 201 / 402
    POST /v1/payments/<id>/capture  -> 200 {"status": "captured", ...}
    POST /v1/payments/<id>/refund   -> 200 {"status": "refunded", ...} (voids if uncaptured)
    GET  /v1/payments/<id>          -> 200 the payment
    GET  /v1/stats                  -> counters (operator endpoint: no auth, no rate limit)
    GET  /v1/sandbox/faults         -> the fault switches (operator endpoint, see below)
    POST /v1/sandbox/faults         -> set them, answers their new state

A payment reads ``{"id", "status", "amount", "currency", "reference", "captured",
"amount_captured", "amount_refunded"}``; ``status`` is ``authorized``, ``captured`` or
``refunded`` (a refunded authorization that was never captured is a void: ``captured`` false,
``amount_refunded`` "0.00").

Every /v1 call but the two operator endpoints needs ``Authorization: Bearer <key>``. POSTs may
carry an ``Idempotency-Key``: a repeat returns the stored first response with no new effect.

Rate limit: per API key, a request is admitted when fewer than ``rate_limit`` admitted requests
of that key arrived in the last ``window`` seconds (rolling, by arrival). Rejected requests do
not use up budget, like most real gateways, so a client that backs off for ``Retry-After``
always gets through. The limit is checked at arrival, before any simulated latency.

Test tokens: ``tok_ok`` authorizes; ``tok_declined`` answers 402 card_declined (final);
``tok_flaky`` answers 503 to the first two calls per Idempotency-Key (per reference without a
key), then authorizes; ``tok_slow`` authorizes after 2 s.

Faults, so a failure can be seen without stopping anything (``manage.py sandbox_faults``, or the
Python API ``set_outage`` / ``drop_answers_after_effect`` / ``clear_faults``; ``reset`` clears
them too). ``POST /v1/sandbox/faults`` takes a JSON object, every field optional, applied in
this order:

    {"clear": true}                                  switch every fault off first
    {"outage": true, "mode": "drop" | "503"}         an outage (mode defaults to "drop")
    {"outage": false}                                end the outage
    {"drop_after_effect": {"path": "/capture$", "count": 1, "method": "POST"}}

During an outage every /v1 call but the operator endpoints fails as a network failure would:
``drop`` closes the connection without an answer, ``503`` answers 503 ``unavailable``; nothing
takes effect and neither counts as a request (``outage_refused`` counts them).
``drop_after_effect`` loses the answer of the next ``count`` requests whose path matches the
regular expression ``path`` (``re.search``; ``method`` optional): the request takes effect (the
capture happens, counters move, an Idempotency-Key stores the answer) but the connection is
closed instead of answering, so the client sees a connection error. Only requests that took
effect (a 2xx answer) use up ``count``; ``answers_dropped`` counts them. No auth, no rate limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import secrets
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

TEST_TOKENS = frozenset({"tok_ok", "tok_declined", "tok_flaky", "tok_slow"})
FLAKY_FAILURES = 2
SLOW_DELAY = 2.0
MAX_BODY_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Outcomes of an operation that actually ran; validation errors and 5xx are not stored so the
# client can fix or retry the request under the same key (as real gateways do).
STORED_STATUSES = frozenset({200, 201, 402, 409})

_AMOUNT_RE = re.compile(r"\d{1,12}(?:\.\d{1,2})?")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_PAYMENT_PATH_RE = re.compile(r"/v1/payments/(?P<id>[A-Za-z0-9_]+)(?:/(?P<action>capture|refund))?")
_CENT = Decimal("0.01")
_EMPTY_BODY_FINGERPRINT = "{}"

_COUNTERS = (
    "requests",
    "rejected_429",
    "max_requests_in_any_1s",
    "payments",
    "captures",
    "refunds",
    "declined",
    "unavailable_503",
    "idempotent_replays",
    "outage_refused",
    "answers_dropped",
)
FAULTS_PATH = "/v1/sandbox/faults"
OUTAGE_MODES = ("drop", "503")


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _LostAnswerRule:
    pattern: re.Pattern[str]
    remaining: int
    method: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"path": self.pattern.pattern, "count": self.remaining, "method": self.method}


# Returned by dispatch() when the handler must close the connection without answering.
DROP_CONNECTION = Response(0, {})


@dataclass
class _IdempotencyEntry:
    fingerprint: str
    response: Response | None = None  # None while the first request is still running


class _BadRequestBody(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.response = _error(status, code, message)


def _error(status: int, code: str, message: str | None = None, **headers: str) -> Response:
    error: dict[str, str] = {"code": code}
    if message:
        error["message"] = message
    return Response(status, {"error": error}, headers)


def _invalid(message: str) -> Response:
    return _error(400, "invalid_request", message)


def _bearer_token(value: str | None) -> str | None:
    scheme, _, token = (value or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    """Return (payload, error); an empty body means an empty object."""
    if not body.strip():
        return {}, None
    try:
        return json.loads(body), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"body is not valid JSON: {exc}"


def _fingerprint(payload: Any, body: bytes) -> str:
    # Canonical JSON, so key order and whitespace do not make an identical retry look different.
    if payload is None:
        return "raw:" + hashlib.sha256(body).hexdigest()
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _validate_payment(payload: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(payload, dict):
        return None, "body must be a JSON object"
    missing = [
        name for name in ("amount", "currency", "source", "reference") if name not in payload
    ]
    if missing:
        return None, f"missing field(s): {', '.join(missing)}"
    amount, currency = payload["amount"], payload["currency"]
    source, reference = payload["source"], payload["reference"]
    if not isinstance(amount, str) or not _AMOUNT_RE.fullmatch(amount) or Decimal(amount) <= 0:
        return None, "amount must be a positive decimal string with at most two decimal places"
    if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency):
        return None, "currency must be a three-letter upper-case ISO 4217 code"
    if not isinstance(source, str) or not source.startswith("tok_"):
        return None, "source must be a payment token (tok_...)"
    if source not in TEST_TOKENS:
        return None, f"unknown token {source!r}; sandbox tokens: {', '.join(sorted(TEST_TOKENS))}"
    if isinstance(reference, bool) or not isinstance(reference, str | int) or reference == "":
        return None, "reference must be a non-empty string or an integer"
    return {
        "amount": str(Decimal(amount).quantize(_CENT)),
        "currency": currency,
        "source": source,
        "reference": reference,
    }, None


def _max_in_window(times: list[float], width: float) -> int:
    """Most timestamps in any half-open window [t, t + width), for sorted ``times``.

    The best window can always start at a timestamp, and [t_i, t_i + width) holds the same points
    as (t_k - width, t_k] for its last point t_k, so one sweep over the ends finds it.
    """
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


class SandboxProvider:
    """The sandbox gateway; see the module docstring for the protocol."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int | None = 2,
        window: float = 1.0,
        latency: float = 0.0,
        api_keys: Iterable[str] | None = None,
        *,
        verbose: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if latency < 0:
            raise ValueError("latency must not be negative")
        self.rate_limit = rate_limit or 0
        self.window = window
        self.latency = latency
        self.api_keys = frozenset(api_keys) if api_keys is not None else None
        self.verbose = verbose
        # Injectable so tests can place arrivals exactly; sleeps (latency, tok_slow) stay real.
        self._clock = clock
        self._lock = threading.Lock()
        self._idempotency_settled = threading.Condition(self._lock)
        self._reset_state()
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxProvider:
        if self._thread is not None or self._serving or self._stopped:
            raise RuntimeError("sandbox provider already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"sandbox-provider-{self.url}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.02)  # bounds how long stop() waits
        finally:
            self._serving = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # shutdown() waits for a serve_forever loop, so only ask when one runs or is about to.
        if self._thread is not None or self._serving:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> SandboxProvider:
        if self._thread is None and not self._serving:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- state ----------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._payments: dict[str, dict[str, Any]] = {}
        self._idempotency: dict[tuple[str, str, str], _IdempotencyEntry] = {}
        self._flaky_attempts: dict[tuple[str, str, str], int] = {}
        self._admitted_by_key: dict[str, deque[float]] = {}
        self._admitted: list[float] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._per_key: dict[str, dict[str, int]] = {}
        self._outage: str | None = None  # None, or the outage mode
        self._lost_answers: list[_LostAnswerRule] = []

    def reset(self) -> None:
        with self._lock:
            self._reset_state()
            # Waiters on a vanished in-flight entry re-check and run as first requests.
            self._idempotency_settled.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = dict(self._counters)
            stats["max_requests_in_any_1s"] = _max_in_window(self._admitted, 1.0)
            stats["per_key"] = {key: dict(counts) for key, counts in self._per_key.items()}
        return stats

    def payments(self) -> list[dict[str, Any]]:
        """Every payment held, oldest first (read-only operator view, e.g. for "no reference
        was paid twice"): ``id, reference, status, captured, refunded``. ``captured`` stays
        true after a refund; ``refunded`` covers voided authorizations too."""
        with self._lock:
            return [
                {
                    "id": payment["id"],
                    "reference": payment["reference"],
                    "status": payment["status"],
                    "captured": payment["captured"],
                    "refunded": payment["status"] == "refunded",
                }
                for payment in self._payments.values()
            ]

    # --- faults ---------------------------------------------------------------------------------

    def set_outage(self, on: bool, *, mode: str = "drop") -> None:
        """Switch an outage on (every /v1 call but the operator endpoints fails) or off."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode must be one of {', '.join(OUTAGE_MODES)}")
        with self._lock:
            self._outage = mode if on else None

    def drop_answers_after_effect(
        self, *, path_regex: str, count: int = 1, method: str | None = None
    ) -> None:
        """Lose the answers of the next ``count`` matching requests that take effect."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be a positive integer")
        rule = _LostAnswerRule(re.compile(path_regex), count, method.upper() if method else None)
        with self._lock:
            self._lost_answers.append(rule)

    def clear_faults(self) -> None:
        with self._lock:
            self._outage = None
            self._lost_answers = []

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return {
                "outage": self._outage is not None,
                "mode": self._outage,
                "drop_after_effect": [
                    rule.describe() for rule in self._lost_answers if rule.remaining
                ],
            }

    def _apply_faults(self, payload: Any) -> Response:
        """The POST /v1/sandbox/faults body, validated whole before anything changes."""
        if not isinstance(payload, dict):
            return _invalid("body must be a JSON object")
        unknown = sorted(set(payload) - {"clear", "outage", "mode", "drop_after_effect"})
        if unknown:
            return _invalid(f"unknown field(s): {', '.join(unknown)}")
        clear, outage = payload.get("clear", False), payload.get("outage")
        mode = payload.get("mode", "drop")
        if not isinstance(clear, bool):
            return _invalid("clear must be true or false")
        if outage is not None and not isinstance(outage, bool):
            return _invalid("outage must be true or false")
        if mode not in OUTAGE_MODES:
            return _invalid(f"mode must be one of {', '.join(OUTAGE_MODES)}")
        rule = payload.get("drop_after_effect")
        if rule is not None:
            if not isinstance(rule, dict) or not isinstance(rule.get("path"), str):
                return _invalid("drop_after_effect must be an object with a path regex")
            count, method = rule.get("count", 1), rule.get("method")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                return _invalid("drop_after_effect.count must be a positive integer")
            if method is not None and not isinstance(method, str):
                return _invalid("drop_after_effect.method must be a string")
            try:
                re.compile(rule["path"])
            except re.error as exc:
                return _invalid(f"drop_after_effect.path is not a regular expression: {exc}")
        if clear:
            self.clear_faults()
        if outage is not None:
            self.set_outage(outage, mode=mode)
        if rule is not None:
            self.drop_answers_after_effect(
                path_regex=rule["path"], count=rule.get("count", 1), method=rule.get("method")
            )
        return Response(200, self.faults())

    def _claim_lost_answer(self, method: str, path: str) -> bool:
        with self._lock:
            for rule in self._lost_answers:
                if (
                    rule.remaining
                    and rule.method in (None, method)
                    and rule.pattern.search(path) is not None
                ):
                    rule.remaining -= 1
                    self._counters["answers_dropped"] += 1
                    return True
        return False

    # --- request handling -----------------------------------------------------------------------

    def dispatch(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        body_error: Response | None = None,
    ) -> Response:
        path = target.split("?", 1)[0]
        if path == "/v1/stats":
            return Response(200, self.stats()) if method == "GET" else _method_not_allowed()
        if path == FAULTS_PATH:
            if method == "GET":
                return Response(200, self.faults())
            if method != "POST":
                return _method_not_allowed()
            if body_error is not None:
                return body_error
            payload, parse_error = _parse_json(body)
            return _invalid(parse_error) if parse_error else self._apply_faults(payload)
        if not path.startswith("/v1/"):
            return _error(404, "not_found", f"no route for {path}")

        with self._lock:
            outage = self._outage
            if outage is not None:
                self._counters["outage_refused"] += 1
        if outage == "drop":
            return DROP_CONNECTION
        if outage is not None:
            return _error(503, "unavailable", "sandbox: outage switched on")
        response = self._serve(method, path, headers, body, body_error)
        if 200 <= response.status < 300 and self._claim_lost_answer(method, path):
            return DROP_CONNECTION
        return response

    def _serve(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        body_error: Response | None,
    ) -> Response:
        api_key = _bearer_token(headers.get("Authorization"))
        rejection = body_error
        with self._lock:
            self._counters["requests"] += 1
            if rejection is None:
                if api_key is None or (self.api_keys is not None and api_key not in self.api_keys):
                    rejection = _error(401, "unauthorized", "missing or invalid bearer API key")
                else:
                    rejection = self._admit(api_key)
        if self.latency:
            time.sleep(self.latency)
        if rejection is not None:
            return rejection
        assert api_key is not None

        if path == "/v1/payments":
            if method != "POST":
                return _method_not_allowed()
            return self._idempotent(api_key, headers, method, path, body, self._create_payment)
        match = _PAYMENT_PATH_RE.fullmatch(path)
        if match is None:
            return _error(404, "not_found", f"no route for {path}")
        payment_id, action = match["id"], match["action"]
        if action is None:
            return self._get_payment(payment_id) if method == "GET" else _method_not_allowed()
        if method != "POST":
            return _method_not_allowed()

        def transition(_api_key: str, _idempotency_key: str | None, payload: Any) -> Response:
            if not isinstance(payload, dict):
                return _invalid("body must be empty or a JSON object")
            return self._transition(payment_id, action)

        return self._idempotent(api_key, headers, method, path, body, transition)

    def _admit(self, api_key: str) -> Response | None:
        """Apply the rolling per-key limit; caller holds the lock. None means admitted."""
        now = self._clock()
        counts = self._per_key.setdefault(api_key, {"requests": 0, "rejected_429": 0})
        counts["requests"] += 1
        if self.rate_limit:
            log = self._admitted_by_key.setdefault(api_key, deque())
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) >= self.rate_limit:
                self._counters["rejected_429"] += 1
                counts["rejected_429"] += 1
                retry_after = max(1, math.ceil(log[0] + self.window - now))
                return _error(
                    429,
                    "rate_limited",
                    f"more than {self.rate_limit} requests in {self.window:g} s",
                    **{"Retry-After": str(retry_after)},
                )
            log.append(now)
        self._admitted.append(now)
        return None

    def _idempotent(
        self,
        api_key: str,
        headers: Mapping[str, str],
        method: str,
        path: str,
        body: bytes,
        operation: Callable[[str, str | None, Any], Response],
    ) -> Response:
        payload, parse_error = _parse_json(body)
        idempotency_key = headers.get("Idempotency-Key") or None
        if parse_error is not None:
            return _invalid(parse_error)
        if idempotency_key is None:
            return operation(api_key, None, payload)
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _invalid(f"Idempotency-Key longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")

        scope = (api_key, idempotency_key, f"{method} {path}")
        fingerprint = _fingerprint(payload, body)
        with self._lock:
            while True:
                entry = self._idempotency.get(scope)
                if entry is None:
                    entry = _IdempotencyEntry(fingerprint)
                    self._idempotency[scope] = entry
                    break
                if entry.fingerprint != fingerprint:
                    return _error(
                        422,
                        "idempotency_key_reused",
                        "Idempotency-Key was already used with a different request body",
                    )
                if entry.response is not None:
                    self._counters["idempotent_replays"] += 1
                    stored = entry.response
                    return replace(
                        stored, headers={**stored.headers, "Idempotent-Replayed": "true"}
                    )
                # A concurrent twin is running: wait for its outcome rather than act twice.
                self._idempotency_settled.wait()

        response: Response | None = None
        try:
            response = operation(api_key, idempotency_key, payload)
        finally:
            with self._lock:
                if self._idempotency.get(scope) is entry:  # not wiped by reset() meanwhile
                    if response is not None and response.status in STORED_STATUSES:
                        entry.response = response
                    else:
                        del self._idempotency[scope]
                self._idempotency_settled.notify_all()
        return response

    def _create_payment(self, api_key: str, idempotency_key: str | None, payload: Any) -> Response:
        request, problem = _validate_payment(payload)
        if request is None:
            return _invalid(problem or "invalid request")
        source = request["source"]
        if source == "tok_flaky":
            attempt_scope = (
                (api_key, "key", idempotency_key)
                if idempotency_key is not None
                else (api_key, "reference", str(request["reference"]))
            )
            with self._lock:
                attempts = self._flaky_attempts.get(attempt_scope, 0) + 1
                self._flaky_attempts[attempt_scope] = attempts
                if attempts <= FLAKY_FAILURES:
                    self._counters["unavailable_503"] += 1
                    return _error(503, "unavailable", "sandbox: simulated outage, retry")
        elif source == "tok_slow":
            time.sleep(SLOW_DELAY)

        with self._lock:
            if source == "tok_declined":
                self._counters["declined"] += 1
                return _error(402, "card_declined", "the card was declined")
            payment = {
                "id": f"pay_{secrets.token_hex(12)}",
                "status": "authorized",
                "amount": request["amount"],
                "currency": request["currency"],
                "reference": request["reference"],
                "captured": False,
                "amount_captured": "0.00",
                "amount_refunded": "0.00",
            }
            self._payments[payment["id"]] = payment
            self._counters["payments"] += 1
            return Response(201, dict(payment))

    def _get_payment(self, payment_id: str) -> Response:
        with self._lock:
            payment = self._payments.get(payment_id)
            if payment is None:
                return _error(404, "not_found", f"no payment {payment_id}")
            return Response(200, dict(payment))

    def _transition(self, payment_id: str, action: str) -> Response:
        with self._lock:
            payment = self._payments.get(payment_id)
            if payment is None:
                return _error(404, "not_found", f"no payment {payment_id}")
            status = payment["status"]
            if action == "capture" and status == "authorized":
                payment["status"] = "captured"
                payment["captured"] = True
                payment["amount_captured"] = payment["amount"]
                self._counters["captures"] += 1
            elif action == "refund" and status in ("authorized", "captured"):
                # Refunding an uncaptured authorization voids it; both end as "refunded".
                payment["status"] = "refunded"
                if payment["captured"]:
                    payment["amount_refunded"] = payment["amount"]
                self._counters["refunds"] += 1
            else:
                return _error(409, "invalid_state", f"cannot {action} a payment that is {status}")
            return Response(200, dict(payment))


def _method_not_allowed() -> Response:
    return _error(405, "method_not_allowed")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive handler threads idle in readline(); joining them would stall stop().
    block_on_close = False

    def __init__(self, address: tuple[str, int], provider: SandboxProvider) -> None:
        self.provider = provider
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN, which can hang for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop open keep-alive connections so a stopped provider answers nothing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway behind a pooled client
    server_version = "OrderflowSandbox/1.0"
    timeout = 30  # idle keep-alive connections must not pin a thread forever
    # Headers and body leave in two writes; with Nagle on, the body waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server: _Server

    def _handle(self) -> None:
        body_error: Response | None = None
        try:
            body = self._read_body()
        except _BadRequestBody as exc:
            body, body_error = b"", exc.response
            self.close_connection = True  # the framing is unknown, so the stream is unusable
        try:
            response = self.server.provider.dispatch(
                self.command, self.path, self.headers, body, body_error
            )
        except Exception:  # a sandbox bug must surface as a 500, not as a dropped connection
            self.close_connection = True
            response = _error(500, "internal_error")
        if response is DROP_CONNECTION:
            self._drop()
        else:
            self._write(response)

    def _drop(self) -> None:
        """Close the connection with no answer, as a network failure or a crashed peer would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        if self.server.provider.verbose:
            self.log_message('"%s" dropped (sandbox fault)', self.requestline)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise _BadRequestBody(400, "invalid_request", "invalid Content-Length")
        if size > MAX_BODY_BYTES:
            raise _BadRequestBody(413, "request_too_large", "request body too large")
        return self.rfile.read(size)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequestBody(400, "invalid_request", "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the sandbox needs
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequestBody(413, "request_too_large", "request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, response: Response) -> None:
        data = json.dumps(response.body).encode()
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away; nothing left to tell it

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.provider.verbose:
            super().log_message(format, *args)
