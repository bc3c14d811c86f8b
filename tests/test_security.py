"""Limits and health: throttling, body size, lines per order, /healthz."""

import json
from decimal import Decimal

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from orders.models import Order, Product
from project.redis_client import get_redis
from project.throttling import client_address, throttle_key_prefix
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


# --- The client's address -----------------------------------------------------------------------


@pytest.fixture
def tight_token_throttle(monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth_token", "3/day")
    clear_throttle_counters()
    yield
    clear_throttle_counters()


@pytest.mark.django_db
def test_rotating_x_forwarded_for_does_not_reset_the_login_throttle(tight_token_throttle):
    codes = [
        APIClient()
        .post(
            "/api/auth/token/",
            {"username": "alice", "password": "guess"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
        )
        .status_code
        for n in range(5)
    ]
    assert codes == [400, 400, 400, 429, 429]


def test_behind_one_proxy_the_address_is_the_one_the_proxy_appended(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.4"
    )
    assert client_address(request) == "198.51.100.4"  # the client's own "6.6.6.6" is ignored


def test_with_no_proxy_x_forwarded_for_is_ignored():
    request = RequestFactory().get("/", REMOTE_ADDR="198.51.100.4", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert client_address(request) == "198.51.100.4"


# --- Passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["password123", "12345678901", "qwertyuiop"])
def test_common_and_numeric_passwords_are_refused(password):
    with pytest.raises(ValidationError):
        validate_password(password)


def test_a_long_uncommon_password_passes():
    validate_password("correct-horse-battery-staple-42")


# --- Bodies that must be 400s, not 500s ---------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/api/auth/token/", "/api/orders/", "/api/orders/batch/", "/api/webhooks/"],
)
def test_deeply_nested_json_is_a_400_in_drfs_shape(api, path):
    client = APIClient() if path == "/api/auth/token/" else api
    response = client.post(path, DEEP, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than" in response.json()["detail"]


@pytest.mark.django_db
def test_brackets_inside_strings_do_not_count_as_nesting(api, catalog):
    body = {**BODY, "payment_token": "tok_ok" + "[{" * 60}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 202, response.content[:300]


@pytest.mark.django_db
def test_nesting_just_beyond_the_limit_is_refused(api, settings):
    settings.API_MAX_JSON_DEPTH = 4
    body = {"lines": [{"sku": {"a": [1]}, "quantity": 1}], "payment_token": "tok_ok"}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 400
    assert "nested deeper than 4" in response.json()["detail"]


@pytest.mark.django_db
def test_the_line_limit_is_checked_before_any_line_is_validated(api):
    # Every line is invalid: validating them first would answer 90,000 line errors.
    lines = [{"sku": "B", "quantity": 0}] * 90_000  # 2.3 MB, within the body size limit
    body = json.dumps({"lines": lines, "payment_token": "tok_ok"}, separators=(",", ":"))
    response = api.post("/api/orders/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"lines": ["At most 100 lines per order."]}


@pytest.mark.django_db
def test_the_batch_limit_is_checked_before_any_order_is_validated(api, settings):
    settings.BATCH_MAX_ORDERS = 3
    orders = [{"lines": [{"sku": "BOOK-1", "quantity": 0}], "payment_token": "tok_ok"}] * 4
    response = api.post("/api/orders/batch/", {"orders": orders}, format="json")
    assert response.status_code == 400
    assert response.json() == {"orders": ["At most 3 orders per batch."]}


@pytest.fixture
def expensive(db):
    return Product.objects.create(
        sku="YACHT-1", name="A yacht", price=Decimal("1500000.00"), currency="EUR", stock=10_000
    )


@pytest.mark.django_db
def test_an_order_total_beyond_the_total_column_is_a_400(api, expensive):
    body = {"lines": [{"sku": "YACHT-1", "quantity": 10_000}], "payment_token": "tok_ok"}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 400
    assert "total would exceed 9999999999.99" in str(response.json()["lines"])
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_an_order_total_spread_over_lines_beyond_the_column_is_a_400(api, expensive):
    Product.objects.create(sku="CAR-1", name="A car", price=Decimal("100000.00"), stock=10)
    lines = [{"sku": "YACHT-1", "quantity": 6_666}, {"sku": "CAR-1", "quantity": 10}]
    response = api.post("/api/orders/", {"lines": lines, "payment_token": "tok_ok"}, format="json")
    assert response.status_code == 400  # 9,999,000,000 + 1,000,000 = 10^10


@pytest.mark.django_db
def test_the_largest_total_the_column_holds_is_accepted(api, expensive):
    # 1,500,000 x 6,666 = 9,999,000,000: under 10^10, stored as it is.
    body = {"lines": [{"sku": "YACHT-1", "quantity": 6_666}], "payment_token": "tok_ok"}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 202, response.content
    assert Order.objects.get().total == Decimal("9999000000.00")


@pytest.mark.django_db
def test_a_batch_order_total_beyond_the_column_is_a_400_for_that_order(api, expensive, catalog):
    orders = [
        {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"},
        {"lines": [{"sku": "YACHT-1", "quantity": 10_000}], "payment_token": "tok_ok"},
    ]
    response = api.post("/api/orders/batch/", {"orders": orders}, format="json")
    assert response.status_code == 400
    assert list(response.json()["orders"]) == ["1"]
    assert not Order.objects.exists()
