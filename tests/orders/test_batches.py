"""Batches (the B2B case) and ?wait, through a real worker on the real broker."""

import pytest

from notifications.models import Notification
from orders.models import Batch, OrderStatus
from tests.conftest import client_for, wait_for

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def order_body(token: str, sku: str = "BOOK-1", quantity: int = 1) -> dict:
    return {"lines": [{"sku": sku, "quantity": quantity}], "payment_token": token}


def test_a_batch_of_50_mixed_orders_is_summarised_and_notified_once(
    celery_worker, sandbox_fast, provider_tasks_unthrottled, catalog, customer
):
    bodies = (
        [order_body("tok_ok") for _ in range(40)]
        + [order_body("tok_declined") for _ in range(6)]
        + [order_body("tok_ok", sku="PEN-1", quantity=5) for _ in range(4)]  # over stock
    )
    api = client_for(customer)
    response = api.post("/api/orders/batch/", {"orders": bodies}, format="json")
    assert response.status_code == 202
    status_url = response.data["status_url"]
    assert status_url.endswith(f"/api/batches/{response.data['id']}/")

    def done():
        body = api.get(status_url).data
        return body if body["done"] else None

    summary = wait_for(done, timeout=120, interval=0.5)
    assert summary["counts"] == {"confirmed": 40, "payment_declined": 6, "cart_rejected": 4}
    batch = Batch.objects.get(pk=response.data["id"])
    wait_for(lambda: Notification.objects.filter(kind="batch.finished").exists(), timeout=20)
    batch.refresh_from_db()
    assert batch.summary == summary["counts"]
    assert Notification.objects.filter(kind="batch.finished", user=customer).count() == 1
    stats = sandbox_fast.stats()
    assert (stats["captures"], stats["refunds"]) == (40, 4)


def test_a_batch_is_validated_all_or_nothing(api, catalog):
    response = api.post(
        "/api/orders/batch/",
        {"orders": [order_body("tok_ok"), order_body("tok_ok", sku="NOPE")]},
        format="json",
    )
    assert response.status_code == 400
    assert "orders" in response.data
    assert not Batch.objects.exists()


def test_a_batch_needs_1_to_500_orders(api, catalog, settings):
    assert api.post("/api/orders/batch/", {"orders": []}, format="json").status_code == 400
    settings.BATCH_MAX_ORDERS = 2
    too_many = {"orders": [order_body("tok_ok")] * 3}
    assert api.post("/api/orders/batch/", too_many, format="json").status_code == 400


def test_another_users_batch_is_404(api, catalog, other_customer):
    response = api.post("/api/orders/batch/", {"orders": [order_body("tok_ok")]}, format="json")
    url = response.data["status_url"]
    assert client_for(other_customer).get(url).status_code == 404


def test_wait_returns_200_with_the_terminal_order(celery_worker, sandbox, catalog, customer):
    response = client_for(customer).post(
        "/api/orders/?wait=20", order_body("tok_ok"), format="json"
    )
    assert response.status_code == 200
    assert response.data["status"] == OrderStatus.CONFIRMED


def test_wait_returns_202_when_the_pipeline_is_slower(celery_worker, sandbox, catalog, customer):
    response = client_for(customer).post(
        "/api/orders/?wait=1", order_body("tok_slow"), format="json"
    )
    assert response.status_code == 202
    assert response.data["status"] not in {"confirmed", "payment_declined", "cart_rejected"}


def test_wait_out_of_range_is_400(api, catalog):
    for value in ["31", "-1", "soon"]:
        response = api.post(f"/api/orders/?wait={value}", order_body("tok_ok"), format="json")
        assert response.status_code == 400
        assert "wait" in response.data
