"""The web edge (project/edge.py) over real HTTP: which handler serves what, that held requests
leave the sync API its threads, and static files in front."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.handlers.asgi import ASGIHandler
from django.core.management import call_command
from django.core.signals import request_started
from django.db import connection
from rest_framework.authtoken.models import Token

from orders import live
from orders.models import Order
from orders.services import order_create
from project import edge
from project.redis_client import get_redis
from tests.asgi_server import asgi_server, sse_events
from tests.processes import web_process

BODY = {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server():
    with asgi_server() as running:
        yield running


@pytest.fixture
def served_by():
    """(handler class, thread name) of every request the server starts, in order."""
    seen: list[tuple[type, str]] = []

    def record(sender, **kwargs):
        seen.append((sender, threading.current_thread().name))

    request_started.connect(record, weak=False)
    yield seen
    request_started.disconnect(record)


def headers_for(user) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


def test_sync_views_run_on_the_threads_and_the_views_that_wait_on_the_asgi_handler(
    server, served_by, catalog, customer
):
    headers = headers_for(customer)

    assert requests.get(f"{server.url}/api/products/", headers=headers, timeout=10).ok
    created = requests.post(f"{server.url}/api/orders/", json=BODY, headers=headers, timeout=10)
    assert created.status_code == 202, created.text
    missing = requests.get(f"{server.url}/api/no-such-thing/", headers=headers, timeout=10)
    assert missing.status_code == 404
    waited = requests.post(
        f"{server.url}/api/orders/?wait=1", json=BODY, headers=headers, timeout=10
    )
    assert waited.status_code == 202, waited.text  # no worker: the wait runs out
    assert waited.headers["X-Wait-Outcome"] == "timeout"

    handlers = [handler for handler, _ in served_by]
    assert handlers[:3] == [edge.ThreadedHandler] * 3
    assert all(name.startswith("WSGI") for _, name in served_by[:3])  # a2wsgi's pool
    assert handlers[3] is ASGIHandler
    assert Order.objects.filter(user=customer).count() == 2


def test_the_routing_follows_the_url_conf():
    def waits(path: str, method: str = "GET", query: bytes = b"") -> bool:
        return edge.waits({"path": path, "method": method, "query_string": query})

    stream = "/api/orders/6b0e3d1c-1111-4111-8111-111111111111/stream/"
    assert waits(stream)
    assert waits("/api/orders/", "POST", b"wait=5")
    assert waits("/api/orders/", "POST", b"wait=oops")  # the async view answers its 400
    assert not waits("/api/orders/", "POST")
    assert not waits("/api/orders/", "GET", b"wait=5")  # only POST waits
    assert not waits("/api/products/")
    assert not waits("/admin/login/")
    assert not waits("/no/such/path/")
    assert waits("/prefix" + stream) is False  # unknown without its root_path
    assert edge.waits({"path": "/prefix" + stream, "root_path": "/prefix", "method": "GET"})


def test_held_waits_leave_the_sync_api_its_threads(server, settings, catalog, customer):
    """More held waits than the edge has sync threads (cap raised for the test): the API goes
    on answering while every one of them is still held."""
    settings.LIVE_MAX_HELD_PER_USER = 12
    headers = headers_for(customer)
    held = 3 * settings.WEB_SYNC_THREADS + 2
    redis_client = get_redis()
    key = live._held_key(customer.pk)

    with ThreadPoolExecutor(max_workers=held) as pool:
        waits = [
            pool.submit(
                requests.post,
                f"{server.url}/api/orders/?wait=20",
                json=BODY,
                headers=headers,
                timeout=40,
            )
            for _ in range(held)
        ]
        for _ in range(500):
            if redis_client.zcard(key) == held:
                break
            threading.Event().wait(0.02)
        assert redis_client.zcard(key) == held, "the waits were not all held"
        for _ in range(5):
            answer = requests.get(f"{server.url}/api/products/", headers=headers, timeout=5)
            assert answer.ok
        assert redis_client.zcard(key) == held  # still all held
        assert all(not wait.done() for wait in waits)
        # Ending them: the orders become terminal; each wait answers at once.
        Order.objects.filter(user=customer).update(status="failed")
        for order in Order.objects.filter(user=customer):
            live.announce(order=order, event="status")
        for wait in waits:
            assert wait.result().status_code == 200


def test_static_files_are_served_in_front_of_the_edge(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)
    with asgi_server(edge.application()) as running:
        answer = requests.get(f"{running.url}/static/admin/css/base.css", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/css")
        assert "Cache-Control" in answer.headers
        assert requests.get(f"{running.url}/static/nope.css", timeout=10).status_code == 404


def test_many_held_requests_opened_at_once_never_exhaust_the_pool(
    catalog, customer, django_user_model, settings, tmp_path
):
    """A pool of 2 connections and 24 streams and waits opened at once on the production server:
    each gives its connection back before it waits (a stream that kept its own while its first
    progress read asked for a second one could, with the pool's worth of others, wait for
    ever: 500 after the pool's timeout)."""
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    users = [customer] + [
        django_user_model.objects.create_user(username=f"watcher{n}", password="x")
        for n in range(2)
    ]
    orders = [
        order_create(user=user, lines=BODY["lines"], payment_token="tok_ok")[0] for user in users
    ]
    headers = {user.pk: headers_for(user) for user in users}  # not on the pool's threads
    env = {"DATABASE_POOL_MAX_SIZE": "2", "DATABASE_POOL_TIMEOUT": "3", "WEB_SYNC_THREADS": "1"}
    with web_process(
        broker_url=settings.CELERY_BROKER_URL,
        log_path=tmp_path / "web.log",
        extra_env=env,
        asgi=True,
    ) as web:

        def stream(user, order) -> int:
            with requests.get(
                f"{web.url}/api/orders/{order.pk}/stream/",
                headers={**headers[user.pk], "Accept": "text/event-stream"},
                stream=True,
                timeout=(5, 20),
            ) as response:
                if response.status_code == 200:
                    next(e for e in sse_events(response) if e.event == "status")
                return response.status_code

        def wait(user) -> int:
            return requests.post(
                f"{web.url}/api/orders/?wait=2", json=BODY, headers=headers[user.pk], timeout=20
            ).status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            streams = [
                pool.submit(stream, u, o)
                for u, o in zip(users, orders, strict=True)
                for _ in range(4)
            ]
            waits = [pool.submit(wait, user) for user in users for _ in range(4)]
            assert [s.result() for s in streams] == [200] * 12
            assert [w.result() for w in waits] == [202] * 12  # no worker: each wait runs out
