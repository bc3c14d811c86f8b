"""Fixtures for the notification channels: a real HTTP webhook receiver and fast retry settings."""

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications.models import WebhookDelivery, WebhookEndpoint
from notifications.services import DeliveryOutcome, webhook_delivery_send
from notifications.signing import secret_generate
from orders.models import Order
from orders.services import order_create
from project.redis_client import get_redis
from project.throttling import throttle_key_prefix
from tests.factories import order_failed


@dataclass(frozen=True)
class Answer:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"received": true}'
    delay: float = 0.0  # seconds to wait before answering (timeouts)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> dict:
        return json.loads(self.body)


class WebhookReceiver:
    """A real HTTP server that records every request and answers from a script (then 200)."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = receiver._record(
                    ReceivedRequest(
                        path=self.path,
                        headers=dict(self.headers.items()),
                        body=body,
                        received_at=time.monotonic(),
                    )
                )
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def script(self, *answers: int | Answer) -> None:
        """Answer the next requests with these statuses/answers, in order."""
        with self._lock:
            for answer in answers:
                self._answers.append(answer if isinstance(answer, Answer) else Answer(answer))

    def _record(self, request: ReceivedRequest) -> Answer:
        with self._lock:
            self.requests.append(request)
            return self._answers.popleft() if self._answers else Answer()

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def webhook_settings(settings):
    """Deliveries to the local receiver, with retries milliseconds apart."""
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    settings.WEBHOOK_CONNECT_TIMEOUT = 2.0
    settings.WEBHOOK_READ_TIMEOUT = 5.0
    settings.WEBHOOK_RETRY_BACKOFF_BASE = 0.02
    settings.WEBHOOK_RETRY_BACKOFF_MAX = 0.1
    settings.WEBHOOK_MAX_ATTEMPTS = 8
    settings.WEBHOOK_RATE_LIMIT = "100/s"
    settings.WEBHOOK_RATE_LIMIT_MAX_INLINE_WAIT = 1.0
    return settings


def deliver(delivery: WebhookDelivery | int, *, max_calls: int = 50) -> list[DeliveryOutcome]:
    """What the delivery task does, in-process: attempt, wait as told, until it is done."""
    delivery_id = delivery if isinstance(delivery, int) else delivery.pk
    outcomes = []
    for _ in range(max_calls):
        outcome = webhook_delivery_send(delivery_id=delivery_id)
        outcomes.append(outcome)
        if outcome.retry_in is None:
            return outcomes
        time.sleep(outcome.retry_in)
    pytest.fail(f"delivery {delivery_id} not done after {max_calls} calls: {outcomes}")


def make_endpoint(user, url: str, events=("*",), *, is_active: bool = True) -> WebhookEndpoint:
    """An endpoint row as webhook_endpoint_create makes it (URL checks are tested elsewhere)."""
    return WebhookEndpoint.objects.create(
        user=user,
        url=url,
        events=list(events),
        secret=secret_generate(),
        is_active=is_active,
    )


def place(user, *, card: str = "tok_ok") -> Order:
    order, _ = order_create(user=user, lines=[{"sku": "BOOK-1", "quantity": 2}], payment_token=card)
    return order


failed = order_failed


@pytest.fixture
def throttle_counters():
    """This run's API throttle counters, cleared before and after the test."""

    def clear() -> None:
        client = get_redis()
        for key in client.scan_iter(match=f"{throttle_key_prefix()}*"):
            client.delete(key)

    clear()
    yield
    clear()
