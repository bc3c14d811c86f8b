"""The pipeline's health as an operator reads it (the admin's pipeline-health page).

What /healthz checks (database, broker, workers, the provider limiter) plus what the business pages
on: the outbox backlog, dead letters not yet replayed, stuck orders, queue depths. Read only; each
part reports its own error instead of failing the whole picture, since the page is most needed
when something is down.
"""

from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

# The same checks /healthz answers with, so the page and the probe never disagree.
from project.health import _check_broker, _check_database, _live_workers
from project.ratelimit import provider_limiter

from .models import TERMINAL_STATUSES, DeadLetter, Order, OutboxMessage

LISTED = 10  # rows shown per list on the page


def queue_names() -> list[str]:
    """Every queue the routing sends tasks to."""
    routes = getattr(settings, "CELERY_TASK_ROUTES", {}) or {}
    names = {settings.CELERY_TASK_DEFAULT_QUEUE}
    names.update(route["queue"] for route in routes.values() if "queue" in route)
    return sorted(names)


def queue_depths() -> dict[str, int | str]:
    """Messages waiting in each queue, asked of the broker (Redis or RabbitMQ alike)."""
    depths: dict[str, int | str] = {}
    try:
        with current_app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            for name in queue_names():
                channel = connection.channel()
                try:
                    # Passive: look, never create. A queue nobody declared yet holds nothing.
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except connection.channel_errors:
                    depths[name] = 0
                finally:
                    channel.close()
    except Exception as exc:
        return dict.fromkeys(queue_names(), f"error: {exc.__class__.__name__}")
    return depths


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
    """Unfinished orders that changed nothing, not even their timeline, for STUCK_ORDER_SECONDS
    (what the sweeper acts on)."""
    cutoff = now - timedelta(seconds=settings.STUCK_ORDER_SECONDS)
    stuck = (
        Order.objects.exclude(status__in=TERMINAL_STATUSES)
        .filter(updated_at__lt=cutoff)
        .annotate(last_event_at=Max("events__created_at"))
        .filter(Q(last_event_at__lt=cutoff) | Q(last_event_at__isnull=True))
        .order_by("updated_at")
    )
    return {
        "threshold_seconds": settings.STUCK_ORDER_SECONDS,
        "count": stuck.count(),
        "oldest": list(stuck.values("pk", "status", "updated_at")[:LISTED]),
    }


def orders_in_flight() -> dict[str, int]:
    rows = (
        Order.objects.exclude(status__in=TERMINAL_STATUSES)
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
    broker = _check_broker()
    return {
        "generated_at": now,
        "database": _check_database(),
        "broker": broker,
        "workers": _live_workers() if broker == "ok" else None,
        "limiter": limiter_state(),
        "queues": queue_depths() if broker == "ok" else dict.fromkeys(queue_names(), broker),
        "outbox": _or_error(outbox_backlog, now=now),
        "dead_letters": _or_error(dead_letters),
        "stuck_orders": _or_error(stuck_orders, now=now),
        "in_flight": _or_error(orders_in_flight),
    }
