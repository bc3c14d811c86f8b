"""The pipeline's health as an operator reads it (the admin's pipeline-health page).

What /healthz checks (database, broker, workers, the provider limiter) plus what the business pages
on: the outbox backlog, dead letters not yet replayed, stuck orders, queue depths. Read only; each
part reports its own error instead of failing the whole picture, since the page is most needed
when something is down.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from project import broker
from project.health import (  # what /healthz says, so the page and the probe agree
    _app_details,
    _check_broker,
    _check_database,
    _live_workers,
)
from project.ratelimit import provider_limiter

from . import workflow
from .models import DeadLetter, Order, OutboxMessage

LISTED = 10  # rows shown per list on the page


def queue_names() -> list[str]:
    """Every queue the routing sends tasks to: the default, the workflow's, the static routes'."""
    names = {settings.CELERY_TASK_DEFAULT_QUEUE, *workflow.TASK_QUEUES.values()}
    routes = settings.CELERY_TASK_ROUTES
    for route in routes if isinstance(routes, list | tuple) else [routes]:
        if isinstance(route, dict):
            names.update(option["queue"] for option in route.values() if isinstance(option, dict))
    return sorted(names)


def queue_depths() -> dict[str, int | str]:
    """Messages waiting in each queue (Redis or RabbitMQ alike); "unknown" if it cannot be asked."""
    names = queue_names()
    depths = broker.queue_depths(names)
    return {name: depths.get(name, "unknown") for name in names}


def limiter_state() -> dict | str:
    try:
        limiter = provider_limiter()
        if limiter is None:
            return "off"
        return {"rate": settings.PAYMENT_PROVIDER_RATE_LIMIT, **limiter.state()}
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def _age_seconds(since, now) -> float | None:
    return None if since is None else round((now - since).total_seconds(), 1)


def outbox_backlog(*, now) -> dict:
    waiting = OutboxMessage.objects.filter(published_at__isnull=True)
    summary = waiting.aggregate(
        count=Count("pk"), oldest=Min("created_at"), failing=Count("pk", filter=~Q(last_error=""))
    )
    return {
        "backlog": summary["count"],
        "oldest_age_seconds": _age_seconds(summary["oldest"], now),
        "with_errors": summary["failing"],
    }


def dead_letters() -> dict:
    waiting = DeadLetter.objects.filter(replayed_at__isnull=True)
    latest = waiting.order_by("-created_at").values(
        "pk", "order_id", "step", "attempts", "created_at"
    )[:LISTED]
    return {"unreplayed": waiting.count(), "latest": list(latest)}


def stuck_orders(*, now) -> dict:
    """Unfinished orders that recorded nothing, not even a timeline event, for
    STUCK_ORDER_SECONDS; and how many hold a lease that ran out (recovery's to re-dispatch)."""
    active = Order.objects.filter(status__in=workflow.ACTIVE_STATUSES)
    cutoff = now - timedelta(seconds=settings.STUCK_ORDER_SECONDS)
    stuck = (
        active.filter(updated_at__lt=cutoff)
        .annotate(last_event_at=Max("events__created_at"))
        .filter(Q(last_event_at__lt=cutoff) | Q(last_event_at__isnull=True))
        .order_by("updated_at")
    )
    return {
        "threshold_seconds": settings.STUCK_ORDER_SECONDS,
        "count": stuck.count(),
        "oldest": list(stuck.values("pk", "status", "updated_at")[:LISTED]),
        "lease_expired": active.filter(lease_until__lt=now).count(),
    }


def orders_in_flight() -> dict[str, int]:
    rows = (
        Order.objects.filter(status__in=workflow.ACTIVE_STATUSES)
        .values("status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["status"]: row["count"] for row in rows}


def _or_error(read, **kwargs):
    try:
        return read(**kwargs)
    except Exception as exc:  # one part down must not hide the others
        return {"error": exc.__class__.__name__}


def pipeline_health() -> dict:
    now = timezone.now()
    broker_ok = _check_broker()
    return {
        "generated_at": now,
        "database": _check_database(),
        "broker": broker_ok,
        "workers": _live_workers() if broker_ok == "ok" else None,
        "limiter": limiter_state(),
        "queues": queue_depths() if broker_ok == "ok" else dict.fromkeys(queue_names(), broker_ok),
        "outbox": _or_error(outbox_backlog, now=now),
        "dead_letters": _or_error(dead_letters),
        "stuck_orders": _or_error(stuck_orders, now=now),
        "in_flight": _or_error(orders_in_flight),
        "details": _app_details(),  # what the apps registered for /healthz (reconciliation)
    }
