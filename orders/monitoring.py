"""What an operator pages on, read from the database and Redis (reads only).

One function, `pipeline_health()`, shared by /metrics (through `PipelineHealthCollector`, which
project/urls.py hands to project/metrics.py) and the staff's pipeline-health page.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from orders.models import TERMINAL_STATUSES, DeadLetter, Order, OutboxMessage
from project.ratelimit import provider_limiter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LimiterState:
    limit: int  # calls per window
    window: float  # seconds
    recent_slots: int  # calls granted in the current window: the pace
    waiting: int  # calls holding a future slot
    next_free_in: float  # seconds until the next free slot


@dataclass(frozen=True)
class PipelineHealth:
    outbox_backlog: int  # outbox rows no worker has received yet
    dead_letters: int  # steps out of retries, not replayed
    stuck_orders: int  # unfinished and not updated for STUCK_ORDER_SECONDS
    provider_limiter: LimiterState | None  # None: switched off, or Redis did not answer
    provider_limiter_error: str = ""


def pipeline_health() -> PipelineHealth:
    stuck_before = timezone.now() - timedelta(seconds=settings.STUCK_ORDER_SECONDS)
    stuck_orders = (
        Order.objects.exclude(status__in=TERMINAL_STATUSES)
        .filter(updated_at__lt=stuck_before)
        .count()
    )
    limiter, error = _provider_limiter_state()
    return PipelineHealth(
        outbox_backlog=OutboxMessage.objects.filter(published_at__isnull=True).count(),
        dead_letters=DeadLetter.objects.filter(replayed_at__isnull=True).count(),
        stuck_orders=stuck_orders,
        provider_limiter=limiter,
        provider_limiter_error=error,
    )


def _provider_limiter_state() -> tuple[LimiterState | None, str]:
    limiter = provider_limiter()
    if limiter is None:
        return None, ""
    try:
        state = limiter.state()
    except redis.RedisError as exc:
        logger.warning("provider limiter state unavailable", extra={"error": repr(exc)})
        return None, f"{exc.__class__.__name__}: {exc}"
    return (
        LimiterState(
            limit=state["limit"],
            window=state["window"],
            recent_slots=state["recent_slots"],
            waiting=state["waiting"],
            next_free_in=state["next_free_in"],
        ),
        "",
    )


class PipelineHealthCollector:
    """The business gauges for /metrics, computed at each scrape (three counts and a Redis
    call), so every web process reports the same values."""

    def collect(self) -> Iterator[Metric]:
        health = pipeline_health()
        yield GaugeMetricFamily(
            "orderflow_outbox_backlog",
            "Outbox messages no worker has received yet.",
            value=health.outbox_backlog,
        )
        yield GaugeMetricFamily(
            "orderflow_dead_letters",
            "Pipeline steps out of retries and not replayed.",
            value=health.dead_letters,
        )
        yield GaugeMetricFamily(
            "orderflow_stuck_orders",
            "Unfinished orders not updated for STUCK_ORDER_SECONDS.",
            value=health.stuck_orders,
        )
        limiter = health.provider_limiter
        if limiter is None:
            return
        yield GaugeMetricFamily(
            "orderflow_provider_limiter_waiting",
            "Provider calls holding a future slot of the cluster-wide limiter.",
            value=limiter.waiting,
        )
        yield GaugeMetricFamily(
            "orderflow_provider_limiter_recent_slots",
            "Provider calls granted in the current window (the pace).",
            value=limiter.recent_slots,
        )
        yield GaugeMetricFamily(
            "orderflow_provider_limiter_limit",
            "Provider calls allowed per window.",
            value=limiter.limit,
        )
        yield GaugeMetricFamily(
            "orderflow_provider_limiter_window_seconds",
            "The limiter's window.",
            value=limiter.window,
        )
        yield GaugeMetricFamily(
            "orderflow_provider_limiter_next_free_seconds",
            "Seconds until the limiter's next free slot.",
            value=limiter.next_free_in,
        )
