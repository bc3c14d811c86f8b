"""One correlation id per order, everywhere: HTTP request -> outbox -> every Celery task -> logs.

structlog renders every log record (Django's, Celery's, ours) through the standard library:
JSON lines in production, readable lines in development, with the correlation id bound from a
context variable. Celery carries the id in a message header that
`before_task_publish` adds to every message sent while one is bound, so it follows chains, chord
members and callbacks, and retries, which are all published from inside a task.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from celery import signals
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

HEADER = "correlation_id"  # the log field and context variable
# The message header: Celery already uses `correlation_id` for the task id (AMQP property).
MESSAGE_HEADER = "x_correlation_id"
VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

logger = logging.getLogger("orderflow.tasks")


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def valid_correlation_id(value: str | None) -> bool:
    return bool(value and VALID_ID.match(value))


def current_correlation_id() -> str | None:
    return get_contextvars().get(HEADER)


def bind_correlation_id(value: str) -> None:
    bind_contextvars(**{HEADER: value})


# --- logging -------------------------------------------------------------------------------------

_shared_processors = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(*, json: bool, level: str) -> dict:
    """A dictConfig for Django's LOGGING: every stdlib record goes through structlog."""
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": _shared_processors,
            }
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                # The process's own stderr: Celery swaps sys.stderr for a proxy that logs (and
                # would loop back here), and test runners swap and close theirs.
                "stream": "ext://sys.__stderr__",
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Celery's own per-task lines duplicate ours (which carry the correlation id).
            "celery.app.trace": {"level": "WARNING"},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.beat": {"filters": ["routine_beat_sends"]},
        },
        "filters": {"routine_beat_sends": {"()": "project.observability.RoutineBeatSendsFilter"}},
    }


class RoutineBeatSendsFilter(logging.Filter):
    """Drops beat's "Sending due task" lines for the housekeeping tasks (every few seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Scheduler: Sending due task")
            and any(f"({name})" in message for name in HOUSEKEEPING_TASKS)
        )


# --- Celery: carry the id and log the four moments of each task ---------------------------------

# Beat runs these every few seconds; their routine moments are DEBUG so that the log shows orders.
# A failure is logged as for any task.
HOUSEKEEPING_TASKS = frozenset(
    {
        "orders.relay_outbox",
        "orders.recover_orders",
        "orders.reconcile_payments",
        "orders.prune_tables",
        "notifications.sweep_webhook_deliveries",
    }
)


def _routine_level(task_name: str | None) -> int:
    return logging.DEBUG if task_name in HOUSEKEEPING_TASKS else logging.INFO


@signals.before_task_publish.connect
def _add_correlation_header(sender=None, headers=None, **kwargs) -> None:
    """Triggered: stamp the message with the id bound where it is sent."""
    if headers is None:
        return
    correlation_id = headers.get(MESSAGE_HEADER) or current_correlation_id()
    if correlation_id:
        headers[MESSAGE_HEADER] = correlation_id
    logger.log(
        _routine_level(sender),
        "task triggered",
        extra={"task": sender, "task_id": headers.get("id"), HEADER: correlation_id},
    )


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **kwargs) -> None:
    """Received: bind the message's id for every log line and message of this execution."""
    clear_contextvars()
    correlation_id = getattr(task.request, MESSAGE_HEADER, None)
    if correlation_id:
        bind_correlation_id(correlation_id)
    task.request._orderflow_started = time.monotonic()
    logger.log(
        _routine_level(task.name),
        "task received",
        extra={
            "task": task.name,
            "task_id": task_id,
            "attempt": task.request.retries + 1,
            HEADER: correlation_id,
        },
    )


@signals.task_success.connect
def _log_success(sender=None, **kwargs) -> None:
    started = getattr(sender.request, "_orderflow_started", None)
    logger.log(
        _routine_level(sender.name),
        "task handled",
        extra={
            "task": sender.name,
            "task_id": sender.request.id,
            "duration_ms": round((time.monotonic() - started) * 1000, 1) if started else None,
        },
    )


@signals.task_retry.connect
def _log_retry(sender=None, request=None, reason=None, **kwargs) -> None:
    logger.warning(
        "task retrying",
        extra={"task": sender.name, "task_id": getattr(request, "id", None), "reason": str(reason)},
    )


@signals.task_failure.connect
def _log_failure(sender=None, task_id=None, exception=None, **kwargs) -> None:
    logger.error(
        "task failed",
        extra={"task": sender.name, "task_id": task_id, "error": repr(exception)},
    )


@signals.task_postrun.connect
def _unbind_task_context(**kwargs) -> None:
    clear_contextvars()


# --- Django: bind the id for the request ---------------------------------------------------------


class CorrelationIdMiddleware:
    """Bind X-Correlation-ID (or a new id) for the request; echo it in the response.

    An order keeps the id of the request that created it; its responses carry the order's id.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        clear_contextvars()
        supplied = request.headers.get("X-Correlation-ID")
        correlation_id = supplied if valid_correlation_id(supplied) else new_correlation_id()
        bind_correlation_id(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            clear_contextvars()
        response.headers.setdefault("X-Correlation-ID", correlation_id)
        return response
