"""One correlation id per order: request header -> order -> every task message -> logs."""

import logging

import pytest

from orders.models import Order, OrderStatus
from tests.conftest import client_for, wait_for


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_the_request_correlation_id_reaches_every_task_of_the_canvas(
    celery_worker, sandbox, catalog, customer, caplog
):
    caplog.set_level(logging.INFO, logger="orderflow.tasks")
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
        received = [
            record
            for record in caplog.records
            if record.getMessage() == "task received"
            and record.task != "orders.relay_outbox"  # the worker's start-up relay, no order
        ]
        notified = any(r.task == "notifications.notify" for r in received)
        return order.status == OrderStatus.CONFIRMED and notified and received

    received = wait_for(finished, timeout=40)
    tasks = [record.task for record in received]
    assert tasks.count("orders.authorize_payment") >= 3  # two retries (and any 429 wait)
    assert tasks.count("orders.check_cart_line") == 2  # chord members
    for name in ["orders.start_pipeline", "orders.verify_cart", "orders.confirm_order"]:
        assert name in tasks
    assert {record.correlation_id for record in received} == {"checkout-42"}
    assert set(order.events.values_list("correlation_id", flat=True)) == {"checkout-42"}


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
