"""One correlation id per order: request header -> order -> every task message -> logs.

The lines are django-structlog's (request_started/finished, task_started/succeeded...); each is
a structlog event dictionary on its standard-library record.
"""

import ast
import json
import logging
from pathlib import Path

import pytest
import structlog

from orders.models import Order, OrderStatus
from project.celery import app as celery_app
from project.observability import (
    MESSAGE_HEADER,
    RoutineHousekeepingFilter,
    bind_correlation_id,
    structured_formatter,
)
from tests.conftest import client_for, wait_for

TASK_LOGGER = "django_structlog.celery.receivers"
REQUEST_LOGGER = "django_structlog.middlewares.request"


def events(caplog, name: str, logger: str) -> list[dict]:
    return [
        record.msg
        for record in caplog.records
        if record.name == logger and isinstance(record.msg, dict) and record.msg["event"] == name
    ]


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_the_request_correlation_id_reaches_every_task_of_the_canvas(
    celery_worker, sandbox, catalog, customer, caplog
):
    caplog.set_level(logging.INFO)
    response = client_for(customer).post(
        "/api/orders/",
        {
            "lines": [{"sku": "BOOK-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}],
            "payment_token": "tok_flaky",  # two retries: they must keep the id too
        },
        format="json",
        HTTP_X_CORRELATION_ID="checkout-42",
    )
    assert response.status_code == 202
    assert response["X-Correlation-ID"] == "checkout-42"
    order = Order.objects.get(pk=response.data["id"])
    assert order.correlation_id == "checkout-42"

    def finished():
        order.refresh_from_db()
        started = [
            event
            for event in events(caplog, "task_started", TASK_LOGGER)
            if event["task"] != "orders.relay_outbox"  # the worker's start-up relay, no order
        ]
        notified = any(event["task"] == "notifications.notify" for event in started)
        return order.status == OrderStatus.CONFIRMED and notified and started

    started = wait_for(finished, timeout=40)
    tasks = [event["task"] for event in started]
    assert tasks.count("orders.authorize_payment") >= 3  # two retries (and any 429 wait)
    assert tasks.count("orders.check_cart_line") == 2  # chord members
    for name in ["orders.start_pipeline", "orders.confirm_order"]:
        assert name in tasks
    assert {event["correlation_id"] for event in started} == {"checkout-42"}
    # Every line a task of the order wrote carries the id, not only the lifecycle lines.
    order_lines = [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("task") in set(tasks)
    ]
    assert {line.get("correlation_id") for line in order_lines} == {"checkout-42"}
    assert events(caplog, "task_retrying", TASK_LOGGER)
    assert set(order.events.values_list("correlation_id", flat=True)) == {"checkout-42"}
    # The request's own lines carry it too.
    request_lines = events(caplog, "request_started", REQUEST_LOGGER) + events(
        caplog, "request_finished", REQUEST_LOGGER
    )
    assert [line["correlation_id"] for line in request_lines] == ["checkout-42"] * 2


@pytest.mark.django_db
def test_a_repeated_request_logs_the_id_of_the_order_it_answers_with(api, catalog, caplog):
    caplog.set_level(logging.INFO)
    payload = {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"}
    first = api.post(
        "/api/orders/",
        payload,
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
        HTTP_X_CORRELATION_ID="first-try",
    )
    again = api.post(
        "/api/orders/",
        payload,
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
        HTTP_X_CORRELATION_ID="second-try",
    )
    assert first.data["id"] == again.data["id"]
    assert again["X-Correlation-ID"] == "first-try"
    started = events(caplog, "request_started", REQUEST_LOGGER)
    finished = events(caplog, "request_finished", REQUEST_LOGGER)
    assert [line["correlation_id"] for line in started] == ["first-try", "second-try"]
    assert [line["correlation_id"] for line in finished] == ["first-try", "first-try"]


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_the_message_header_names_the_order_whatever_context_sends_it(celery_worker, caplog):
    """The outbox relay and the sweepers send an order's messages from their own context."""
    caplog.set_level(logging.INFO)
    structlog.contextvars.clear_contextvars()
    bind_correlation_id("the-relay-itself")
    try:
        result = celery_app.send_task("orders.recover_orders", headers={MESSAGE_HEADER: "order-7"})
    finally:
        structlog.contextvars.clear_contextvars()

    def succeeded():
        return [
            event
            for event in events(caplog, "task_succeeded", TASK_LOGGER)
            if event.get("task_id") == result.id
        ]

    (line,) = wait_for(succeeded, timeout=20)
    assert line["correlation_id"] == "order-7"
    assert line["task"] == "orders.recover_orders"


@pytest.mark.django_db
def test_an_invalid_correlation_id_is_replaced_not_stored(api, catalog):
    response = api.post(
        "/api/orders/",
        {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"},
        format="json",
        HTTP_X_CORRELATION_ID="x" * 500,
    )
    assert response.status_code == 202
    assert len(response.data["correlation_id"]) <= 64
    assert response["X-Correlation-ID"] == response.data["correlation_id"]


@pytest.mark.django_db
def test_every_response_carries_a_correlation_id(api):
    response = api.get("/api/products/", HTTP_X_CORRELATION_ID="trace-1")
    assert response["X-Correlation-ID"] == "trace-1"
    assert api.get("/api/products/")["X-Correlation-ID"]


def test_json_lines_carry_the_bound_correlation_id():
    formatter = structured_formatter(json=True)
    structlog.contextvars.clear_contextvars()
    bind_correlation_id("order-9")
    try:
        # A standard-library record, as Django's and Celery's loggers write them.
        foreign = logging.LogRecord("orders.x", logging.INFO, __file__, 1, "sent %s", ("it",), None)
        foreign.outbox_id = 3  # extra=
        line = json.loads(formatter.format(foreign))
    finally:
        structlog.contextvars.clear_contextvars()
    assert line["event"] == "sent it"
    assert line["correlation_id"] == "order-9"
    assert line["outbox_id"] == 3
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_the_housekeeping_tasks_routine_lines_are_dropped_not_their_failures():
    keep = RoutineHousekeepingFilter()

    def record(level: int, event: dict) -> logging.LogRecord:
        return logging.LogRecord(TASK_LOGGER, level, __file__, 1, event, (), None)

    relay = {"event": "task_started", "task": "orders.relay_outbox"}
    assert not keep.filter(record(logging.INFO, relay))
    assert not keep.filter(
        record(logging.INFO, {"event": "task_enqueued", "child_task_name": "orders.relay_outbox"})
    )
    assert keep.filter(record(logging.ERROR, {**relay, "event": "task_failed"}))
    assert keep.filter(
        record(logging.INFO, {"event": "task_started", "task": "orders.verify_cart"})
    )


def test_settings_import_nothing_but_the_standard_library_django_and_environ():
    """Wiring is explicit: signal handlers are connected in project/celery.py, not by importing
    a module from settings for its side effects."""
    tree = ast.parse((Path(__file__).resolve().parent.parent / "project/settings.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"datetime", "email", "ipaddress", "pathlib", "environ", "django"}
