"""/metrics: refused without its credential; with it, HTTP, task and business metrics."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from orders.models import DeadLetter, Order, OrderStatus, OutboxMessage
from orders.monitoring import pipeline_health
from tests.conftest import client_for, wait_for

TOKEN = "scrape-secret"


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    # This test's own Redis keys for the task metrics (other runs may share the database).
    settings.METRICS_REDIS_PREFIX = f"test-metrics-{uuid.uuid4().hex}"
    return settings


def scrape(client: APIClient | None = None, **headers) -> dict[str, dict[tuple, float]]:
    response = (client or APIClient()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def authorized() -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def test_metrics_are_off_until_a_credential_is_configured(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    response = APIClient().get("/metrics")
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["detail"]


@pytest.mark.django_db
def test_metrics_refuse_a_missing_or_wrong_token(metrics_on):
    missing = APIClient().get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert b"orderflow_" not in missing.content
    wrong = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    basic = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert basic.status_code == 401


@pytest.mark.django_db
def test_metrics_refuse_an_address_outside_the_allow_list_even_with_the_token(metrics_on):
    metrics_on.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    response = APIClient().get("/metrics", REMOTE_ADDR="127.0.0.1", **authorized())
    assert response.status_code == 403
    inside = APIClient().get("/metrics", REMOTE_ADDR="10.1.2.3", **authorized())
    assert inside.status_code == 200


@pytest.mark.django_db
def test_an_allow_list_alone_lets_its_network_scrape(metrics_on):
    metrics_on.METRICS_TOKEN = ""
    metrics_on.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    assert APIClient().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert APIClient().get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403


def make_order(user, *, status: str = OrderStatus.ACCEPTED) -> Order:
    return Order.objects.create(
        user=user,
        status=status,
        total=Decimal("1.00"),
        payment_token="tok_ok",
        correlation_id=uuid.uuid4().hex,
    )


@pytest.mark.django_db
def test_metrics_show_the_business_gauges(metrics_on, customer):
    before = scrape(**authorized())
    for name in ["orderflow_outbox_backlog", "orderflow_dead_letters", "orderflow_stuck_orders"]:
        assert before[name] == {(): 0.0}

    OutboxMessage.objects.create(task_name="orders.start_pipeline", kwargs={})
    OutboxMessage.objects.create(  # delivered: not backlog
        task_name="orders.start_pipeline", kwargs={}, published_at=timezone.now()
    )
    failed = make_order(customer, status=OrderStatus.FAILED)
    DeadLetter.objects.create(order=failed, task_name="orders.authorize_payment", step="a")
    DeadLetter.objects.create(  # replayed: not counted
        order=failed, task_name="orders.authorize_payment", step="a", replayed_at=timezone.now()
    )
    stuck = make_order(customer)
    make_order(customer)  # recent: not stuck
    long_ago = timezone.now() - timedelta(seconds=metrics_on.STUCK_ORDER_SECONDS + 60)
    Order.objects.filter(pk__in=[stuck.pk, failed.pk]).update(updated_at=long_ago)

    after = scrape(**authorized())
    assert after["orderflow_outbox_backlog"] == {(): 1.0}
    assert after["orderflow_dead_letters"] == {(): 1.0}
    assert after["orderflow_stuck_orders"] == {(): 1.0}  # a failed order is finished
    assert after["orderflow_provider_limiter_limit"] == {(): 2.0}  # "2/s" in the settings
    assert after["orderflow_provider_limiter_window_seconds"] == {(): 1.0}
    assert after["orderflow_provider_limiter_waiting"] == {(): 0.0}
    assert "orderflow_provider_limiter_recent_slots" in after
    health = pipeline_health()  # the same numbers for the admin's health page
    assert (
        health["outbox"]["backlog"],
        health["dead_letters"]["unreplayed"],
        health["stuck_orders"]["count"],
    ) == (1, 1, 1)


@pytest.mark.django_db
def test_limiter_gauges_are_left_out_when_the_limiter_is_off(metrics_on):
    metrics_on.PAYMENT_PROVIDER_CLUSTER_RATE_LIMIT = False
    samples = scrape(**authorized())
    assert "orderflow_outbox_backlog" in samples
    assert not any(name.startswith("orderflow_provider_limiter") for name in samples)


@pytest.mark.django_db
def test_metrics_count_http_requests(metrics_on, api):
    api.get("/api/products/")
    api.get("/api/products/")
    samples = scrape(**authorized())
    by_view = samples["django_http_responses_total_by_status_view_method_total"]
    counted = {labels: value for labels, value in by_view.items() if ("status", "200") in labels}
    assert any(value >= 2 for value in counted.values()), by_view


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_metrics_show_the_workers_task_outcomes_and_step_latency(
    metrics_on, celery_worker, sandbox, catalog, customer
):
    response = client_for(customer).post(
        "/api/orders/",
        {"lines": [{"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_flaky"},
        format="json",
    )
    order = Order.objects.get(pk=response.data["id"])
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.CONFIRMED, timeout=40)

    def confirm_counted():
        samples = scrape(**authorized())
        total = samples.get("orderflow_tasks_total", {})
        return (
            samples
            if total.get(_labels(task="orders.confirm_order", outcome="succeeded"))
            else None
        )

    samples = wait_for(confirm_counted, timeout=10)
    outcomes = samples["orderflow_tasks_total"]
    assert outcomes[_labels(task="orders.authorize_payment", outcome="retried")] >= 2  # flaky
    assert outcomes[_labels(task="orders.authorize_payment", outcome="succeeded")] == 1
    assert outcomes[_labels(task="orders.check_cart_line", outcome="succeeded")] == 1
    durations = samples["orderflow_task_duration_seconds_count"]
    assert durations[_labels(task="orders.check_cart_line")] == 1
    latency = samples["orderflow_step_latency_seconds_count"]
    assert latency[_labels(step="authorize_payment")] >= 3  # each message of the step
    assert latency[_labels(step="check_cart")] == 1  # one line, one check
    buckets = samples["orderflow_step_latency_seconds_bucket"]
    assert buckets[_labels(step="confirm_order", le="+Inf")] == 1
    assert samples["orderflow_step_latency_seconds_sum"][_labels(step="confirm_order")] > 0


def _labels(**labels) -> tuple:
    return tuple(sorted(labels.items()))
