"""The HTTP API through DRF's APIClient: status codes, headers and bodies, and the rows behind them.

`db` never commits, so the outbox rows an order writes are never published: no broker, no worker.
"""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from notifications.models import Notification
from orders.models import DeadLetter, Order, OrderStatus, Product
from orders.services import order_create
from tests.conftest import client_for
from tests.factories import order_failed

ORDERS_URL = "/api/orders/"
BODY = {
    "lines": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}],
    "payment_token": "tok_ok",
}


# --- helpers ------------------------------------------------------------------------------------


def post_order(client: APIClient, body=None, **headers):
    return client.post(ORDERS_URL, BODY if body is None else body, format="json", **headers)


def detail_url(order_id) -> str:
    return f"{ORDERS_URL}{order_id}/"


def place(user, *, sku: str = "BOOK-1", quantity: int = 1) -> Order:
    order, _ = order_create(
        user=user, lines=[{"sku": sku, "quantity": quantity}], payment_token="tok_ok"
    )
    return order


def ids(response) -> set[str]:
    return {row["id"] for row in response.json()["results"]}


def notify(user, title: str) -> Notification:
    return Notification.objects.create(
        user=user, kind="order.confirmed", title=title, dedupe_key=f"{user.pk}:{title}"
    )


# --- POST /api/orders/ --------------------------------------------------------------------------


def test_create_order_is_accepted_with_location_and_the_order(api, catalog, customer):
    response = post_order(api)

    assert response.status_code == 202
    body = response.json()
    order = Order.objects.get()
    assert body["id"] == str(order.pk)
    assert order.user == customer
    assert response["Location"].endswith(f"/api/orders/{order.pk}/")
    assert body["status"] == "accepted"
    assert body["total"] == "33.00"
    assert body["currency"] == "EUR"
    assert body["lines"] == [
        {"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"},
        {"sku": "MUG-1", "quantity": 1, "unit_price": "8.00"},
    ]
    assert body["correlation_id"] == order.correlation_id != ""
    assert response["X-Correlation-ID"] == order.correlation_id
    assert [event["name"] for event in body["events"]] == ["accepted"]
    assert set(body["events"][0]) == {"name", "created_at", "attempt", "detail"}
    assert body["failure_reason"] == ""
    assert {"created_at", "updated_at"} <= set(body)


def test_create_order_uses_and_echoes_the_request_correlation_id(api, catalog):
    response = post_order(api, HTTP_X_CORRELATION_ID="req-7f3a")

    assert response.status_code == 202
    assert response.json()["correlation_id"] == "req-7f3a"
    assert response["X-Correlation-ID"] == "req-7f3a"
    order = Order.objects.get()
    assert order.correlation_id == "req-7f3a"
    assert set(order.events.values_list("correlation_id", flat=True)) == {"req-7f3a"}


@pytest.mark.parametrize(
    "supplied",
    ["c" * 65, "two words", "semi;colon", ""],
    ids=["too-long", "space", "semi", "empty"],
)
def test_create_order_replaces_an_unusable_correlation_id(api, catalog, supplied):
    response = post_order(api, HTTP_X_CORRELATION_ID=supplied)

    assert response.status_code == 202
    order = Order.objects.get()
    assert order.correlation_id != supplied
    assert 1 <= len(order.correlation_id) <= 64  # Order.correlation_id is a CharField(64)
    assert response.json()["correlation_id"] == order.correlation_id
    assert response["X-Correlation-ID"] == order.correlation_id


@pytest.mark.parametrize(
    ("body", "error_path"),
    [
        pytest.param({}, ["lines"], id="empty-body"),
        pytest.param({"payment_token": "tok_ok"}, ["lines"], id="lines-missing"),
        pytest.param(
            {"lines": [], "payment_token": "tok_ok"},
            ["lines", "non_field_errors"],
            id="lines-empty",
        ),
        pytest.param(
            {"lines": "BOOK-1", "payment_token": "tok_ok"},
            ["lines", "non_field_errors"],
            id="lines-str",
        ),
        pytest.param({"lines": None, "payment_token": "tok_ok"}, ["lines"], id="lines-null"),
        pytest.param(
            {"lines": ["BOOK-1"], "payment_token": "tok_ok"},
            ["lines", "0", "non_field_errors"],
            id="line-str",
        ),
        pytest.param(
            {"lines": [{"sku": "BOOK-1", "quantity": 0}], "payment_token": "tok_ok"},
            ["lines", "0", "quantity"],
            id="quantity-0",
        ),
        pytest.param(
            {"lines": [{"sku": "BOOK-1", "quantity": "abc"}], "payment_token": "tok_ok"},
            ["lines", "0", "quantity"],
            id="quantity-abc",
        ),
        pytest.param(
            {"lines": [{"sku": "BOOK-1", "quantity": 1.5}], "payment_token": "tok_ok"},
            ["lines", "0", "quantity"],
            id="quantity-fraction",
        ),
        pytest.param(
            {"lines": [{"quantity": 1}], "payment_token": "tok_ok"},
            ["lines", "0", "sku"],
            id="sku-missing",
        ),
        pytest.param(
            {"lines": [{"sku": "NOPE-1", "quantity": 1}], "payment_token": "tok_ok"},
            ["lines", "0", "sku"],
            id="sku-unknown",
        ),
        pytest.param(
            {
                "lines": [{"sku": "MUG-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}],
                "payment_token": "tok_ok",
            },
            ["lines", "1", "sku"],
            id="sku-duplicate",
        ),
        pytest.param({"lines": BODY["lines"]}, ["payment_token"], id="token-missing"),
        pytest.param(
            {"lines": BODY["lines"], "payment_token": ""}, ["payment_token"], id="token-blank"
        ),
        pytest.param([BODY], ["non_field_errors"], id="body-is-a-list"),
    ],
)
def test_create_order_bad_input_is_400_with_field_errors(api, catalog, body, error_path):
    response = post_order(api, body)

    assert response.status_code == 400
    errors = response.json()
    for key in error_path:
        assert isinstance(errors, dict), f"expected {key!r} in a dict, got {errors!r}"
        assert key in errors, f"no {key!r} in {errors!r}"
        errors = errors[key]
    assert isinstance(errors, list)
    assert errors and all(isinstance(message, str) for message in errors)
    assert not Order.objects.exists()


def test_create_order_with_more_lines_than_allowed_is_400(api, catalog, settings):
    settings.ORDER_MAX_LINES = 3
    skus = ["BOOK-1", "MUG-1", "PEN-1", "HAT-1"]
    Product.objects.create(sku="HAT-1", name="A hat", price=Decimal("5.00"), stock=5)
    lines = [{"sku": sku, "quantity": 1} for sku in skus]

    response = post_order(api, {"lines": lines, "payment_token": "tok_ok"})

    assert response.status_code == 400
    assert response.json() == {"lines": ["At most 3 lines per order."]}
    assert not Order.objects.exists()
    assert post_order(api, {"lines": lines[:3], "payment_token": "tok_ok"}).status_code == 202


def test_create_order_with_malformed_json_is_400(api, catalog):
    response = api.post(
        ORDERS_URL, data=b'{"lines": [{"sku": "BOOK-1",', content_type="application/json"
    )

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Order.objects.exists()


def test_idempotency_key_with_the_same_body_returns_the_first_order(api, catalog):
    first = post_order(api, HTTP_IDEMPOTENCY_KEY="checkout-1")
    second = post_order(api, HTTP_IDEMPOTENCY_KEY="checkout-1")

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] == second.json()["id"]
    assert second["Location"] == first["Location"]
    assert Order.objects.count() == 1


def test_idempotency_key_with_a_different_body_is_409(api, catalog):
    first = post_order(api, HTTP_IDEMPOTENCY_KEY="checkout-1")
    other_body = {**BODY, "lines": [{"sku": "BOOK-1", "quantity": 5}]}

    response = post_order(api, other_body, HTTP_IDEMPOTENCY_KEY="checkout-1")

    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["detail"]
    assert list(Order.objects.values_list("pk", flat=True)) == [uuid.UUID(first.json()["id"])]


def test_idempotency_key_longer_than_255_is_400(api, catalog):
    response = post_order(api, HTTP_IDEMPOTENCY_KEY="k" * 256)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Order.objects.exists()
    assert post_order(api, HTTP_IDEMPOTENCY_KEY="k" * 255).status_code == 202


def test_create_with_wait_answers_200_when_the_order_is_terminal(api, catalog):
    first = post_order(api, HTTP_IDEMPOTENCY_KEY="checkout-1")
    order_failed(Order.objects.get(pk=first.json()["id"]))

    response = api.post(
        f"{ORDERS_URL}?wait=1", BODY, format="json", HTTP_IDEMPOTENCY_KEY="checkout-1"
    )

    assert response.json()["id"] == first.json()["id"]
    assert response.json()["status"] == "failed"
    assert response.status_code == 200


def test_create_with_wait_answers_202_when_the_order_stays_unfinished(api, catalog):
    response = api.post(f"{ORDERS_URL}?wait=1", BODY, format="json")  # no worker runs here

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert Order.objects.count() == 1


@pytest.mark.parametrize("wait", ["abc", "-1", "31"])
def test_create_with_a_bad_wait_is_400(api, catalog, wait):
    response = api.post(f"{ORDERS_URL}?wait={wait}", BODY, format="json")

    assert response.status_code == 400
    assert "wait" in response.json()
    assert not Order.objects.exists()


# --- GET /api/orders/ and /api/orders/<id>/ -----------------------------------------------------


def test_list_shows_own_orders_and_staff_sees_all(api, catalog, customer, other_customer, staff):
    mine = {str(place(customer).pk), str(place(customer, sku="MUG-1").pk)}
    theirs = str(place(other_customer).pk)

    response = api.get(ORDERS_URL)

    assert response.status_code == 200
    assert ids(response) == mine
    assert ids(client_for(staff).get(ORDERS_URL)) == {*mine, theirs}


def test_list_filters_by_status(api, catalog, customer):
    broken = str(order_failed(place(customer)).pk)
    fine = str(place(customer, sku="MUG-1").pk)

    assert ids(api.get(ORDERS_URL, {"status": "failed"})) == {broken}
    assert ids(api.get(ORDERS_URL, {"status": "accepted"})) == {fine}
    assert ids(api.get(ORDERS_URL, {"status": "confirmed"})) == set()


def test_list_with_an_unknown_status_is_400(api, db):
    response = api.get(ORDERS_URL, {"status": "bogus"})

    assert response.status_code == 400
    assert "status" in response.json()


def test_list_is_paginated_newest_first(api, customer):
    orders = Order.objects.bulk_create(
        [Order(user=customer, payment_token="tok_ok", correlation_id=f"c{n}") for n in range(51)]
    )
    # Distinct timestamps: the page boundary must not depend on how ties happen to sort.
    start = timezone.now()
    for n, order in enumerate(orders):
        Order.objects.filter(pk=order.pk).update(created_at=start - timedelta(seconds=n))

    first = api.get(ORDERS_URL).json()

    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 51
    assert len(first["results"]) == 50
    assert first["previous"] is None
    assert first["next"].endswith("/api/orders/?page=2")
    created = [row["created_at"] for row in first["results"]]
    assert created == sorted(created, reverse=True)
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1
    assert second["next"] is None
    assert second["previous"] is not None
    assert not ids(api.get(first["next"])) & {row["id"] for row in first["results"]}


def test_detail_for_owner_and_staff_404_for_anyone_else(
    api, catalog, customer, other_customer, staff
):
    order = place(customer)

    response = api.get(detail_url(order.pk))
    assert response.status_code == 200
    assert response.json()["id"] == str(order.pk)
    assert [event["name"] for event in response.json()["events"]] == ["accepted"]
    assert client_for(staff).get(detail_url(order.pk)).status_code == 200
    assert client_for(other_customer).get(detail_url(order.pk)).status_code == 404
    assert api.get(detail_url(uuid.uuid4())).status_code == 404


def test_unauthenticated_requests_are_401(catalog, customer):
    anonymous = APIClient()
    order = place(customer)

    for response in (
        anonymous.get(ORDERS_URL),
        post_order(anonymous),
        anonymous.get(detail_url(order.pk)),
        anonymous.get("/api/products/"),
        anonymous.get("/api/notifications/"),
    ):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
    assert Order.objects.count() == 1


# --- auth and catalog ---------------------------------------------------------------------------


def test_token_for_good_credentials_authenticates(customer, catalog):
    anonymous = APIClient()

    response = anonymous.post(
        "/api/auth/token/", {"username": "alice", "password": "alice-password"}, format="json"
    )

    assert response.status_code == 200
    token = response.json()["token"]
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anonymous.get(ORDERS_URL).status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "alice-password"},
        {"username": "alice"},
    ],
)
def test_token_for_bad_credentials_is_400(customer, credentials):
    response = APIClient().post("/api/auth/token/", credentials, format="json")

    assert response.status_code == 400
    assert "token" not in response.json()


def test_products_lists_the_catalog_with_decimal_string_prices(api, catalog):
    response = api.get("/api/products/")

    assert response.status_code == 200
    assert response.json()["count"] == 3
    assert response.json()["results"] == [
        {"sku": "BOOK-1", "name": "A book", "price": "12.50", "currency": "EUR", "stock": 100},
        {"sku": "MUG-1", "name": "A mug", "price": "8.00", "currency": "EUR", "stock": 50},
        {"sku": "PEN-1", "name": "A pen", "price": "1.20", "currency": "EUR", "stock": 3},
    ]


# --- POST /api/orders/<id>/replay/ --------------------------------------------------------------


def replay_url(order_id) -> str:
    return f"{detail_url(order_id)}replay/"


def test_replay_by_a_customer_is_403(api, catalog, customer):
    order = order_failed(place(customer))

    response = api.post(replay_url(order.pk))

    assert response.status_code == 403
    order.refresh_from_db()
    assert order.status == OrderStatus.FAILED
    assert order.replays == 0


def test_replay_of_a_non_failed_order_is_409(catalog, customer, staff):
    order = place(customer)

    response = client_for(staff).post(replay_url(order.pk))

    assert response.status_code == 409
    assert "only failed orders replay" in response.json()["detail"]
    order.refresh_from_db()
    assert (order.status, order.replays) == (OrderStatus.ACCEPTED, 0)


def test_replay_of_a_failed_order_is_202_and_resumes_it(catalog, customer, staff):
    order = order_failed(place(customer))

    response = client_for(staff).post(replay_url(order.pk))

    assert response.status_code == 202
    assert response.json()["id"] == str(order.pk)
    assert response.json()["status"] == "accepted"
    assert "replayed" in [event["name"] for event in response.json()["events"]]
    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert order.replays == 1
    assert DeadLetter.objects.get(order=order).replayed_at is not None


def test_replay_of_an_unknown_order_is_404(db, staff):
    assert client_for(staff).post(replay_url(uuid.uuid4())).status_code == 404


# --- /healthz -----------------------------------------------------------------------------------


def test_healthz_reports_database_and_broker_ok(db):
    response = APIClient().get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert (body["database"], body["broker"]) == ("ok", "ok")


# --- /api/notifications/ ------------------------------------------------------------------------


def test_notifications_list_own_newest_first_with_unread_count(api, customer, other_customer):
    oldest = notify(customer, "first")
    notify(other_customer, "not yours")
    newest = notify(customer, "second")
    newest.read_at = timezone.now()
    newest.save()

    response = api.get("/api/notifications/")

    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body["results"]] == [newest.pk, oldest.pk]
    assert body["count"] == 2
    assert body["unread"] == 1
    assert set(body["results"][0]) == {
        "id",
        "kind",
        "title",
        "body",
        "data",
        "read_at",
        "created_at",
    }


def test_notification_read_marks_it_read_once(api, customer):
    notification = notify(customer, "hello")

    response = api.post(f"/api/notifications/{notification.pk}/read/")

    assert response.status_code == 200
    assert response.json()["read_at"] is not None
    notification.refresh_from_db()
    first_read_at = notification.read_at
    assert first_read_at is not None
    assert api.get("/api/notifications/").json()["unread"] == 0
    assert api.post(f"/api/notifications/{notification.pk}/read/").status_code == 200
    notification.refresh_from_db()
    assert notification.read_at == first_read_at


def test_notification_of_another_user_is_404(api, other_customer):
    theirs = notify(other_customer, "private")

    response = api.post(f"/api/notifications/{theirs.pk}/read/")

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None
