"""What an operator sees: structured logs, traces, error reports. Importing this wires nothing:
the Celery handlers are connected in project/celery.py, logging is configured by Django through
LOGGING_CONFIG, and tracing and error tracking are started by each process's entry point
(project/wsgi.py for the web, worker signals in project/celery.py).

Logs: django-structlog writes the request and task lifecycle lines (request_started,
request_finished, task_enqueued, task_started, task_succeeded, task_retrying, task_failed) and
carries the bound context (request_id, user_id, ...) from the process that sends a task to the
worker that runs it. The business key on top of that is the order's `correlation_id`: bound for
the request (X-Correlation-ID when valid, else a new id; request_finished carries the id the
response names, an order's own), inherited by every task it sends, and overridden by the
`x_correlation_id` message header that a message published out of the order's context carries
(the outbox relay, the sweepers). Every stdlib record (Django's, Celery's, ours) is rendered by
structlog too: JSON lines with LOG_JSON=1, readable lines otherwise.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import uuid
from typing import TYPE_CHECKING

import structlog
from celery.concurrency import get_implementation
from django.utils.log import AdminEmailHandler as DjangoAdminEmailHandler
from django_structlog.middlewares import RequestMiddleware as StructlogRequestMiddleware
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

HEADER = "correlation_id"  # the log field and context variable
# The message header that names the order a message belongs to, whatever context sends it.
# Celery already uses `correlation_id` for the task id (an AMQP property).
MESSAGE_HEADER = "x_correlation_id"
HTTP_HEADER = "X-Correlation-ID"
VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Beat runs these every few seconds; their routine lines are dropped so that the log shows
# orders. Their warnings and failures are kept.
HOUSEKEEPING_TASKS = frozenset(
    {
        "orders.relay_outbox",
        "orders.recover_orders",
        "orders.reconcile_payments",
        "orders.prune_tables",
        "notifications.sweep_webhook_deliveries",
    }
)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def valid_correlation_id(value: str | None) -> bool:
    return bool(value and VALID_ID.match(value))


def current_correlation_id() -> str | None:
    return get_contextvars().get(HEADER)


def bind_correlation_id(value: str) -> None:
    bind_contextvars(**{HEADER: value})


# --- logging -------------------------------------------------------------------------------------


def _add_trace_ids(logger, method_name: str, event_dict: dict) -> dict:
    """With tracing on, every line names its trace and span, so a log line leads to its trace."""
    if _tracing is not None:
        context = _tracing.current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


# Run on every record, structlog's own and the standard library's ("foreign") alike.
_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    _add_trace_ids,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def structured_formatter(*, json: bool) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of LOGGING's handlers: one JSON object a line, or a readable line."""
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        foreign_pre_chain=_SHARED_PROCESSORS,
    )


def configure_logging(logging_settings: dict) -> None:
    """LOGGING_CONFIG: Django calls this once per process (web, worker, beat, commands)."""
    logging.config.dictConfig(logging_settings)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _event_name(record: logging.LogRecord) -> str:
    return record.msg.get("event", "") if isinstance(record.msg, dict) else record.getMessage()


class RoutineHousekeepingFilter(logging.Filter):
    """Drops the routine lines of the housekeeping tasks (beat sends them every few seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if isinstance(record.msg, dict):  # django-structlog's task lines
            task = record.msg.get("task") or record.msg.get("child_task_name")
            return task not in HOUSEKEEPING_TASKS
        message = record.getMessage()
        return not (
            message.startswith("Scheduler: Sending due task")
            and any(f"({name})" in message for name in HOUSEKEEPING_TASKS)
        )


class AdminEmailHandler(DjangoAdminEmailHandler):
    """Django's mail_admins handler; for a structlog event the subject names the event, the task
    and the correlation id rather than repeating the event's dictionary."""

    _subject: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds the handler's lock around emit: the attribute is not shared.
        if isinstance(record.msg, dict):
            event = record.msg
            parts = [event.get("event"), event.get("task"), event.get(HEADER)]
            self._subject = f"{record.levelname}: " + " ".join(str(p) for p in parts if p)
        try:
            super().emit(record)
        finally:
            self._subject = None

    def format_subject(self, subject: str) -> str:
        return super().format_subject(self._subject or subject)


# --- Django: the request's lines carry the correlation id ----------------------------------------


class RequestMiddleware(StructlogRequestMiddleware):
    """django-structlog's request logging (request_id, user_id, request_started/finished/failed),
    with the correlation id bound before the first line and echoed in X-Correlation-ID.

    The API answers for an order with the order's own id (a repeated Idempotency-Key returns an
    order created by an earlier request): request_finished then carries that id.
    """

    def prepare(self, request) -> None:
        clear_contextvars()
        supplied = request.headers.get(HTTP_HEADER)
        bind_correlation_id(supplied if valid_correlation_id(supplied) else new_correlation_id())
        super().prepare(request)

    def handle_response(self, request, response) -> None:
        answered = response.headers.get(HTTP_HEADER)
        if valid_correlation_id(answered):
            bind_correlation_id(answered)
        else:
            response.headers[HTTP_HEADER] = current_correlation_id() or new_correlation_id()
        super().handle_response(request, response)


# --- Celery: what django-structlog does not know about the order ---------------------------------


def bind_task_correlation_id(sender=None, task=None, **kwargs) -> None:
    """django-structlog's bind_extra_task_metadata: after it bound the sender's context, bind the
    task's name and the order's id named by the message header (if any) for every line."""
    bind_contextvars(task=task.name)
    correlation_id = getattr(task.request, MESSAGE_HEADER, None)
    if valid_correlation_id(correlation_id):
        bind_correlation_id(correlation_id)


# --- Tracing (OpenTelemetry), off unless the standard OTEL_* variables ask for it ---------------
# The SDK and the instrumentation are imported only by a process that traces: off costs nothing,
# not even their import.

_tracing: _Tracing | None = None


class _Tracing:
    """What a tracing process holds: its provider, and the API's current-span lookup."""

    def __init__(self, provider: TracerProvider, current_span) -> None:
        self.provider = provider
        self.current_span = current_span


def tracing_requested(environ=os.environ) -> bool:
    """On when an exporter is named: OTEL_TRACES_EXPORTER (otlp or console) or an OTLP endpoint;
    OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none switch it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter_from_env(environ=os.environ) -> SpanExporter:
    names = {
        name.strip().lower()
        for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if name.strip()
    }
    if len(names) != 1 or not names <= {"otlp", "console"}:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={environ.get('OTEL_TRACES_EXPORTER')!r}: one of otlp, console"
        )
    if names == {"console"}:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # It reads OTEL_EXPORTER_OTLP_* itself (HTTP/protobuf).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure_tracing(*, service: str, exporter: SpanExporter | None = None) -> bool:
    """Trace Django requests, Celery publishes and runs, and outgoing `requests` calls.

    Without `exporter`, only when OTEL_* asks for it (tracing_requested). Once per process;
    returns whether tracing is on. OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and
    OTEL_TRACES_SAMPLER are honoured by the SDK.
    """
    global _tracing
    if _tracing is not None:
        return True
    if exporter is None:
        if not tracing_requested():
            return False
        exporter = _exporter_from_env()
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    _tracing = _Tracing(provider, trace.get_current_span)
    return True


def flush_tracing() -> None:
    if _tracing is not None:
        _tracing.provider.force_flush()


def stop_tracing() -> None:
    """Flush what is buffered and take the instrumentation out (tests)."""
    global _tracing
    if _tracing is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _tracing.provider.force_flush()
    DjangoInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()
    RequestsInstrumentor().uninstrument()
    _tracing.provider.shutdown()
    _tracing = None


def start_worker_tracing(sender=None, **kwargs) -> None:
    """worker_init: pools that run tasks in this process (threads, solo, gevent) start tracing
    here; a prefork pool's children start it in worker_process_init, after the fork, so that
    the span processor's thread lives in the process that records the spans."""
    if get_implementation(sender.pool_cls).__module__ != "celery.concurrency.prefork":
        configure_tracing(service="orderflow-worker")


def start_worker_process_tracing(**kwargs) -> None:
    """worker_process_init: a prefork child (or the solo pool)."""
    configure_tracing(service="orderflow-worker")


# --- Error tracking (Sentry), only with SENTRY_DSN ------------------------------------------------


def configure_error_tracking(environ=os.environ) -> bool:
    """Report unhandled errors of requests and tasks to Sentry when SENTRY_DSN is set."""
    dsn = environ.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    import sentry_sdk  # only a process that reports needs it loaded
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environ.get("SENTRY_ENVIRONMENT") or None,
        release=environ.get("SENTRY_RELEASE") or None,
        traces_sample_rate=float(environ.get("SENTRY_TRACES_SAMPLE_RATE") or 0.0),
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )
    return True


def start_worker_error_tracking(**kwargs) -> None:
    """celeryd_init / beat_init: the worker's and beat's main process."""
    configure_error_tracking()
