"""The async edge (project/asgi.py, orders/live.py): ?wait and the order's event stream, served
by a real ASGI server (uvicorn) over real HTTP, with the real pipeline where the test needs it."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from orders import live
from orders.models import Order, OrderEvent
from orders.services import order_create
from project.redis_client import get_redis
from tests.asgi_server import asgi_server, sse_events
from tests.processes import free_port

BODY = {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"}
TERMINAL = {"confirmed", "payment_declined", "cart_rejected", "failed"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server():
    with asgi_server() as running:
        yield running


def headers_for(user) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


def open_stream(server, order_id, headers, **extra) -> requests.Response:
    return requests.get(
        f"{server.url}/api/orders/{order_id}/stream/",
        headers={"Accept": "text/event-stream", **headers, **extra},
        stream=True,
        timeout=(5, 40),
    )


def read_to_final(response: requests.Response) -> list:
    events = []
    for event in sse_events(response):
        events.append(event)
        if event.event == "final":
            break
    response.close()
    return events


def unfinished_order(user):
    order, _ = order_create(user=user, lines=BODY["lines"], payment_token="tok_ok")
    return order


@pytest.mark.pipeline
def test_a_stream_follows_an_order_through_the_pipeline_to_its_final_event(
    server, celery_worker, catalog, customer
):
    headers = headers_for(customer)
    created = requests.post(
        f"{server.url}/api/orders/",
        json={**BODY, "payment_token": "tok_slow"},
        headers=headers,
        timeout=20,
    )
    assert created.status_code == 202
    order_id = created.json()["id"]

    response = open_stream(server, order_id, headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = read_to_final(response)

    entries = list(OrderEvent.objects.filter(order_id=order_id).order_by("id"))
    timeline = [json.loads(event.data) for event in events if event.event == "timeline"]
    # One event per timeline entry, each once, in order, its SSE id the entry's id.
    assert [entry["id"] for entry in timeline] == [entry.pk for entry in entries]
    assert [entry["name"] for entry in timeline] == [entry.name for entry in entries]
    assert [event.id for event in events if event.event == "timeline"] == [
        str(entry.pk) for entry in entries
    ]
    statuses = [json.loads(event.data)["status"] for event in events if event.event == "status"]
    assert statuses == [
        "accepted",
        "payment_authorized",
        "cart_verified",
        "stock_reserved",
        "confirmed",
    ]
    final = events[-1]
    assert final.event == "final"
    assert json.loads(final.data)["status"] == "confirmed"
    assert json.loads(final.data)["id"] == order_id
    assert len(json.loads(final.data)["events"]) == len(entries)


@pytest.mark.pipeline
def test_a_reconnecting_stream_gets_only_what_it_missed(server, celery_worker, catalog, customer):
    headers = headers_for(customer)
    created = requests.post(
        f"{server.url}/api/orders/",
        json={**BODY, "payment_token": "tok_slow"},
        headers=headers,
        timeout=20,
    )
    order_id = created.json()["id"]
    first = open_stream(server, order_id, headers)
    seen = []
    for event in sse_events(first):
        if event.event == "timeline":
            seen.append(event)
            break  # the connection drops after the first entry
    first.close()

    second = open_stream(server, order_id, headers, **{"Last-Event-ID": seen[-1].id})
    events = read_to_final(second)

    ids = [int(event.id) for event in seen] + [
        json.loads(event.data)["id"] for event in events if event.event == "timeline"
    ]
    assert ids == list(
        OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("id", flat=True)
    )
    assert json.loads(events[-1].data)["status"] == "confirmed"


@pytest.mark.pipeline
def test_wait_answers_200_at_the_terminal_status_over_asgi(
    server, celery_worker, catalog, customer
):
    response = requests.post(
        f"{server.url}/api/orders/?wait=20", json=BODY, headers=headers_for(customer), timeout=40
    )

    assert response.status_code == 200
    assert response.json()["status"] == "confirmed"
    assert response.headers["X-Wait-Outcome"] == "terminal"
    assert Order.objects.get(pk=response.json()["id"]).status == "confirmed"


def test_wait_answers_202_when_the_wait_runs_out(server, catalog, customer):
    response = requests.post(
        f"{server.url}/api/orders/?wait=1", json=BODY, headers=headers_for(customer), timeout=20
    )  # no worker runs: the order stays accepted

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert response.headers["X-Wait-Outcome"] == "timeout"


def test_a_stream_of_a_terminal_order_sends_its_history_and_the_final_event(
    server, catalog, customer
):
    order = unfinished_order(customer)
    Order.objects.filter(pk=order.pk).update(status="payment_declined")

    events = read_to_final(open_stream(server, order.pk, headers_for(customer)))

    assert [event.event for event in events] == ["timeline", "status", "final"]
    status_event = json.loads(events[1].data)
    assert status_event["status"] == "payment_declined"
    assert status_event["progress"]["terminal"] is True  # what the tracking page draws
    assert json.loads(events[2].data)["status"] == "payment_declined"


def test_another_users_stream_is_404_and_staff_may_watch(
    server, catalog, customer, other_customer, staff
):
    order = unfinished_order(customer)
    Order.objects.filter(pk=order.pk).update(status="confirmed")

    response = open_stream(server, order.pk, headers_for(other_customer))
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
    anonymous = open_stream(server, order.pk, {})
    assert anonymous.status_code == 401
    assert "detail" in anonymous.json()
    watched = read_to_final(open_stream(server, order.pk, headers_for(staff)))
    assert watched[-1].event == "final"


def test_a_bad_last_event_id_is_400(server, catalog, customer):
    order = unfinished_order(customer)
    response = open_stream(server, order.pk, headers_for(customer), **{"Last-Event-ID": "x"})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()


def test_held_streams_hold_no_thread_and_no_database_connection(server, catalog, customer):
    headers = headers_for(customer)
    orders = [unfinished_order(customer) for _ in range(6)]

    def database_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            return cursor.fetchone()[0]

    postgres = connection.vendor == "postgresql"
    # Warm up: the server's first request builds the URLconf and its lazy objects.
    read_to_final_or_status(open_stream(server, orders[0].pk, headers))
    threads_before = threading.active_count()
    connections_before = database_connections() if postgres else 0

    streams = [open_stream(server, order.pk, headers) for order in orders]
    readers = [sse_events(stream) for stream in streams]
    for stream, reader in zip(streams, readers, strict=True):
        assert stream.status_code == 200
        next(event for event in reader if event.event == "status")  # now waiting on Redis
    time.sleep(0.3)  # let the request threads end
    threads_held = threading.active_count()
    connections_held = database_connections() if postgres else 0
    assert held_slots(customer) == len(streams)  # all six are still held by the server
    for stream in streams:
        stream.close()

    assert threads_held - threads_before <= 1, (threads_before, threads_held)
    if postgres:
        assert connections_held - connections_before <= 1, (connections_before, connections_held)


def held_slots(user) -> int:
    return get_redis().zcard(live._held_key(user.pk))


def read_to_final_or_status(response: requests.Response) -> None:
    for event in sse_events(response):
        if event.event in ("status", "final"):
            break
    response.close()


def test_the_per_user_cap_answers_429_and_a_closed_stream_frees_its_slot(
    server, catalog, customer, other_customer, settings
):
    settings.LIVE_MAX_HELD_PER_USER = 2
    headers = headers_for(customer)
    orders = [unfinished_order(customer) for _ in range(3)]
    held = [open_stream(server, order.pk, headers) for order in orders[:2]]
    readers = [sse_events(stream) for stream in held]
    for reader in readers:
        next(event for event in reader if event.event == "status")
    assert held_slots(customer) == 2

    refused = open_stream(server, orders[2].pk, headers)
    assert refused.status_code == 429
    assert "Too many held waits and streams" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    waited = requests.post(
        f"{server.url}/api/orders/?wait=5", json=BODY, headers=headers, timeout=20
    )
    assert waited.status_code == 429
    assert Order.objects.count() == 3  # a refused wait orders nothing
    # Another user has slots of their own.
    theirs = unfinished_order(other_customer)
    other = open_stream(server, theirs.pk, headers_for(other_customer))
    assert other.status_code == 200
    other.close()

    held[0].close()  # the server notices the disconnect and gives the slot back
    deadline = time.monotonic() + 10
    while (again := open_stream(server, orders[2].pk, headers)).status_code == 429:
        assert time.monotonic() < deadline, "the closed stream's slot was not given back"
        time.sleep(0.1)
    assert again.status_code == 200
    again.close()
    held[1].close()


def test_a_lease_nobody_renews_lapses(customer, settings):
    """A web process that crashed holding slots cannot keep them: each lease expires."""
    settings.LIVE_MAX_HELD_PER_USER = 2
    settings.LIVE_HELD_LEASE_SECONDS = 1
    assert live.held_slot_acquire(user_id=customer.pk) is not None
    assert live.held_slot_acquire(user_id=customer.pk) is not None
    with pytest.raises(live.HeldLimitExceeded):
        live.held_slot_acquire(user_id=customer.pk)
    time.sleep(1.2)  # nobody releases them: the process "crashed"
    assert live.held_slot_acquire(user_id=customer.pk) is not None


def test_with_redis_down_a_wait_answers_202_and_a_stream_503(server, catalog, customer, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    headers = headers_for(customer)

    response = requests.post(
        f"{server.url}/api/orders/?wait=5", json=BODY, headers=headers, timeout=30
    )

    assert response.status_code == 202
    assert response.headers["X-Wait-Outcome"] == "unavailable"
    order = Order.objects.get(pk=response.json()["id"])  # accepted and committed
    assert response.json()["status"] == order.status == "accepted"
    stream = open_stream(server, order.pk, headers)
    assert stream.status_code == 503
    assert "poll" in stream.json()["detail"]
    Order.objects.filter(pk=order.pk).update(status="confirmed")
    # A terminal order's stream needs no live updates: its history and final event.
    events = read_to_final(open_stream(server, order.pk, headers))
    assert events[-1].event == "final"


def test_streams_opened_at_once_on_a_fresh_server_are_all_subscribed(server, catalog, customer):
    """The first subscribers of a process arrive together: each must be confirmed (one
    connection, not one each with a SUBSCRIBE nobody reads)."""
    headers = headers_for(customer)
    orders = [unfinished_order(customer) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=len(orders)) as pool:
        streams = list(pool.map(lambda order: open_stream(server, order.pk, headers), orders))
    try:
        assert [stream.status_code for stream in streams] == [200] * len(orders)
        readers = [sse_events(stream) for stream in streams]
        for reader in readers:
            next(event for event in reader if event.event == "status")
        Order.objects.filter(pk__in=[order.pk for order in orders]).update(status="failed")
        for order in orders:  # a published update reaches every one of them
            order.status = "failed"
            get_redis().publish(
                live.order_channel(order.pk),
                json.dumps({"order_id": str(order.pk), "status": "failed", "entry": None}),
            )
        finals = [next(event for event in reader if event.event == "final") for reader in readers]
        assert [json.loads(final.data)["status"] for final in finals] == ["failed"] * len(orders)
    finally:
        for stream in streams:
            stream.close()
