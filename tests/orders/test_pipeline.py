"""The pipeline end to end: a real Celery worker on the real Redis broker, the sandbox provider
as a real HTTP server, the real database."""

import pytest
from django.core import mail
from django_celery_results.models import TaskResult

from notifications.models import Notification
from orders.models import DeadLetter, Order, OrderStatus, Payment, Product
from orders.services import order_create, replay_order
from orders.tasks import authorize_payment, confirm_order, verify_cart
from tests.conftest import wait_for
from tests.invariants import assert_settled

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def place(user, *, token: str = "tok_ok", lines=None) -> Order:
    order, _ = order_create(
        user=user,
        lines=lines or [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}],
        payment_token=token,
    )
    return order


def settled(order: Order, timeout: float = 40.0) -> Order:
    """Wait until the order is terminal and its outcome notification was recorded."""

    def done():
        order.refresh_from_db()
        # emailed_at is set once the email went out: the notification step is over.
        return (
            order.is_terminal
            and Notification.objects.filter(
                data__order_id=str(order.pk), kind=f"order.{order.status}", emailed_at__isnull=False
            ).exists()
        )

    wait_for(done, timeout=timeout)
    return order


@pytest.fixture(autouse=True)
def _every_order_ends_settled(sandbox):
    """SPEC §2 for every order a test here ends."""
    yield
    for order in Order.objects.all():
        if order.is_terminal:
            assert_settled(order, sandbox)


def event_names(order: Order) -> list[str]:
    return list(order.events.values_list("name", flat=True))


def test_ok_token_is_confirmed_with_exactly_one_capture(celery_worker, sandbox, catalog, customer):
    order = settled(place(customer))

    assert order.status == OrderStatus.CONFIRMED
    assert order.payment.status == "captured"
    stats = sandbox.stats()
    assert (stats["payments"], stats["captures"], stats["refunds"]) == (1, 1, 0)
    assert Product.objects.get(sku="BOOK-1").stock == 98
    assert Product.objects.get(sku="MUG-1").stock == 49
    names = event_names(order)
    for name in ["accepted", "payment_authorized", "cart_verified", "stock_reserved", "confirmed"]:
        assert name in names
    assert set(order.events.values_list("correlation_id", flat=True)) == {order.correlation_id}
    wait_for(lambda: mail.outbox, timeout=5)
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]
    assert "confirmed" in mail.outbox[0].subject


def test_declined_token_ends_declined_with_no_charge(celery_worker, sandbox, catalog, customer):
    order = settled(place(customer, token="tok_declined"))

    assert order.status == OrderStatus.PAYMENT_DECLINED
    assert list(Payment.objects.filter(order=order).values_list("status", flat=True)) == [
        "declined"
    ]
    stats = sandbox.stats()
    assert (stats["payments"], stats["captures"], stats["refunds"]) == (0, 0, 0)
    assert Product.objects.get(sku="BOOK-1").stock == 100
    assert Notification.objects.get(user=customer).kind == "order.payment_declined"
    # The declined order skipped the steps it does not need: no line check, no confirmation.
    ran = set(
        TaskResult.objects.filter(task_kwargs__contains=str(order.pk)).values_list(
            "task_name", flat=True
        )
    )
    assert "orders.authorize_payment" in ran
    assert ran.isdisjoint({"orders.check_cart_line", "orders.confirm_order"}), ran


def test_over_stock_is_rejected_and_the_authorization_refunded(
    celery_worker, sandbox, catalog, customer
):
    order = settled(place(customer, lines=[{"sku": "PEN-1", "quantity": 5}]))

    assert order.status == OrderStatus.CART_REJECTED
    assert "only 3 in stock" in order.failure_reason
    assert order.payment.status == "refunded"
    stats = sandbox.stats()
    assert (stats["payments"], stats["captures"], stats["refunds"]) == (1, 0, 1)
    assert Product.objects.get(sku="PEN-1").stock == 3
    assert "payment_refunded" in event_names(order)


def test_flaky_provider_is_retried_to_one_confirmed_payment(
    celery_worker, sandbox, catalog, customer
):
    order = settled(place(customer, token="tok_flaky"))

    assert order.status == OrderStatus.CONFIRMED
    assert Payment.objects.filter(order=order).count() == 1
    stats = sandbox.stats()
    assert (stats["payments"], stats["captures"]) == (1, 1)
    retries = order.events.filter(name="step_retry")
    assert retries.count() == 2
    assert sorted(retries.values_list("attempt", flat=True)) == [1, 2]


def test_running_every_step_again_changes_nothing(celery_worker, sandbox, catalog, customer):
    order = settled(place(customer))
    before = sandbox.stats()
    events_before = order.events.count()

    for task in (authorize_payment, verify_cart, confirm_order):
        task.delay(str(order.pk)).get(timeout=30)

    order.refresh_from_db()
    assert order.status == OrderStatus.CONFIRMED
    after = sandbox.stats()
    assert (after["payments"], after["captures"], after["refunds"]) == (
        before["payments"],
        before["captures"],
        before["refunds"],
    )
    assert Product.objects.get(sku="BOOK-1").stock == 98
    assert order.events.count() == events_before


def test_out_of_retries_fails_then_replay_confirms_once(
    celery_worker, sandbox, catalog, customer, settings
):
    settings.PIPELINE_MAX_RETRIES = 2
    settings.PAYMENT_PROVIDER_URL = "http://127.0.0.1:9"  # nothing listens: connection refused
    order = settled(place(customer))

    assert order.status == OrderStatus.FAILED
    assert order.failed_step == "authorize_payment"
    dead_letter = DeadLetter.objects.get(order=order)
    assert dead_letter.task_name == "orders.authorize_payment"
    assert dead_letter.attempts == 3
    assert dead_letter.correlation_id == order.correlation_id
    assert "provider unreachable" in dead_letter.exception

    settings.PAYMENT_PROVIDER_URL = sandbox.url
    replay_order(order_id=order.pk)
    order = settled(order)

    assert order.status == OrderStatus.CONFIRMED
    stats = sandbox.stats()
    assert (stats["payments"], stats["captures"]) == (1, 1)
    assert "replayed" in event_names(order)
