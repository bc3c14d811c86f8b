"""Limits and health: throttling, body size, lines per order, /healthz."""

import json

import pytest
from rest_framework.throttling import ScopedRateThrottle

from project.redis_client import get_redis
from project.throttling import throttle_key_prefix
from tests.conftest import client_for

BODY = {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"}


def clear_throttle_counters() -> None:
    client = get_redis()
    for key in client.scan_iter(match=f"{throttle_key_prefix()}*"):
        client.delete(key)


@pytest.fixture
def tight_order_throttle(monkeypatch, settings):
    # A day-long window: the four posts never straddle two windows.
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "order_create", "3/day")
    clear_throttle_counters()
    yield
    clear_throttle_counters()


@pytest.mark.django_db
def test_order_creation_is_throttled_per_user(
    tight_order_throttle, catalog, customer, other_customer
):
    api = client_for(customer)
    codes = [api.post("/api/orders/", BODY, format="json").status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    throttled = api.post("/api/orders/", BODY, format="json")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "detail" in throttled.data
    # Per user: someone else is not slowed down, and reading is never throttled.
    assert client_for(other_customer).post("/api/orders/", BODY, format="json").status_code == 202
    assert api.get("/api/orders/").status_code == 200


@pytest.mark.django_db
def test_an_oversized_body_is_413_in_drfs_shape(api, catalog, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({**BODY, "payment_token": "x" * 2000})
    response = api.post("/api/orders/", body, content_type="application/json")
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


@pytest.mark.django_db
def test_too_many_lines_is_400(api, catalog, settings):
    settings.ORDER_MAX_LINES = 2
    lines = [{"sku": sku, "quantity": 1} for sku in ["BOOK-1", "MUG-1", "PEN-1"]]
    response = api.post("/api/orders/", {"lines": lines, "payment_token": "tok_ok"}, format="json")
    assert response.status_code == 400
    assert "At most 2 lines" in str(response.data["lines"])


@pytest.mark.django_db
def test_non_json_bodies_are_refused_with_415(api, catalog):
    response = api.post("/api/orders/", "lines=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.django_db
def test_unknown_api_paths_are_json_404s(api):
    response = api.get("/api/orders/not-a-uuid/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_broker_workers_and_the_limiter(client, celery_worker):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["database"], body["broker"]) == ("ok", "ok")
    assert body["workers"] >= 1
    assert body["provider_rate_limit"]["limit"] == 2


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(client, monkeypatch):
    from project import health

    monkeypatch.setattr(health, "_check_broker", lambda: "error: OperationalError")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")
