"""OpenTelemetry: off unless OTEL_* asks; on, one trace from the request to the provider call."""

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from orders.models import Order, OrderStatus
from project import observability
from tests.conftest import client_for, wait_for


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_switched_on_by_the_standard_variables(environ, on):
    assert observability.tracing_requested(environ) is on


def test_without_otel_variables_nothing_is_instrumented(monkeypatch):
    for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"]:
        monkeypatch.delenv(name, raising=False)
    assert observability.configure_tracing(service="orderflow-test") is False
    assert observability._tracing is None


def url_of(span) -> str:
    # The instrumentation's default semantic conventions name it http.url; the newer url.full.
    return span.attributes.get("url.full") or span.attributes.get("http.url") or ""


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert observability.configure_tracing(service="orderflow-test", exporter=exporter)
    yield exporter
    observability.stop_tracing()


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_one_trace_spans_the_request_every_task_and_the_provider_call(
    spans, celery_worker, sandbox, catalog, customer
):
    response = client_for(customer).post(  # a client made after instrumenting: traced
        "/api/orders/",
        {"lines": [{"sku": "BOOK-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 1}]}
        | {"payment_token": "tok_ok"},
        format="json",
    )
    assert response.status_code == 202
    order_id = response.data["id"]
    wait_for(lambda: Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED, timeout=40)

    def confirmation_exported():  # its run span ends after the provider's capture call
        observability.flush_tracing()
        finished = spans.get_finished_spans()
        confirmed = any(
            span.kind == SpanKind.CONSUMER
            and span.attributes.get("celery.task_name") == "orders.confirm_order"
            for span in finished
        )
        return finished if confirmed else None

    finished = wait_for(confirmation_exported, timeout=20)
    (request,) = [
        span
        for span in finished
        if span.kind == SpanKind.SERVER and span.attributes.get("http.route") == "api/orders/"
    ]
    trace_id = request.context.trace_id
    in_trace = [span for span in finished if span.context.trace_id == trace_id]
    runs = {
        span.attributes.get("celery.task_name")
        for span in in_trace
        if span.kind == SpanKind.CONSUMER
    }
    assert {
        "orders.start_pipeline",
        "orders.authorize_payment",
        "orders.check_cart_line",
        "orders.confirm_order",
    } <= runs
    provider_calls = [
        url_of(span)
        for span in in_trace
        if span.kind == SpanKind.CLIENT and url_of(span).startswith(sandbox.url)
    ]
    assert any(url.endswith("/payments") for url in provider_calls)  # authorize
    assert any("/capture" in url for url in provider_calls)
    # Every span of the order's work hangs from the request: one trace, not one per task.
    assert {span.resource.attributes["service.name"] for span in in_trace} == {"orderflow-test"}
