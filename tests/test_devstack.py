"""`make run` on a machine with no Redis: the embedded redis-server carries a whole order."""

import pytest
import redis

from orders.models import OrderStatus
from orders.services import order_create
from project.celery import app as celery_app
from project.devstack import (
    banner,
    demo_accounts,
    redis_answers,
    start_embedded_redis,
    stop_embedded_redis,
)
from tests.conftest import wait_for
from tests.processes import free_port, worker_process


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_embedded_redis_carries_an_order_end_to_end(sandbox, catalog, customer, tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert not redis_answers(url)
    embedded = start_embedded_redis(url)
    try:
        assert redis_answers(url)
        with worker_process(
            broker_url=url, provider_url=sandbox.url, log_path=tmp_path / "worker.log"
        ) as worker:
            order, _ = order_create(
                user=customer, lines=[{"sku": "BOOK-1", "quantity": 1}], payment_token="tok_ok"
            )
            # What the outbox publishes, sent through the embedded broker.
            with celery_app.connection_for_write(url) as connection:
                celery_app.send_task(
                    "orders.start_pipeline",
                    kwargs={"order_id": str(order.pk)},
                    connection=connection,
                )

            def confirmed():
                order.refresh_from_db()
                return order.status == OrderStatus.CONFIRMED

            wait_for(confirmed, timeout=40)
            assert sandbox.stats()["captures"] == 1
            assert "orders.confirm_order" in worker.log()
            # The canvas travelled through the embedded Redis, not the suite's broker.
            assert redis.Redis.from_url(url).info("stats")["total_commands_processed"] > 0
    finally:
        stop_embedded_redis(embedded)
    assert not redis_answers(url)


@pytest.mark.django_db
def test_the_banner_prints_every_credential_and_where_the_orders_are(settings):
    settings.DEBUG = True  # as under make run; seed_demo refuses otherwise
    printed = banner(
        broker="redis://127.0.0.1:6379/0",
        embedded=True,
        flower_auth="admin:flower-secret",
        accounts=demo_accounts(),
    )
    for credential in (
        "username=admin password=admin-orderflow",
        "username=alice password=alice-orderflow",
        "admin:flower-secret",
    ):
        assert credential in printed
    assert "http://127.0.0.1:8000/orders/" in printed
    assert "redis://127.0.0.1:6379/0 (embedded)" in printed


@pytest.mark.django_db
def test_without_debug_the_banner_says_no_demo_accounts_were_made(settings):
    settings.DEBUG = False
    assert demo_accounts() == [
        "none (seed_demo creates well-known passwords; refused with DEBUG=0.)"
    ]


@pytest.mark.django_db
def test_logging_in_leads_to_my_orders_not_a_404(client, customer):
    response = client.post(
        "/accounts/login/", {"username": customer.username, "password": "alice-password"}
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/orders/")
