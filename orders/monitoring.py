"""What an operator pages on, read from the database, Redis and the broker (reads only).

One set of readers (outbox backlog, dead letters not replayed, stuck orders, the provider limiter,
queue depths) serves both the staff's pipeline-health page (`pipeline_health()`, plus what
/healthz checks) and /metrics (`PipelineHealthCollector`, which project/urls.py hands to
project/metrics.py; computed at each scrape, so every web process reports the same values, and
without the worker ping, which a scrape must not cost). Each part of the page reports its own
error instead of failing the whole picture, since the page is most needed when something is down.
"""

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from project import broker
from project.health import (  # what /healthz says, so the page and the probe agree
    app_details,
    check_broker,
    check_database,
    live_workers,
    provider_rate_limit,
)

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
    """Unfinished orders not updated for STUCK_ORDER_SECONDS, and how many hold a lease that
    ran out (recovery's to re-dispatch within seconds; a count that stays up means it cannot)."""
    active = Order.objects.filter(status__in=workflow.ACTIVE_STATUSES)
    cutoff = now - timedelta(seconds=settings.STUCK_ORDER_SECONDS)
    stuck = active.filter(updated_at__lt=cutoff).order_by("updated_at")
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
    broker_ok = check_broker()
    return {
        "generated_at": now,
        "database": check_database(),
        "broker": broker_ok,
        "workers": live_workers() if broker_ok == "ok" else None,
        "limiter": provider_rate_limit(),
        "queues": queue_depths() if broker_ok == "ok" else dict.fromkeys(queue_names(), broker_ok),
        "outbox": _or_error(outbox_backlog, now=now),
        "dead_letters": _or_error(dead_letters),
        "stuck_orders": _or_error(stuck_orders, now=now),
        "in_flight": _or_error(orders_in_flight),
        "details": app_details(),  # what the apps registered for /healthz (reconciliation)
    }


class PipelineHealthCollector:
    """The business gauges for /metrics, from the same readers as the page."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        outbox = outbox_backlog(now=now)
        stuck = stuck_orders(now=now)
        for name, help_text, value in (
            (
                "orderflow_outbox_backlog",
                "Outbox messages no worker has received yet.",
                outbox["backlog"],
            ),
            (
                "orderflow_dead_letters",
                "Pipeline steps dead-lettered and not replayed.",
                DeadLetter.objects.filter(replayed_at__isnull=True).count(),
            ),
            (
                "orderflow_stuck_orders",
                "Unfinished orders not updated for STUCK_ORDER_SECONDS.",
                stuck["count"],
            ),
            (
                "orderflow_leases_expired",
                "Unfinished orders whose lease ran out (lost work).",
                stuck["lease_expired"],
            ),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        limiter = provider_rate_limit()
        if not isinstance(limiter, dict):
            return
        for key, name, help_text in (
            ("waiting", "waiting", "Provider calls holding a future slot of the cluster limiter."),
            ("recent_slots", "recent_slots", "Provider calls granted in the current window."),
            ("limit", "limit", "Provider calls allowed per window."),
            ("window", "window_seconds", "The limiter's window."),
            ("next_free_in", "next_free_seconds", "Seconds until the limiter's next free slot."),
        ):
            if key in limiter:
                yield GaugeMetricFamily(
                    f"orderflow_provider_limiter_{name}", help_text, value=limiter[key]
                )
