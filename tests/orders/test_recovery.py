"""Issue 4, "lose nothing and charge nobody twice": crashes, outages and duplicates.

Real `celery worker` / `celery beat` / gunicorn processes (tests/processes.py) or the in-process
worker, the real Redis broker, the sandbox provider as a real HTTP server, the real database.
Every test asserts on outcomes: order statuses, the provider's own ledger (`payments()`, stats),
stock, rows.
"""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from decimal import Decimal
from io import StringIO

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from notifications.models import Notification
from orders.models import (
    TERMINAL_STATUSES,
    DeadLetter,
    Order,
    OrderStatus,
    OutboxMessage,
    Payment,
    Product,
)
from orders.provider.sandbox import SandboxProvider
from orders.services import order_create
from orders.tasks import authorize_payment, confirm_order, verify_cart
from project.celery import app as celery_app
from project.devstack import redis_answers, start_embedded_redis, stop_embedded_redis
from tests.conftest import wait_for
from tests.processes import (
    beat_process,
    free_port,
    terminate_main_process,
    web_process,
    worker_process,
)

pytestmark = pytest.mark.django_db(transaction=True)
# These read or flush the broker's Redis keys (unacked messages, queues) directly.
redis_broker_only = pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("redis"), reason="inspects Redis broker keys"
)

# Recovery runs on the production defaults (visibility timeout, leases, heartbeat, beat's
# recovery sweep): lost work is found by its lease, not by the broker's visibility timeout.
VISIBILITY_TIMEOUT = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
LEASE_SECONDS = django_settings.ORDER_LEASE_SECONDS
BEAT_SWEEP_EVERY = django_settings.CELERY_BEAT_SCHEDULE["recover-orders"]["schedule"]
FAST_STACK = {
    "PAYMENT_PROVIDER_RATE_LIMIT": "50/s",  # matches the `provider` fixture's sandbox
}
OK_LINES = [{"sku": "BOOK-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}]
OVER_STOCK_LINES = [{"sku": "PEN-1", "quantity": 5}]  # PEN-1 has 3


@pytest.fixture
def provider():
    """A sandbox that takes 20+ orders at once (50 req/s) and answers in 0.3 s, so that provider
    calls are in flight when a worker dies."""
    with SandboxProvider(rate_limit=50, latency=0.3) as sandbox:
        yield sandbox


# --- helpers --------------------------------------------------------------------------------------


def place(user, *, token: str = "tok_ok", lines=None) -> Order:
    """Accept an order as the API does; its outbox message is published on commit."""
    order, _ = order_create(user=user, lines=lines or OK_LINES, payment_token=token)
    return order


def place_mix(user, *, ok: int, declined: int, over_stock: int) -> list[Order]:
    kinds = [("tok_ok", OK_LINES)] * ok
    # Interleaved so that the other outcomes are in flight together with the charges.
    for index in range(declined):
        kinds.insert(3 * index + 1, ("tok_declined", OK_LINES))
    for index in range(over_stock):
        kinds.insert(3 * index + 2, ("tok_ok", OVER_STOCK_LINES))
    return [place(user, token=token, lines=lines) for token, lines in kinds]


def statuses(orders) -> Counter:
    return Counter(
        Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True)
    )


def unfinished(orders) -> int:
    return (
        Order.objects.filter(pk__in=[o.pk for o in orders])
        .exclude(status__in=TERMINAL_STATUSES)
        .count()
    )


def all_terminal(orders) -> bool:
    return unfinished(orders) == 0


def broker_keys() -> list[bytes]:
    """This run's broker keys (queues, unacked messages, bindings); other runs share the DB."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    return list(client.scan_iter(match=f"{django_settings.BROKER_KEY_PREFIX}*", count=500))


def flush_broker() -> int:
    """FLUSHDB for this run: every queued, reserved and unacknowledged message is gone."""
    keys = broker_keys()
    if keys:
        redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(*keys)
    return len(keys)


def unacked_messages(broker_url: str | None = None) -> int:
    client = redis.Redis.from_url(broker_url or django_settings.CELERY_BROKER_URL)
    return client.hlen(f"{django_settings.BROKER_KEY_PREFIX}unacked")


def assert_nothing_lost_nobody_charged_twice(orders, provider: SandboxProvider, initial_stock):
    """Every order terminal; the provider's ledger agrees with each order's outcome; stock was
    taken exactly once per confirmed order."""
    orders = list(Order.objects.filter(pk__in=[o.pk for o in orders]).prefetch_related("lines"))
    assert [o.status for o in orders if not o.is_terminal] == []

    ledger = provider.payments()
    twice = [ref for ref, n in Counter(p["reference"] for p in ledger).items() if n > 1]
    assert twice == [], f"references with more than one payment: {twice}"
    by_reference = {p["reference"]: p for p in ledger}
    confirmed = [o for o in orders if o.status == OrderStatus.CONFIRMED]
    for order in orders:
        paid = by_reference.get(str(order.pk))
        if order.status == OrderStatus.CONFIRMED:
            assert paid is not None, f"{order.pk} confirmed without a payment"
            assert (paid["status"], paid["captured"]) == ("captured", True), order.pk
            payment = Payment.objects.get(order=order)
            assert (payment.provider_payment_id, payment.status) == (paid["id"], "captured")
        elif order.status == OrderStatus.PAYMENT_DECLINED:
            assert paid is None, f"{order.pk} declined but the provider holds {paid}"
        elif order.status == OrderStatus.CART_REJECTED:
            assert paid is not None and paid["refunded"], f"{order.pk} not refunded: {paid}"
            assert not paid["captured"], f"{order.pk} rejected but was captured: {paid}"
        else:  # failed: never charged without a refund
            assert paid is None or not paid["captured"] or paid["refunded"], (order.pk, paid)
    assert set(by_reference) <= {str(order.pk) for order in orders}, "payments for no order"
    assert provider.stats()["captures"] == len(confirmed)

    taken = Counter()
    for order in confirmed:
        for line in order.lines.all():
            taken[line.sku] += line.quantity
    stock = dict(Product.objects.values_list("sku", "stock"))
    assert stock == {sku: initial_stock[sku] - taken[sku] for sku in initial_stock}


def failed_orders(orders) -> list[tuple[str, str, str]]:
    return list(
        Order.objects.filter(pk__in=[o.pk for o in orders], status=OrderStatus.FAILED).values_list(
            "failed_step", "failed_from_status", "failure_reason"
        )
    )


def initial_stock_of(catalog) -> dict[str, int]:
    return {sku: product.stock for sku, product in catalog.items()}


# --- 1. SIGKILL of a whole worker mid-pipeline ------------------------------------------------


@pytest.mark.pipeline
@redis_broker_only
def test_sigkill_of_a_whole_worker_mid_pipeline_loses_nothing_and_charges_nobody_twice(
    broker_redis, provider, catalog, customer, tmp_path
):
    broker = django_settings.CELERY_BROKER_URL
    stock_before = initial_stock_of(catalog)
    # Beat is its own process in production: it keeps sending the sweep while a worker dies.
    # A second worker is already running, as in any deployment of more than one worker: the
    # recovery time is the system's, not a cold start's.
    with (
        beat_process(broker_url=broker, log_path=tmp_path / "beat.log", extra_env=FAST_STACK),
        worker_process(
            broker_url=broker,
            provider_url=provider.url,
            log_path=tmp_path / "doomed.log",
            concurrency=4,
            name="doomed",
            extra_env=FAST_STACK,
        ) as doomed,
        worker_process(
            broker_url=broker,
            provider_url=provider.url,
            log_path=tmp_path / "survivor.log",
            concurrency=2,
            name="survivor",
            extra_env=FAST_STACK,
        ),
    ):
        orders = place_mix(customer, ok=20, declined=3, over_stock=3)
        # Kill once money has moved but most of the work is still under way.
        wait_for(lambda: provider.stats()["captures"] >= 3, timeout=60)
        doomed.kill_tree()
        killed_at = time.monotonic()
        at_kill = statuses(orders)
        stranded = unacked_messages()
        provider_at_kill = provider.stats()
        print(f"\nat SIGKILL: {dict(at_kill)}; unacknowledged messages: {stranded}")
        assert unfinished(orders) >= 5, f"the kill came too late to prove anything: {at_kill}"
        assert stranded >= 1, "the killed worker held no message: nothing to recover"
        wait_for(lambda: all_terminal(orders), timeout=60, interval=0.1)
        recovery = time.monotonic() - killed_at

    redispatched = (
        Order.objects.filter(pk__in=[o.pk for o in orders], events__name="redispatched")
        .distinct()
        .count()
    )
    print(
        f"time to recovery (SIGKILL -> all {len(orders)} orders terminal): {recovery:.1f} s "
        f"(visibility timeout {VISIBILITY_TIMEOUT} s, lease {LEASE_SECONDS:g} s, "
        f"beat recovery sweep every {BEAT_SWEEP_EVERY:g} s); orders re-dispatched: "
        f"{redispatched}; final: {dict(statuses(orders))}; provider at kill: "
        f"{ {k: provider_at_kill[k] for k in ('payments', 'captures', 'refunds')} }, "
        f"after: { {k: provider.stats()[k] for k in ('payments', 'captures', 'refunds')} }"
    )
    assert_nothing_lost_nobody_charged_twice(orders, provider, stock_before)
    final = statuses(orders)
    assert final[OrderStatus.PAYMENT_DECLINED] == 3
    assert final[OrderStatus.CART_REJECTED] == 3
    assert final[OrderStatus.CONFIRMED] == 20
    # Issue 10's target is 15 s from the SIGKILL (it was 124 s: the visibility timeout plus a
    # sweep); found in a lease period, the rest is the survivor doing the work. The bound here
    # leaves room for a loaded machine and still proves the visibility timeout is not waited.
    assert recovery <= min(30, VISIBILITY_TIMEOUT / 2), f"recovery took {recovery:.1f} s"


# --- 2. Broker outage ---------------------------------------------------------------------------


def api_session(user) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"
    return session


def post_order(
    session: requests.Session, base_url: str, key: str
) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = session.post(
        f"{base_url}/api/orders/",
        json={"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_ok"},
        headers={"Idempotency-Key": key},
        timeout=30,
    )
    return response, time.monotonic() - started


def beat_tick(broker_url: str, task_name: str) -> None:
    """What beat does on schedule: send the task; a broker still down just means next time."""
    try:
        with celery_app.connection_for_write(broker_url) as connection:
            celery_app.send_task(task_name, connection=connection)
    except Exception:  # noqa: S110 (beat logs it and sends again on the next tick)
        pass


@pytest.mark.pipeline
@pytest.mark.parametrize(
    "redis_down",
    [
        # REDIS_URL/CACHE_URL on another Redis that stays up: only the broker is gone.
        pytest.param("broker", id="broker-down"),
        # The default: REDIS_URL is the broker's Redis, so throttles and limits go down with it.
        pytest.param("broker-cache-and-limits", id="shared-redis-down"),
    ],
)
def test_broker_outage_the_api_still_accepts_and_the_outbox_delivers_after(
    provider, catalog, customer, tmp_path, redis_down
):
    url = f"redis://127.0.0.1:{free_port()}/0"
    stack = dict(FAST_STACK)
    if redis_down == "broker-cache-and-limits":
        stack["TEST_REDIS_URL"] = url
    http = api_session(customer)
    broker = start_embedded_redis(url)
    try:
        with (
            worker_process(
                broker_url=url,
                provider_url=provider.url,
                log_path=tmp_path / "worker.log",
                concurrency=4,
                extra_env=stack,
            ) as worker,
            web_process(broker_url=url, log_path=tmp_path / "web.log", extra_env=stack) as web,
        ):
            before, _ = post_order(http, web.url, "before")  # the stack works before the outage
            assert before.status_code == 202, before.text
            first = Order.objects.get(pk=before.json()["id"])
            wait_for(lambda: all_terminal([first]), timeout=30)
            # ... and its outcome notification went out, and was acknowledged: the worker holds
            # no message now (kombu 5.7.0 can die on a connection loss with one unacknowledged).
            wait_for(lambda: Notification.objects.filter(emailed_at__isnull=False), timeout=30)
            wait_for(lambda: unacked_messages(url) == 0, timeout=10)

            stop_embedded_redis(broker)
            assert not redis_answers(url)
            during = [post_order(http, web.url, f"outage-{index}") for index in range(5)]
            health = http.get(f"{web.url}/healthz", timeout=30)
            outage = [(response.status_code, round(seconds, 3)) for response, seconds in during]
            print(
                f"\nAPI during the broker outage ({redis_down} down): POST /api/orders/ -> "
                f"{outage} (status, seconds); GET /healthz -> {health.status_code} "
                f"{health.text[:200]}"
            )
            assert [code for code, _ in outage] == [202] * 5, during[0][0].text[:500]
            assert max(seconds for _, seconds in outage) < 5
            assert health.status_code == 503
            assert health.json()["database"] == "ok" != health.json()["broker"]
            ids = [response.json()["id"] for response, _ in during]
            assert Order.objects.filter(pk__in=ids, status=OrderStatus.ACCEPTED).count() == 5
            waiting = OutboxMessage.objects.filter(
                published_at__isnull=True, task_name="orders.start_pipeline"
            )
            assert sorted(waiting.values_list("kwargs__order_id", flat=True)) == sorted(ids)
            assert all(message.attempts == 1 and message.last_error for message in waiting)

            broker = start_embedded_redis(url)  # back, on the same port (empty: no persistence)
            back_at = time.monotonic()
            orders = [first, *Order.objects.filter(pk__in=ids)]

            def delivered() -> bool:
                beat_tick(url, "orders.relay_outbox")  # beat's relay, every 5 s in production
                return all_terminal(orders) or worker.process.poll() is not None

            wait_for(delivered, timeout=60, interval=1.0)
            assert worker.process.poll() is None, worker.log()[-3000:]
            took = time.monotonic() - back_at
            print(f"broker back -> all {len(orders)} orders terminal in {took:.1f} s")
    finally:
        stop_embedded_redis(broker)

    assert statuses(orders) == {OrderStatus.CONFIRMED: 6}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    assert_nothing_lost_nobody_charged_twice(orders, provider, initial_stock_of(catalog))


@pytest.mark.pipeline
def test_broker_outage_mid_pipeline_loses_nothing_and_charges_nobody_twice(
    provider, catalog, customer, tmp_path
):
    """Redis goes away while steps run and comes back empty (no persistence): messages in flight
    are gone, so the outbox and the sweeper must finish every order.

    A worker that exits on the outage is restarted, as compose's `restart: unless-stopped` does:
    Celery 5.7.0 / kombu 5.7.0 sometimes die on a broker connection loss while holding unacked
    messages (Consumer.on_connection_error_after_connected closes the connection after
    collect() cleared the transport's client; restoring the unacked messages then reads
    `connection.client.hostname` on None: AttributeError, "Unrecoverable error")."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    http = api_session(customer)
    broker = start_embedded_redis(url)
    restarts = []
    try:
        with (
            ExitStack() as supervisor,
            web_process(broker_url=url, log_path=tmp_path / "web.log", extra_env=FAST_STACK) as web,
        ):

            def start_worker(number: int):
                return supervisor.enter_context(
                    worker_process(
                        broker_url=url,
                        provider_url=provider.url,
                        log_path=tmp_path / f"worker-{number}.log",
                        concurrency=4,
                        name=f"worker{number}",
                        extra_env=FAST_STACK,
                    )
                )

            worker = start_worker(0)
            ids = []
            for index in range(8):
                response, _ = post_order(http, web.url, f"busy-{index}")
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            orders = list(Order.objects.filter(pk__in=ids))
            wait_for(lambda: provider.stats()["payments"] >= 2, timeout=30)  # mid-pipeline
            stop_embedded_redis(broker)
            at_outage = statuses(orders)
            time.sleep(2)  # an outage, not a blip
            broker = start_embedded_redis(url)
            back_at = time.monotonic()

            def finished() -> bool:
                nonlocal worker
                if worker.process.poll() is not None:  # the supervisor's restart
                    restarts.append(worker.log_path.name)
                    worker = start_worker(len(restarts))
                beat_tick(url, "orders.relay_outbox")
                beat_tick(url, "orders.recover_orders")
                return all_terminal(orders)

            wait_for(finished, timeout=60, interval=1.0)
            print(
                f"\nbroker outage mid-pipeline: at the outage {dict(at_outage)}; broker back -> "
                f"all terminal in {time.monotonic() - back_at:.1f} s: {dict(statuses(orders))}; "
                f"worker restarts needed: {restarts or 'none'}; failed (step, from status, "
                f"reason): {failed_orders(orders)}"
            )
    finally:
        stop_embedded_redis(broker)

    assert_nothing_lost_nobody_charged_twice(orders, provider, initial_stock_of(catalog))
    assert statuses(orders) == {OrderStatus.CONFIRMED: 8}, failed_orders(orders)


# --- 3. A lost message --------------------------------------------------------------------------


@pytest.mark.pipeline
@redis_broker_only
@pytest.mark.parametrize(
    ("stop", "stranded_at", "sweeper_resumes_from"),
    [
        # Warm stop: the slow authorization finishes and publishes the next step, which is lost.
        pytest.param("warm", OrderStatus.PAYMENT_AUTHORIZED, "check_cart", id="next-message-lost"),
        # SIGKILL: the provider authorized, the order never heard; its own message is lost.
        pytest.param("kill", OrderStatus.ACCEPTED, "authorize_payment", id="running-message-lost"),
    ],
)
def test_a_lost_message_is_redispatched_by_the_sweeper_and_charged_once(
    broker_redis, provider, catalog, customer, tmp_path, stop, stranded_at, sweeper_resumes_from
):
    broker = django_settings.CELERY_BROKER_URL
    stack = FAST_STACK
    with worker_process(
        broker_url=broker,
        provider_url=provider.url,
        log_path=tmp_path / "first.log",
        name="first",
        extra_env=stack,
    ) as first:
        order = place(customer, token="tok_slow")  # the provider answers after 2 s
        wait_for(lambda: provider.stats()["requests"] >= 1, timeout=30)  # in flight now
        if stop == "warm":
            assert terminate_main_process(first) == 0
        else:
            first.kill_tree()
    assert flush_broker() > 0
    wait_for(lambda: provider.stats()["payments"] == 1, timeout=10)  # the provider finished
    order.refresh_from_db()
    assert order.status == stranded_at
    assert broker_keys() == []

    with worker_process(
        broker_url=broker,
        provider_url=provider.url,
        log_path=tmp_path / "second.log",
        name="second",
        extra_env=stack,
    ):
        time.sleep(3)  # no recovery sweep runs: nothing moves the order on by itself
        order.refresh_from_db()
        assert order.status == stranded_at

        def swept_and_confirmed() -> bool:
            celery_app.send_task("orders.recover_orders")  # what beat does every 2 s
            order.refresh_from_db()
            return order.status == OrderStatus.CONFIRMED

        wait_for(swept_and_confirmed, timeout=30, interval=1.0)

    redispatches = order.events.filter(name="redispatched")
    assert redispatches.exists()
    assert redispatches.first().detail["step"] == sweeper_resumes_from
    assert provider.payments() == [
        {
            "id": order.payment.provider_payment_id,
            "reference": str(order.pk),
            "status": "captured",
            "captured": True,
            "refunded": False,
        }
    ]
    stats = provider.stats()
    assert (stats["payments"], stats["captures"], stats["refunds"]) == (1, 1, 0)
    assert order.events.filter(name="payment_authorized").count() == 1
    assert dict(Product.objects.values_list("sku", "stock")) == {
        "BOOK-1": 99,
        "MUG-1": 49,
        "PEN-1": 3,
    }


# --- 4. Provider outage until retries run out, then replay -----------------------------------


@pytest.mark.pipeline
def test_provider_outage_dead_letters_then_replay_failed_confirms_each_once(
    celery_worker, catalog, customer, settings
):
    settings.PIPELINE_MAX_RETRIES = 2
    port = free_port()
    settings.PAYMENT_PROVIDER_URL = f"http://127.0.0.1:{port}"  # the provider is down
    orders = [place(customer), place(customer, lines=[{"sku": "BOOK-1", "quantity": 3}])]

    wait_for(lambda: statuses(orders) == {OrderStatus.FAILED: 2}, timeout=40)
    for order in orders:
        order.refresh_from_db()
        assert order.failed_step == "authorize_payment"
        dead_letter = DeadLetter.objects.get(order=order)
        assert (dead_letter.task_name, dead_letter.attempts) == ("orders.authorize_payment", 3)
        assert "provider unreachable" in dead_letter.exception
        assert dead_letter.replayed_at is None
    assert not Payment.objects.exists()

    out = StringIO()
    outbox_before = OutboxMessage.objects.count()
    call_command("replay_failed", "--dry-run", stdout=out)
    listed = out.getvalue()
    assert all(f"would replay {order.pk} failed at authorize_payment" in listed for order in orders)
    assert "would replay 2 order(s)" in listed
    assert statuses(orders) == {OrderStatus.FAILED: 2}
    assert OutboxMessage.objects.count() == outbox_before
    assert not DeadLetter.objects.filter(replayed_at__isnull=False).exists()

    with SandboxProvider(port=port, rate_limit=2) as provider:  # back, at the same address
        out = StringIO()
        call_command("replay_failed", stdout=out)
        assert "replayed 2 order(s)" in out.getvalue()
        wait_for(lambda: statuses(orders) == {OrderStatus.CONFIRMED: 2}, timeout=40)

        assert_nothing_lost_nobody_charged_twice(orders, provider, initial_stock_of(catalog))
        assert provider.stats()["payments"] == 2
        assert Payment.objects.count() == 2
        assert not DeadLetter.objects.filter(replayed_at__isnull=True).exists()
        assert sorted(Order.objects.values_list("replays", flat=True)) == [1, 1]

        # A confirmed order is not replayed, by id or in bulk; nothing reaches the provider.
        with pytest.raises(CommandError, match="only failed orders replay"):
            call_command("replay_order", str(orders[0].pk))
        out = StringIO()
        call_command("replay_failed", stdout=out)
        assert "replayed 0 order(s)" in out.getvalue()
        before = provider.stats()["requests"]
        time.sleep(1)
        assert provider.stats()["requests"] == before
        assert statuses(orders) == {OrderStatus.CONFIRMED: 2}


# --- 5. Concurrent POSTs with one Idempotency-Key ------------------------------------------------


@pytest.mark.filterwarnings("ignore:No directory at")  # whitenoise without collectstatic
@pytest.mark.parametrize("round_", range(3))
def test_concurrent_posts_with_one_idempotency_key_make_one_order(
    live_server, broker_redis, catalog, customer, round_
):
    threads = 8
    token = Token.objects.create(user=customer).key
    body = {"lines": [{"sku": "BOOK-1", "quantity": 2}], "payment_token": "tok_ok"}
    key = f"same-key-{round_}"
    start = threading.Barrier(threads)

    def post(_index: int) -> requests.Response:
        start.wait(timeout=10)  # all at once
        return requests.post(
            f"{live_server.url}/api/orders/",
            json=body,
            headers={"Authorization": f"Token {token}", "Idempotency-Key": key},
            timeout=30,
        )

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(post, range(threads)))

    assert [response.status_code for response in responses] == [202] * threads, [
        response.text for response in responses if response.status_code != 202
    ]
    order = Order.objects.get()
    assert {response.json()["id"] for response in responses} == {str(order.pk)}
    assert order.idempotency_key == key
    assert order.lines.count() == 1
    assert order.events.filter(name="accepted").count() == 1
    assert OutboxMessage.objects.count() == 1
    assert OutboxMessage.objects.get().kwargs == {"order_id": str(order.pk)}


# --- 6. Duplicate deliveries -------------------------------------------------------------------


@pytest.mark.pipeline
def test_each_step_delivered_twice_at_once_takes_effect_once(
    celery_worker, catalog, customer, settings
):
    # 1 s per provider call: the twin (held 0.5 s by the task's 2/s rate limit) arrives while
    # the first is still waiting for the provider.
    with SandboxProvider(rate_limit=50, latency=1.0) as provider:
        settings.PAYMENT_PROVIDER_URL = provider.url
        with transaction.atomic():  # accepted, but the test delivers the steps, not the outbox:
            order = place(customer, lines=[{"sku": "BOOK-1", "quantity": 2}])
            # the start message still goes out, and finds the pipeline already started.
            Order.objects.filter(pk=order.pk).update(run=1, pipeline_started_at=timezone.now())
        order_id = str(order.pk)

        def deliver_twice(task) -> list[str]:
            results = [task.apply_async(args=[order_id]) for _ in range(2)]
            return [result.get(timeout=30) for result in results]

        assert deliver_twice(authorize_payment) == ["payment_authorized"] * 2
        stats = provider.stats()
        assert (stats["payments"], stats["captures"]) == (1, 0)
        # Both runs reached the provider at once; its idempotency key made the twin a replay.
        assert (stats["requests"], stats["idempotent_replays"]) == (2, 1)
        assert Payment.objects.filter(order=order).count() == 1
        assert order.events.filter(name="payment_authorized").count() == 1

        assert deliver_twice(verify_cart) == ["cart_verified"] * 2
        assert order.events.filter(name="cart_verified").count() == 1
        assert provider.stats()["requests"] == 2
        assert Product.objects.get(sku="BOOK-1").stock == 100

        assert deliver_twice(confirm_order) == ["confirmed"] * 2
        stats = provider.stats()
        assert (stats["payments"], stats["captures"], stats["refunds"]) == (1, 1, 0)
        # The twin captured at the same time too, and got the first capture's answer.
        assert (stats["requests"], stats["idempotent_replays"]) == (4, 2)
        assert Product.objects.get(sku="BOOK-1").stock == 98
        for name in ("stock_reserved", "payment_captured", "confirmed"):
            assert order.events.filter(name=name).count() == 1, name
        order.refresh_from_db()
        assert (order.status, order.payment.status) == (OrderStatus.CONFIRMED, "captured")
        assert provider.payments()[0]["reference"] == order_id
        assert order.total == Decimal("25.00")


# --- 7. Warm shutdown ----------------------------------------------------------------------------


@pytest.mark.pipeline
@pytest.mark.parametrize(
    "signalled",
    [
        # docker stop, Kubernetes: only PID 1 gets SIGTERM; a true warm shutdown, no sweeper.
        pytest.param("main-process", id="sigterm-main-process"),
        # systemd's default KillMode and honcho (`make run`) signal the whole group: the pool
        # children die mid-task; their orders' leases run out and recovery re-dispatches them.
        pytest.param("process-group", id="sigterm-process-group"),
    ],
)
def test_warm_shutdown_mid_pipeline_then_a_new_worker_finishes_everything(
    broker_redis, provider, catalog, customer, tmp_path, signalled
):
    broker = django_settings.CELERY_BROKER_URL
    stock_before = initial_stock_of(catalog)
    with worker_process(
        broker_url=broker,
        provider_url=provider.url,
        log_path=tmp_path / "leaving.log",
        concurrency=4,
        name="leaving",
        extra_env=FAST_STACK,
    ) as leaving:
        # Enough orders that a stop after the first captures always leaves work in flight.
        orders = place_mix(customer, ok=20, declined=2, over_stock=2)
        wait_for(lambda: provider.stats()["captures"] >= 2, timeout=60)
        stopping = time.monotonic()
        if signalled == "main-process":
            exit_code = terminate_main_process(leaving)
        else:
            leaving.stop()
            exit_code = leaving.process.returncode
        shutdown = time.monotonic() - stopping
    at_stop = statuses(orders)
    print(f"\nSIGTERM ({signalled}): exit {exit_code} after {shutdown:.1f} s; {dict(at_stop)}")
    assert exit_code == 0, leaving.log()[-3000:]
    assert "Warm shutdown" in leaving.log()
    assert unfinished(orders) >= 3, f"the stop came too late to prove anything: {at_stop}"

    stopped_at = time.monotonic()
    with worker_process(
        broker_url=broker,
        provider_url=provider.url,
        log_path=tmp_path / "next.log",
        concurrency=4,
        name="next",
        extra_env=FAST_STACK,
    ):

        def finished() -> bool:
            if signalled == "process-group":
                beat_tick(broker, "orders.recover_orders")
            return all_terminal(orders)

        wait_for(finished, timeout=60, interval=1.0)
    redispatched = (
        Order.objects.filter(pk__in=[o.pk for o in orders], events__name="redispatched")
        .distinct()
        .count()
    )
    print(
        f"next worker: all {len(orders)} terminal {time.monotonic() - stopped_at:.1f} s later; "
        f"re-dispatched by the sweeper: {redispatched}"
    )
    assert_nothing_lost_nobody_charged_twice(orders, provider, stock_before)
    assert statuses(orders) == {
        OrderStatus.CONFIRMED: 20,
        OrderStatus.PAYMENT_DECLINED: 2,
        OrderStatus.CART_REJECTED: 2,
    }
