"""The order services called directly against the database.

The sandbox provider is a real HTTP server (fixture `sandbox`, reset for every test). It admits
2 requests per second per API key, and the provider client paces itself through the cluster-wide
Redis limiter keyed by the same API key. Each test gets an API key of its own, so it starts with
a full budget whatever ran before or beside it; a test that needs a third call within a second
waits for the window first (`wait_for_provider_budget`).
"""

import base64
import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from orders.errors import IdempotencyConflict, InvalidOrder
from orders.models import (
    DeadLetter,
    Order,
    OrderLine,
    OrderStatus,
    OutboxMessage,
    Payment,
    PaymentStatus,
    Product,
)
from orders.provider.errors import TransientError
from orders.services import (
    ReplayNotAllowed,
    cart_line_check,
    cart_verify,
    order_confirm,
    order_create,
    outbox_mark_delivered,
    outbox_publish,
    outbox_relay,
    payment_authorize,
    replay_order,
)
from orders.services.outbox import OUTBOX_HEADER
from project.celery import app as celery_app
from project.observability import MESSAGE_HEADER
from tests.factories import order_failed

START_PIPELINE = "orders.start_pipeline"
BOOK_AND_MUG = [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def provider_budget_of_its_own(settings):
    settings.PAYMENT_PROVIDER_API_KEY = f"sk_test_{uuid.uuid4().hex}"


def place(user, *, card: str = "tok_ok", lines=None, **extra) -> Order:
    order, created = order_create(
        user=user, lines=lines or BOOK_AND_MUG, payment_token=card, **extra
    )
    assert created
    return order


def authorized(user, **kwargs) -> Order:
    """An order whose payment the sandbox authorized (one provider call)."""
    order = place(user, **kwargs)
    order = payment_authorize(order_id=str(order.pk))
    assert order.status == OrderStatus.PAYMENT_AUTHORIZED
    return order


def check_lines(order: Order) -> list[bool | None]:
    """Run every line's check (the last one joins the cart); the lines' verdicts."""
    for line_id in order.lines.values_list("pk", flat=True):
        cart_line_check(order_id=str(order.pk), line_id=line_id)
    return list(order.lines.values_list("check_ok", flat=True))


def verified(user, **kwargs) -> Order:
    """An order through the cart check (one provider call); its status is whatever it earned."""
    order = authorized(user, **kwargs)
    check_lines(order)
    return cart_verify(order_id=str(order.pk))


def provider_counts(sandbox) -> tuple[int, int, int]:
    stats = sandbox.stats()
    return stats["payments"], stats["captures"], stats["refunds"]


def wait_for_provider_budget() -> None:
    """Let the sandbox's rolling 1 s window (2 requests per key) empty."""
    time.sleep(1.1)


def stock(sku: str) -> int:
    return Product.objects.get(sku=sku).stock


def event_names(order: Order) -> list[str]:
    return list(order.events.values_list("name", flat=True))


def broker_messages(broker_redis, queue: str = "orders") -> list[dict]:
    """The messages waiting in one of this run's broker queues, oldest first."""
    prefix = celery_app.conf.broker_transport_options.get("global_keyprefix", "")
    messages = []
    # kombu LPUSHes and workers BRPOP: the list's tail is the oldest message.
    for raw in reversed(broker_redis.lrange(f"{prefix}{queue}", 0, -1)):
        envelope = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "kwargs": kwargs, **envelope})
    return messages


# --- order_create -------------------------------------------------------------------------------


def test_order_create_captures_unit_prices_and_total_at_order_time(catalog, customer):
    order = place(customer, correlation_id="req-42")

    Product.objects.filter(sku="BOOK-1").update(price=Decimal("99.00"))

    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert order.total == Decimal("33.00")  # 2 x 12.50 + 1 x 8.00
    assert order.currency == "EUR"
    assert order.user == customer
    lines = list(order.lines.values_list("sku", "quantity", "unit_price"))
    assert lines == [("BOOK-1", 2, Decimal("12.50")), ("MUG-1", 1, Decimal("8.00"))]
    assert order.correlation_id == "req-42"
    assert list(order.events.values_list("name", "correlation_id")) == [("accepted", "req-42")]


def test_order_create_generates_a_correlation_id_when_none_is_given(catalog, customer):
    first, second = place(customer), place(customer, lines=[{"sku": "PEN-1", "quantity": 1}])

    assert first.correlation_id
    assert first.correlation_id != second.correlation_id


@pytest.mark.parametrize(
    ("lines", "errors"),
    [
        pytest.param(
            [{"sku": "BOOK-1", "quantity": 1}, {"sku": "NOPE-1", "quantity": 1}],
            {"lines": {1: {"sku": ["Unknown product 'NOPE-1'."]}}},
            id="unknown-sku",
        ),
        pytest.param(
            [{"sku": "MUG-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 2}],
            {"lines": {1: {"sku": ["Product 'MUG-1' appears twice; merge the lines."]}}},
            id="duplicate-sku",
        ),
    ],
)
def test_order_create_rejects_bad_lines_with_field_errors(catalog, customer, lines, errors):
    with pytest.raises(InvalidOrder) as raised:
        order_create(user=customer, lines=lines, payment_token="tok_ok")

    # Keyed by line index: the shape DRF gives the serializer's own errors for the same lines.
    assert raised.value.errors == errors
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_order_create_rejects_mixed_currencies(catalog, customer):
    Product.objects.create(
        sku="HAT-USD", name="A hat", price=Decimal("5.00"), currency="USD", stock=5
    )
    lines = [{"sku": "BOOK-1", "quantity": 1}, {"sku": "HAT-USD", "quantity": 1}]

    with pytest.raises(InvalidOrder) as raised:
        order_create(user=customer, lines=lines, payment_token="tok_ok")

    assert raised.value.errors == {"lines": ["All products of one order must share a currency."]}
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_order_create_writes_its_outbox_row_unpublished_until_commit(catalog, customer):
    # `db` wraps the test in a transaction that never commits: the row exists, nothing was sent.
    order = place(customer)

    message = OutboxMessage.objects.get()
    assert message.task_name == START_PIPELINE
    assert message.kwargs == {"order_id": str(order.pk)}
    assert message.correlation_id == order.correlation_id
    assert message.published_at is None
    assert message.attempts == 0
    # Leased to the request that wrote it, which sends it after commit: the relay keeps off.
    assert message.lease_until > timezone.now()
    assert outbox_relay() == 0


@pytest.mark.django_db(transaction=True)
def test_order_create_publishes_its_outbox_row_after_commit(broker_redis, catalog, customer):
    order = place(customer)

    message = OutboxMessage.objects.get()
    assert message.kwargs == {"order_id": str(order.pk)}
    [sent] = [m for m in broker_messages(broker_redis) if m["task"] == START_PIPELINE]
    assert sent["kwargs"] == {"order_id": str(order.pk)}
    assert sent["headers"][MESSAGE_HEADER] == order.correlation_id
    assert sent["headers"][OUTBOX_HEADER] == message.pk
    # Sent with no further write; still the writer's until a worker marks it received.
    assert (message.published_at, message.attempts) == (None, 0)
    assert message.lease_until > timezone.now()
    assert outbox_relay() == 0

    assert outbox_mark_delivered(message_id=message.pk) is True
    assert outbox_mark_delivered(message_id=message.pk) is False
    message.refresh_from_db()
    assert message.published_at is not None


@pytest.mark.django_db(transaction=True)
def test_order_create_rolled_back_leaves_no_order_no_outbox_row_and_sends_nothing(
    broker_redis, catalog, customer
):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        place(customer)
        raise Abort

    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()
    assert [m for m in broker_messages(broker_redis) if m["task"] == START_PIPELINE] == []


def test_idempotency_key_with_the_same_body_returns_the_first_order(catalog, customer):
    first = place(customer, idempotency_key="key-1")

    again, created = order_create(
        user=customer, lines=BOOK_AND_MUG, payment_token="tok_ok", idempotency_key="key-1"
    )

    assert created is False
    assert again.pk == first.pk
    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 2
    assert OutboxMessage.objects.count() == 1


@pytest.mark.parametrize(
    ("lines", "token"),
    [
        pytest.param([{"sku": "BOOK-1", "quantity": 3}], "tok_ok", id="other-lines"),
        pytest.param(BOOK_AND_MUG, "tok_declined", id="other-token"),
    ],
)
def test_idempotency_key_with_a_different_body_is_a_conflict(catalog, customer, lines, token):
    first = place(customer, idempotency_key="key-1")

    with pytest.raises(IdempotencyConflict):
        order_create(user=customer, lines=lines, payment_token=token, idempotency_key="key-1")

    assert list(Order.objects.values_list("pk", flat=True)) == [first.pk]


def test_the_same_idempotency_key_for_two_users_creates_two_orders(
    catalog, customer, other_customer
):
    mine = place(customer, idempotency_key="shared-key")
    theirs = place(other_customer, idempotency_key="shared-key")

    assert mine.pk != theirs.pk
    assert Order.objects.filter(idempotency_key="shared-key").count() == 2
    assert {mine.user_id, theirs.user_id} == {customer.pk, other_customer.pk}


# --- payment_authorize --------------------------------------------------------------------------


def test_authorize_ok_records_one_payment_and_a_second_run_changes_nothing(
    sandbox, catalog, customer
):
    order = authorized(customer)

    payment = Payment.objects.get(order=order)
    assert payment.status == PaymentStatus.AUTHORIZED
    assert payment.amount == Decimal("33.00")
    assert payment.currency == "EUR"
    assert payment.provider_payment_id.startswith("pay_")
    assert provider_counts(sandbox) == (1, 0, 0)
    assert "payment_authorized" in event_names(order)
    requests_before, events_before = sandbox.stats()["requests"], order.events.count()

    again = payment_authorize(order_id=str(order.pk))

    assert again.status == OrderStatus.PAYMENT_AUTHORIZED
    assert Payment.objects.filter(order=order).count() == 1
    assert Payment.objects.get(order=order).provider_payment_id == payment.provider_payment_id
    assert provider_counts(sandbox) == (1, 0, 0)
    assert sandbox.stats()["requests"] == requests_before
    assert order.events.count() == events_before


def test_authorize_declined_ends_declined_with_a_declined_payment(sandbox, catalog, customer):
    order = place(customer, card="tok_declined")

    order = payment_authorize(order_id=str(order.pk))

    order.refresh_from_db()
    assert order.status == OrderStatus.PAYMENT_DECLINED
    assert "card_declined" in order.failure_reason
    payment = Payment.objects.get(order=order)
    assert (payment.status, payment.provider_payment_id) == (PaymentStatus.DECLINED, None)
    assert provider_counts(sandbox) == (0, 0, 0)
    assert sandbox.stats()["declined"] == 1
    assert order.events.filter(name="payment_declined").count() == 1


def test_authorize_with_the_provider_unreachable_is_transient_and_keeps_the_order_accepted(
    sandbox, settings, catalog, customer
):
    order = place(customer)
    settings.PAYMENT_PROVIDER_URL = "http://127.0.0.1:9"  # nothing listens: connection refused

    with pytest.raises(TransientError):
        payment_authorize(order_id=str(order.pk))

    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert not Payment.objects.filter(order=order).exists()
    assert provider_counts(sandbox) == (0, 0, 0)


def test_authorize_flaky_is_transient_twice_then_authorizes_once(sandbox, catalog, customer):
    order = place(customer, card="tok_flaky")

    for _ in range(2):
        with pytest.raises(TransientError):
            payment_authorize(order_id=str(order.pk))
        order.refresh_from_db()
        assert order.status == OrderStatus.ACCEPTED
    wait_for_provider_budget()
    order = payment_authorize(order_id=str(order.pk))

    assert order.status == OrderStatus.PAYMENT_AUTHORIZED
    assert Payment.objects.filter(order=order).count() == 1
    assert provider_counts(sandbox) == (1, 0, 0)
    assert sandbox.stats()["unavailable_503"] == 2


# --- cart_line_check + cart_verify --------------------------------------------------------------


def test_cart_all_lines_ok_is_verified_by_the_last_check(sandbox, catalog, customer):
    order = authorized(customer)

    assert check_lines(order) == [True, True]
    order.refresh_from_db()
    assert order.status == OrderStatus.CART_VERIFIED
    order = cart_verify(order_id=str(order.pk))  # the join already happened: nothing more

    assert order.status == OrderStatus.CART_VERIFIED
    assert order.failure_reason == ""
    assert order.events.filter(name="cart_verified").count() == 1


def test_cart_over_stock_is_compensating_with_a_readable_reason(sandbox, catalog, customer):
    order = authorized(customer, lines=[{"sku": "PEN-1", "quantity": 5}])

    assert check_lines(order) == [False]
    order = cart_verify(order_id=str(order.pk))

    assert order.status == OrderStatus.COMPENSATING
    assert order.failure_reason == "PEN-1: only 3 in stock, 5 ordered."
    assert stock("PEN-1") == 3


def test_cart_price_changed_after_ordering_is_compensating(sandbox, catalog, customer):
    order = authorized(customer)
    Product.objects.filter(sku="BOOK-1").update(price=Decimal("13.00"))

    assert check_lines(order) == [False, True]
    order = cart_verify(order_id=str(order.pk))

    assert order.status == OrderStatus.COMPENSATING
    assert order.failure_reason == "BOOK-1: price changed from 12.50 to 13.00."


@pytest.mark.parametrize(
    ("lines", "status", "verdicts"),
    [
        pytest.param(BOOK_AND_MUG, OrderStatus.CART_VERIFIED, [True, True], id="ok"),
        pytest.param(
            [{"sku": "BOOK-1", "quantity": 1}, {"sku": "PEN-1", "quantity": 4}],
            OrderStatus.COMPENSATING,
            [True, False],
            id="over-stock",
        ),
    ],
)
def test_cart_verify_runs_the_line_checks_that_never_ran(
    sandbox, catalog, customer, lines, status, verdicts
):
    order = authorized(customer, lines=lines)

    order = cart_verify(order_id=str(order.pk))

    assert order.status == status
    assert list(order.lines.values_list("check_ok", flat=True)) == verdicts


def test_cart_verify_a_second_time_changes_nothing(sandbox, catalog, customer):
    order = verified(customer)
    assert order.status == OrderStatus.CART_VERIFIED
    events_before = order.events.count()
    Product.objects.filter(sku="BOOK-1").update(price=Decimal("13.00"))

    again = cart_verify(order_id=str(order.pk))

    assert again.status == OrderStatus.CART_VERIFIED
    assert again.failure_reason == ""
    assert order.events.count() == events_before
    assert list(order.lines.values_list("check_ok", flat=True)) == [True, True]


def test_cart_line_check_outside_the_cart_step_is_moot(catalog, customer):
    order = place(customer)  # still accepted: the payment was never authorized

    assert check_lines(order) == [None, None]
    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED


def test_a_line_check_delivered_twice_joins_once(sandbox, catalog, customer):
    """The join is the order's row: a repeated check neither stalls nor verifies twice."""
    order = authorized(customer)
    first, second = order.lines.values_list("pk", flat=True)

    assert cart_line_check(order_id=str(order.pk), line_id=first) is False
    assert cart_line_check(order_id=str(order.pk), line_id=first) is False  # the duplicate
    assert cart_line_check(order_id=str(order.pk), line_id=second) is True  # completes the cart
    assert cart_line_check(order_id=str(order.pk), line_id=second) is False  # too late: moot

    order.refresh_from_db()
    assert order.status == OrderStatus.CART_VERIFIED
    assert order.events.filter(name="cart_verified").count() == 1


# --- order_confirm ------------------------------------------------------------------------------


def test_confirm_reserves_stock_once_and_captures_once(sandbox, catalog, customer):
    order = verified(customer)

    order = order_confirm(order_id=str(order.pk))

    assert order.status == OrderStatus.CONFIRMED
    assert order.payment.status == PaymentStatus.CAPTURED
    assert (stock("BOOK-1"), stock("MUG-1")) == (98, 49)
    assert provider_counts(sandbox) == (1, 1, 0)
    assert "stock_reserved" in event_names(order)
    assert "confirmed" in event_names(order)
    events_before = order.events.count()

    again = order_confirm(order_id=str(order.pk))

    assert again.status == OrderStatus.CONFIRMED
    assert (stock("BOOK-1"), stock("MUG-1")) == (98, 49)
    assert provider_counts(sandbox) == (1, 1, 0)
    assert order.events.count() == events_before


def test_confirm_of_a_rejected_cart_refunds_and_leaves_stock_untouched(sandbox, catalog, customer):
    order = verified(customer, lines=[{"sku": "PEN-1", "quantity": 5}])
    assert order.status == OrderStatus.COMPENSATING

    order = order_confirm(order_id=str(order.pk))

    assert order.status == OrderStatus.CART_REJECTED
    assert order.payment.status == PaymentStatus.REFUNDED
    assert order.failure_reason == "PEN-1: only 3 in stock, 5 ordered."
    assert stock("PEN-1") == 3
    assert provider_counts(sandbox) == (1, 0, 1)
    assert "payment_refunded" in event_names(order)


def test_confirm_when_sold_out_after_the_check_refunds_and_takes_no_stock(
    sandbox, catalog, customer
):
    order = verified(customer)
    assert order.status == OrderStatus.CART_VERIFIED
    # MUG-1 is reserved after BOOK-1 (product id order): the BOOK-1 decrement must roll back.
    Product.objects.filter(sku="MUG-1").update(stock=0)

    order = order_confirm(order_id=str(order.pk))

    assert order.status == OrderStatus.CART_REJECTED
    assert order.failure_reason == "MUG-1: sold out before the order was confirmed."
    assert order.payment.status == PaymentStatus.REFUNDED
    assert (stock("BOOK-1"), stock("MUG-1")) == (100, 0)
    assert not Product.objects.filter(stock__lt=0).exists()
    assert provider_counts(sandbox) == (1, 0, 1)
    assert "stock_reservation_failed" in event_names(order)


# --- order_fail + replay_order ------------------------------------------------------------------


def test_order_fail_dead_letters_the_step_and_fails_the_order_once(catalog, customer):
    order = place(customer, correlation_id="corr-fail")

    failed = order_failed(order)

    assert failed.status == OrderStatus.FAILED
    order.refresh_from_db()
    assert order.status == OrderStatus.FAILED
    assert order.failed_step == "authorize_payment"
    assert order.failed_from_status == OrderStatus.ACCEPTED
    assert order.failure_reason == "We could not complete this order. Nothing was charged."
    dead_letter = DeadLetter.objects.get(order=order)
    assert dead_letter.exception == "TransientError: provider unreachable"
    assert dead_letter.reason == "out_of_retries"
    assert dead_letter.correlation_id == "corr-fail"
    assert dead_letter.task_name == "orders.authorize_payment"
    assert dead_letter.step == "authorize_payment"
    assert dead_letter.attempts == 6
    assert dead_letter.replayed_at is None
    assert order.events.get(name="failed").correlation_id == "corr-fail"
    notify = OutboxMessage.objects.get(task_name="notifications.notify")
    assert notify.kwargs["kind"] == "order.outcome"
    assert notify.kwargs["context"]["order_id"] == str(order.pk)

    again = order_failed(order, step="check_cart", attempts=2)

    assert again.status == OrderStatus.FAILED
    order.refresh_from_db()
    assert (order.failed_step, order.failed_from_status) == ("authorize_payment", "accepted")
    assert DeadLetter.objects.filter(order=order).count() == 1
    assert order.events.filter(name="failed").count() == 1


def test_order_fail_with_an_authorization_settles_before_it_is_failed(sandbox, catalog, customer):
    """SPEC §2: money held means `settling` first; settlement asks the provider and voids."""
    from orders.services import order_settle
    from tests.invariants import assert_settled

    order = authorized(customer)
    failing = order_failed(order, step="check_cart")

    assert failing.status == OrderStatus.SETTLING
    assert OutboxMessage.objects.filter(task_name="orders.settle_order").count() == 1
    assert not OutboxMessage.objects.filter(task_name="notifications.notify").exists()
    wait_for_provider_budget()
    settled = order_settle(order_id=str(order.pk))

    assert settled.status == OrderStatus.FAILED
    assert Payment.objects.get(order=order).status == PaymentStatus.REFUNDED
    assert provider_counts(sandbox) == (1, 0, 1)
    assert settled.events.get(name="settled").detail["refunded"] is True
    assert_settled(settled, sandbox)


def test_settlement_finds_a_capture_whose_answer_was_lost_and_confirms(sandbox, catalog, customer):
    """The capture happened at the provider, our rows never heard: the order did go through."""
    from orders.provider import get_provider
    from orders.services import order_settle
    from orders.services.confirmation import _reserve_stock
    from orders.services.payments import idempotency_key_for
    from tests.invariants import assert_settled

    order = verified(customer)
    _reserve_stock(order, 1)  # confirm_order's first phase; its capture is done by hand below
    order.refresh_from_db()
    assert order.status == OrderStatus.STOCK_RESERVED
    wait_for_provider_budget()
    get_provider().capture(
        payment_id=order.payment.provider_payment_id,
        idempotency_key=idempotency_key_for(order, "capture"),
    )  # the provider acted; our confirm_order "lost the answer" and then ran out of retries
    order_failed(order, step="confirm_order")
    wait_for_provider_budget()

    settled = order_settle(order_id=str(order.pk))

    assert settled.status == OrderStatus.CONFIRMED
    assert Payment.objects.get(order=order).status == PaymentStatus.CAPTURED
    assert provider_counts(sandbox) == (1, 1, 0)
    assert stock("BOOK-1") == 98
    assert_settled(settled, sandbox)


def test_a_step_interrupted_by_the_broker_is_not_a_failure(catalog, customer):
    """The broker refused a step's next link: the order keeps its status for recovery."""
    from orders.tasks import authorize_payment

    order = place(customer)
    authorize_payment.on_failure(
        BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        "task-id",
        (),
        {"order_id": str(order.pk)},
        None,
    )

    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert not DeadLetter.objects.exists()
    interrupted = order.events.get(name="step_interrupted")
    assert interrupted.detail["step"] == "authorize_payment"
    assert "Connection refused" in interrupted.detail["error"]


def test_order_fail_for_an_unknown_order_is_none(db):
    assert order_failed(Order(pk="00000000-0000-0000-0000-000000000000")) is None
    assert not DeadLetter.objects.exists()


def test_replay_after_settlement_starts_afresh_with_new_provider_keys(
    sandbox, catalog, customer, staff
):
    from orders.services import order_settle
    from orders.services.payments import idempotency_key_for

    order = authorized(customer)
    refunded_payment = order.payment.provider_payment_id
    order_failed(order, step="check_cart")
    wait_for_provider_budget()
    order_settle(order_id=str(order.pk))

    replayed = replay_order(str(order.pk), actor=staff)  # positional, as in the shell

    assert replayed.status == OrderStatus.ACCEPTED
    order.refresh_from_db()
    assert order.replays == 1
    assert (order.failure_reason, order.failed_step, order.failed_from_status) == ("", "", "")
    assert not Payment.objects.filter(order=order).exists()  # the refunded one is history
    event = order.events.get(name="replayed")
    assert event.detail == {
        "from_step": "authorize_payment",
        "by": "staff",
        "payment": refunded_payment,
        "was": "refunded",
    }
    assert event.correlation_id == order.correlation_id
    assert idempotency_key_for(order, "authorize") == f"order-{order.pk}-r1-authorize"
    assert DeadLetter.objects.get(order=order).replayed_at is not None
    message = OutboxMessage.objects.filter(task_name=START_PIPELINE).latest("id")
    assert message.kwargs == {
        "order_id": str(order.pk),
        "run": order.run,
        "from_step": "authorize_payment",
    }
    assert message.correlation_id == order.correlation_id
    assert message.published_at is None  # sent after commit, which `db` never reaches


def test_replay_of_a_non_failed_order_is_not_allowed(catalog, customer):
    order = place(customer)
    order_failed(order)
    replay_order(order_id=str(order.pk))

    with pytest.raises(ReplayNotAllowed):
        replay_order(order_id=str(order.pk))  # accepted again: not failed

    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert order.replays == 1
    assert OutboxMessage.objects.filter(task_name=START_PIPELINE).count() == 2  # create, replay


# --- outbox -------------------------------------------------------------------------------------


def unpublished_message() -> OutboxMessage:
    """A row its writer never sent (it died after commit, its lease ran out): the relay's."""
    return OutboxMessage.objects.create(
        task_name=START_PIPELINE, kwargs={"order_id": "outbox-test"}, correlation_id="corr-outbox"
    )


def sent_to_broker(broker_redis) -> list[dict]:
    return [
        message["kwargs"]
        for message in broker_messages(broker_redis)
        if message["task"] == START_PIPELINE
    ]


def test_outbox_publish_sends_once(db, broker_redis):
    message = unpublished_message()

    assert outbox_publish(message_id=message.pk) is True
    assert outbox_publish(message_id=message.pk) is None  # leased until a worker receives it

    message.refresh_from_db()
    assert (message.published_at, message.attempts) == (None, 1)
    assert message.lease_until > timezone.now()
    assert sent_to_broker(broker_redis) == [{"order_id": "outbox-test"}]
    assert outbox_relay() == 0

    # Never received (the broker lost it): once the lease runs out it goes again, and each try
    # waits twice as long as the one before.
    OutboxMessage.objects.filter(pk=message.pk).update(lease_until=timezone.now())
    assert outbox_relay() == 1
    message.refresh_from_db()
    assert message.attempts == 2
    assert message.lease_until > timezone.now() + timedelta(seconds=55)
    # Received: nothing is sent again, lease or no lease.
    outbox_mark_delivered(message_id=message.pk)
    OutboxMessage.objects.filter(pk=message.pk).update(lease_until=None)
    assert outbox_relay() == 0
    assert sent_to_broker(broker_redis) == [{"order_id": "outbox-test"}] * 2


def test_outbox_message_under_a_lease_is_left_to_its_holder(db, broker_redis):
    message = unpublished_message()
    OutboxMessage.objects.filter(pk=message.pk).update(
        lease_until=timezone.now() + timedelta(seconds=30)
    )

    assert outbox_publish(message_id=message.pk) is None
    assert outbox_relay() == 0
    message.refresh_from_db()
    assert (message.published_at, message.attempts) == (None, 0)
    assert sent_to_broker(broker_redis) == []

    # The holder died: once its lease runs out the relay sends the message.
    OutboxMessage.objects.filter(pk=message.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert outbox_relay() == 1
    message.refresh_from_db()
    assert message.attempts == 1
    assert sent_to_broker(broker_redis) == [{"order_id": "outbox-test"}]


def test_outbox_publish_failure_keeps_the_row_for_the_relay(db, broker_redis, monkeypatch):
    message = unpublished_message()
    second = OutboxMessage.objects.create(task_name=START_PIPELINE, kwargs={"order_id": "second"})

    def broker_down(*args, **kwargs):
        raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:9. Connection refused.")

    # The one stand-in: a broker outage end to end is tested with a real worker elsewhere.
    monkeypatch.setattr(celery_app, "send_task", broker_down)

    assert outbox_publish(message_id=message.pk) is False
    message.refresh_from_db()
    assert message.published_at is None
    assert message.attempts == 1
    assert "OperationalError" in message.last_error
    assert message.lease_until is None
    # The relay stops at the first refusal rather than hammering a broker that is down.
    assert outbox_relay() == 0
    second.refresh_from_db()
    assert second.attempts == 0

    monkeypatch.undo()
    assert outbox_relay() == 2

    message.refresh_from_db()
    assert message.attempts == 3  # the failed publish, the relay's failed try, the success
    assert message.lease_until > timezone.now()
    assert sent_to_broker(broker_redis) == [{"order_id": "outbox-test"}, {"order_id": "second"}]
