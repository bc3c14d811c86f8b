"""Issue 10: money and orders end in the right place under every fault.

Each test breaks a promise between two effects (an answer lost after the provider acted, a twin
failing the order mid-capture, a message that kills its worker, a duplicated line check, two
recovery sweeps at once, a stale form) and asserts on outcomes: statuses, the provider's own
ledger (the sandbox, a real HTTP server), stock and rows. SPEC §2's invariant is checked on every
order a test ends (tests/invariants.py).
"""

import threading
import time
import uuid
from datetime import timedelta
from io import StringIO

import pytest
import redis
from celery.exceptions import Retry
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from orders import workflow
from orders.models import DeadLetter, Order, OrderStatus, Payment, PaymentStatus, Product
from orders.provider.errors import RateLimitWait, Throttled, TransientError
from orders.services import (
    cart_line_check,
    order_confirm,
    order_create,
    order_recovery_claim,
    order_settle,
    payment_authorize,
    payments_reconcile,
)
from orders.services.confirmation import _reserve_stock
from orders.services.stock import product_stock_adjust, stock_take
from orders.tasks import authorize_payment, recover_orders
from project.celery import app as celery_app
from project.celery import check_time_budgets
from tests.conftest import wait_for
from tests.factories import order_failed
from tests.invariants import assert_settled, assert_stock_consistent, provider_payments_for
from tests.processes import beat_process, worker_process

LINES = [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}]


@pytest.fixture(autouse=True)
def provider_budget_of_its_own(settings):
    settings.PAYMENT_PROVIDER_API_KEY = f"sk_test_{uuid.uuid4().hex}"


def place(user, *, token="tok_ok", lines=None) -> Order:
    order, _ = order_create(user=user, lines=lines or LINES, payment_token=token)
    return order


def reserved(user) -> Order:
    """An order with its payment authorized, its cart verified and its stock reserved."""
    order = place(user)
    payment_authorize(order_id=str(order.pk))
    for line_id in order.lines.values_list("pk", flat=True):
        cart_line_check(order_id=str(order.pk), line_id=line_id)
    _reserve_stock(Order.objects.get(pk=order.pk), 1)
    order.refresh_from_db()
    assert order.status == OrderStatus.STOCK_RESERVED
    return order


def wait_for_provider_budget() -> None:
    time.sleep(1.1)  # the sandbox's rolling 1 s window (2 requests per key) empties


# --- 1. the capture's answer is lost, then the provider stays down past the retry budget ------


@pytest.mark.pipeline
def test_capture_answer_lost_then_provider_down_ends_confirmed_with_one_capture(
    celery_worker, sandbox, catalog, customer, settings
):
    settings.PIPELINE_MAX_RETRIES = 2
    settings.PIPELINE_RETRY_BACKOFF_BASE = 1.5  # time for the test to switch the outage on
    sandbox.drop_answers_after_effect(path_regex=r"/capture$", count=1)
    stock_before = {sku: product.stock for sku, product in catalog.items()}
    order = place(customer)

    wait_for(lambda: sandbox.stats()["captures"] == 1, timeout=30)
    sandbox.set_outage(True)  # before confirm_order's first retry
    # Out of retries: never `failed` with the money taken. It settles, and waits for the truth.
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.SETTLING, timeout=30)
    time.sleep(3)
    order.refresh_from_db()
    assert order.status == OrderStatus.SETTLING
    assert DeadLetter.objects.get(order=order).step == "confirm_order"

    sandbox.set_outage(False)
    back = time.monotonic()

    def settled() -> bool:
        recover_orders.delay()  # what beat does every RECOVERY_SWEEP_SECONDS
        return Order.objects.get(pk=order.pk).is_terminal

    wait_for(settled, timeout=60, interval=1.0)
    print(f"\nprovider back -> settled in {time.monotonic() - back:.1f} s (test settings)")
    order.refresh_from_db()
    assert order.status == OrderStatus.CONFIRMED
    assert sandbox.stats()["captures"] == 1
    assert Payment.objects.get(order=order).status == PaymentStatus.CAPTURED
    assert order.events.filter(name="settled", detail__outcome="confirmed").exists()
    assert_settled(order, sandbox)
    assert_stock_consistent(stock_before)


@pytest.mark.pipeline
def test_authorization_answer_lost_then_provider_down_ends_failed_and_voided(
    celery_worker, sandbox, catalog, customer, settings
):
    """The provider authorized but we never heard: settlement asks (the same key) and voids."""
    settings.PIPELINE_MAX_RETRIES = 1
    settings.PIPELINE_RETRY_BACKOFF_BASE = 1.5
    sandbox.drop_answers_after_effect(path_regex=r"^/v1/payments$", count=1)
    order = place(customer)

    wait_for(lambda: sandbox.stats()["payments"] == 1, timeout=30)
    sandbox.set_outage(True)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.SETTLING, timeout=30)
    assert Payment.objects.get(order=order).status == PaymentStatus.PENDING
    sandbox.set_outage(False)

    def settled() -> bool:
        recover_orders.delay()
        return Order.objects.get(pk=order.pk).is_terminal

    wait_for(settled, timeout=60, interval=1.0)
    order.refresh_from_db()
    assert order.status == OrderStatus.FAILED
    [held] = provider_payments_for(sandbox, order)
    assert held["status"] == "refunded"
    assert Payment.objects.get(order=order).status == PaymentStatus.REFUNDED
    assert_settled(order, sandbox)


def test_twin_fails_the_order_between_the_other_copys_capture_and_its_commit(
    sandbox, catalog, customer
):
    order = reserved(customer)
    sandbox.drop_answers_after_effect(path_regex=r"/capture$", count=1)
    wait_for_provider_budget()

    # Copy A captures; the provider acts, the answer never comes back.
    with pytest.raises(TransientError) as lost:
        order_confirm(order_id=str(order.pk))
    assert lost.value.maybe_acted
    # Copy B (a twin delivery out of retries) fails the order before A's retry records anything.
    assert order_failed(order, step="confirm_order").status == OrderStatus.SETTLING
    # A's retry finds the order no longer its to confirm.
    assert order_confirm(order_id=str(order.pk)).status == OrderStatus.SETTLING
    wait_for_provider_budget()

    settled = order_settle(order_id=str(order.pk))

    assert settled.status == OrderStatus.CONFIRMED
    assert sandbox.stats()["captures"] == 1
    assert_settled(settled, sandbox)


def test_an_unreadable_success_body_is_retried_not_trusted(sandbox, catalog, customer, settings):
    """A 200 whose body cannot be read may hide an effect: transient, and settlement asks."""
    order = reserved(customer)
    wait_for_provider_budget()
    real_payment = order.payment.provider_payment_id
    Payment.objects.filter(order=order).update(provider_payment_id=real_payment)
    # The sandbox serves JSON; a proxy in front answering 200 with HTML is the real-world case.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Garbled(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>gateway</html>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PAYMENT_PROVIDER_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(TransientError, match="unreadable"):
            order_confirm(order_id=str(order.pk))
    finally:
        server.shutdown()
    order.refresh_from_db()
    assert order.status == OrderStatus.STOCK_RESERVED  # not confirmed on a guess


# --- 2. a poison message: a step that kills its worker on every delivery ----------------------


@pytest.mark.pipeline
def test_a_step_that_kills_its_worker_every_time_is_dead_lettered_and_settled(
    transactional_db, broker_redis, catalog, customer, tmp_path
):
    from orders.provider.sandbox import SandboxProvider

    counter = f"test-poison-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    env = {"POISON_SERVICE": "order_confirm", "POISON_COUNTER_KEY": counter}
    with (
        SandboxProvider(rate_limit=50) as provider,
        beat_process(broker_url=django_settings.CELERY_BROKER_URL, log_path=tmp_path / "beat.log"),
        worker_process(
            broker_url=django_settings.CELERY_BROKER_URL,
            provider_url=provider.url,
            log_path=tmp_path / "worker.log",
            concurrency=2,
            extra_env={**env, "PAYMENT_PROVIDER_RATE_LIMIT": "50/s"},
            include="tests.poison_worker",
        ),
    ):
        order = place(customer)
        wait_for(lambda: Order.objects.get(pk=order.pk).is_terminal, timeout=90, interval=0.2)
        time.sleep(2)  # a delivery beyond the bound would count here
        deaths = int(client.get(counter) or 0)
        order.refresh_from_db()
        assert order.status == OrderStatus.FAILED
        assert deaths == django_settings.PIPELINE_MAX_DELIVERIES
        dead_letter = DeadLetter.objects.get(order=order)
        assert (dead_letter.reason, dead_letter.step) == ("poison", "confirm_order")
        assert provider.stats()["captures"] == 0
        assert_settled(order, provider)
        assert Product.objects.get(sku="BOOK-1").stock == catalog["BOOK-1"].stock
    client.delete(counter)


# --- 3. a line check delivered twice --------------------------------------------------------


@pytest.mark.pipeline
def test_a_line_check_delivered_twice_still_moves_the_order_on_once(
    celery_worker, sandbox, catalog, customer
):
    order = place(customer)
    # Take the order from its start message: authorize here, then deliver the checks by hand.
    Order.objects.filter(pk=order.pk).update(run=1, pipeline_started_at=timezone.now())
    payment_authorize(order_id=str(order.pk))
    first, second = order.lines.values_list("pk", flat=True)
    for line_id in (first, first, second, second):
        celery_app.send_task(
            workflow.CHECK_CART_LINE,
            kwargs={"order_id": str(order.pk), "line_id": line_id, "run": 1},
        )

    wait_for(lambda: Order.objects.get(pk=order.pk).is_terminal, timeout=20)
    order.refresh_from_db()
    assert order.status == OrderStatus.CONFIRMED
    assert order.events.filter(name="cart_verified").count() == 1
    assert order.events.filter(name="confirmed").count() == 1
    assert sandbox.stats()["captures"] == 1
    assert_settled(order, sandbox)


# --- 4. recovery: only lost work, once, however many sweeps ---------------------------------


def test_two_sweeps_at_once_over_a_300_order_backlog_redispatch_each_stall_once(
    transactional_db, catalog, customer
):
    orders = [place(customer) for _ in range(330)]
    expired = timezone.now() - timedelta(seconds=30)
    backlog, dead = orders[:300], orders[300:]
    # 300 handed to the provider queue and waiting there behind each other (no holder)...
    Order.objects.filter(pk__in=[o.pk for o in backlog]).update(
        run=1, lease_until=expired, lease_holder=""
    )
    # ...and 30 whose worker died holding them.
    Order.objects.filter(pk__in=[o.pk for o in dead]).update(
        run=1, lease_until=expired, lease_holder="worker@dead"
    )
    depths = {"provider": 300, "orders": 0}
    claims: list = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        barrier.wait()
        try:
            claims.extend(order_recovery_claim(queue_depths=depths, limit=400))
        finally:
            connection.close()

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    for thread in sweepers:
        thread.join()

    claimed = [claim.order_id for claim in claims]
    assert sorted(claimed) == sorted(str(o.pk) for o in dead)  # each stall once, nothing more
    assert set(Order.objects.filter(pk__in=[o.pk for o in dead]).values_list("run", flat=True)) == {
        2
    }
    waiting = Order.objects.filter(pk__in=[o.pk for o in backlog])
    assert set(waiting.values_list("run", flat=True)) == {1}  # no duplicate chain for a backlog
    assert not waiting.filter(lease_until__lt=timezone.now()).exists()  # waiting is progress
    assert not waiting.filter(events__name="redispatched").exists()
    for order in dead:
        assert order.events.filter(name="redispatched").count() == 1

    # The broker emptied the queue (a flushed Redis): now the same backlog is lost work.
    Order.objects.filter(pk__in=[o.pk for o in backlog]).update(lease_until=expired)
    again = order_recovery_claim(queue_depths={"provider": 0, "orders": 0}, limit=400)
    assert len(again) == 300


def test_a_message_of_an_older_dispatch_does_nothing(broker_redis, sandbox, catalog, customer):
    order = place(customer)
    Order.objects.filter(pk=order.pk).update(run=2)  # recovery re-dispatched it meanwhile
    # The copy of generation 1, redelivered late, run as a worker runs it (not eager):
    authorize_payment.push_request(id="stale-1", retries=0, is_eager=False, kwargs={})
    try:
        assert authorize_payment(order_id=str(order.pk), run=1) is None
    finally:
        authorize_payment.pop_request()
    order.refresh_from_db()
    assert order.status == OrderStatus.ACCEPTED
    assert sandbox.stats()["requests"] == 0


# --- 5. budgets that mean what they say -----------------------------------------------------


def _run_step_after(*, waits: int, throttled: int, raises: Exception):
    def service(**_kwargs):
        raise raises

    kwargs = {"order_id": "budget", "run": None, "waits": waits, "throttled": throttled}
    authorize_payment.push_request(
        id="budget-test", retries=waits + throttled, kwargs=kwargs, called_directly=False
    )
    try:
        return authorize_payment.run_step(service, "budget")
    finally:
        authorize_payment.pop_request()


def test_our_own_pacing_never_spends_the_429_budget(broker_redis):
    # 500 waits at our own limiter, then a real 429: still a retry, not a failure.
    with pytest.raises(Retry):
        _run_step_after(waits=500, throttled=0, raises=Throttled("429", retry_after=1))
    with pytest.raises(Retry):
        _run_step_after(waits=500, throttled=0, raises=RateLimitWait("wait", retry_after=3))
    # Waits do not spend the error budget either.
    with pytest.raises(Retry):
        _run_step_after(waits=500, throttled=0, raises=TransientError("503"))
    # Real 429s have their own, finite budget.
    with pytest.raises(Throttled):
        _run_step_after(waits=0, throttled=20, raises=Throttled("429", retry_after=1))


def test_every_countdown_and_time_limit_stays_under_the_visibility_timeout(settings):
    check_time_budgets(celery_app)  # the production defaults pass
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility > settings.CELERY_MAX_COUNTDOWN + settings.CELERY_TASK_TIME_LIMIT
    for task in celery_app.tasks.values():
        if getattr(task, "autoretry_for", ()):
            assert task.retry_backoff_max <= settings.CELERY_MAX_COUNTDOWN, task.name

    settings.CELERY_MAX_COUNTDOWN = visibility  # a countdown that would be delivered twice
    with pytest.raises(ImproperlyConfigured, match="visibility timeout"):
        check_time_budgets(celery_app)


# --- 6. stock changes only by deltas --------------------------------------------------------


def test_a_stale_product_saved_during_a_reservation_does_not_oversell(db, catalog, customer):
    stale = Product.objects.get(sku="PEN-1")  # an admin form or a shell, opened at stock 3
    first = place(customer, lines=[{"sku": "PEN-1", "quantity": 3}])
    stock_take(order=first)  # a reservation takes all three meanwhile
    stale.name = "A better pen"
    stale.save()  # the stale object is saved with stock=3 in memory

    product = Product.objects.get(sku="PEN-1")
    assert (product.name, product.stock) == ("A better pen", 0)
    second = place(customer, lines=[{"sku": "PEN-1", "quantity": 1}])
    with pytest.raises(Exception, match="PEN-1"):
        stock_take(order=second)  # nothing left to sell twice
    assert Product.objects.get(sku="PEN-1").stock == 0


def test_staff_adjust_stock_by_a_delta_never_below_zero(db, catalog):
    pen = catalog["PEN-1"]
    assert product_stock_adjust(product_id=pen.pk, delta=5).stock == 8
    assert product_stock_adjust(product_id=pen.pk, delta=-8).stock == 0
    with pytest.raises(ValueError, match="cannot remove"):
        product_stock_adjust(product_id=pen.pk, delta=-1)


# --- 7. reconciliation ----------------------------------------------------------------------


def test_reconciliation_refunds_a_hold_left_on_a_failed_order_and_records_it(
    sandbox, catalog, customer
):
    order = place(customer)
    payment_authorize(order_id=str(order.pk))
    # Drift as the landed code left it: failed, a hold at the provider, our row "authorized".
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.FAILED)
    wait_for_provider_budget()

    dry = payments_reconcile(dry_run=True)
    assert (dry.checked, dry.fixed) == (1, 1)
    assert provider_payments_for(sandbox, order)[0]["status"] == "authorized"  # untouched
    wait_for_provider_budget()

    report = payments_reconcile()

    assert (report.checked, report.fixed, report.errors) == (1, 1, 0)
    assert report.fixes[0]["action"] == "refund"
    assert Payment.objects.get(order=order).status == PaymentStatus.REFUNDED
    assert order.events.filter(name="payment_reconciled").count() == 1
    assert_settled(order, sandbox)
    wait_for_provider_budget()
    assert payments_reconcile().checked == 0  # settled and looked at: not asked again
    out = StringIO()
    call_command("reconcile_payments", "--dry-run", stdout=out)
    assert out.getvalue().strip().endswith("checked 0, in sync 0, drifted 0, errors 0")


def test_reconciliation_records_a_capture_our_rows_missed_on_a_confirmed_order(
    sandbox, catalog, customer
):
    order = reserved(customer)
    wait_for_provider_budget()
    order_confirm(order_id=str(order.pk))
    Payment.objects.filter(order=order).update(status=PaymentStatus.AUTHORIZED)  # the drift
    wait_for_provider_budget()

    report = payments_reconcile()

    assert (report.fixed, report.fixes[0]["action"]) == (1, "record")
    assert Payment.objects.get(order=order).status == PaymentStatus.CAPTURED
    assert sandbox.stats()["refunds"] == 0
    assert_settled(order, sandbox)
