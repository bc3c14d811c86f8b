"""Prometheus: the protected /metrics view, and the task metrics the workers record for it.

Three sources, one scrape:
- HTTP metrics (django-prometheus's middleware) live in the web process. Under gunicorn's
  several workers, set PROMETHEUS_MULTIPROC_DIR (an empty directory, per web host) so that the
  scrape adds up every worker's (prometheus_client's multiprocess mode).
- Task metrics are recorded by the workers, wherever they run (other hosts, other containers,
  prefork children), into Redis: a counter of outcomes, a run-time histogram per task and a
  step-latency histogram (from the message being sent to the step finishing it: queue wait and
  run), one pipelined round trip per finished task. The scrape reads them back.
- Business gauges are computed at scrape time by the collectors the URL passes in
  (orders.monitoring.PipelineHealthCollector: outbox backlog, dead letters, stuck orders, the
  provider limiter's pace and waiters).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import lru_cache

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from project.redis_client import get_redis

logger = logging.getLogger(__name__)

# When the message was sent (seconds since the epoch), for the step latency.
PUBLISHED_HEADER = "x_published_at"
TASK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STEP_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_FIELD_SEPARATOR = "|"  # task names and outcomes never contain it


def _key(name: str) -> str:
    return f"{settings.METRICS_REDIS_PREFIX}:{name}"


# --- Recording, in the workers (connected in project/celery.py) ---------------------------------


def stamp_published_at(headers: dict | None = None, **kwargs) -> None:
    """before_task_publish: every message says when it was sent."""
    if headers is not None:
        headers[PUBLISHED_HEADER] = time.time()


def task_started(task=None, **kwargs) -> None:
    """task_prerun."""
    task.request._metrics_started = time.monotonic()


def task_succeeded(sender=None, **kwargs) -> None:
    _record(sender, sender.request, "succeeded")


def task_failed(sender=None, **kwargs) -> None:
    _record(sender, sender.request, "failed")


def task_retried(sender=None, request=None, **kwargs) -> None:
    _record(sender, request, "retried")


def _record(task, request, outcome: str) -> None:
    started = getattr(request, "_metrics_started", None)
    published = getattr(request, PUBLISHED_HEADER, None)
    step = getattr(task, "step", None)  # pipeline steps name theirs (orders/tasks.py)
    pipe = get_redis().pipeline(transaction=False)
    pipe.hincrby(_key("tasks"), f"{task.name}{_FIELD_SEPARATOR}{outcome}", 1)
    if started is not None:
        _observe(pipe, "task_seconds", task.name, time.monotonic() - started, TASK_SECONDS_BUCKETS)
    if step and isinstance(published, int | float):
        # Clocks of different hosts: a small skew can only shift a latency, never break one.
        latency = max(time.time() - published, 0.0)
        _observe(pipe, "step_seconds", step, latency, STEP_SECONDS_BUCKETS)
    try:
        pipe.execute()
    except redis.RedisError as exc:  # metrics never fail a task
        logger.warning("task metrics not recorded", extra={"error": repr(exc)})


def _observe(pipe, name: str, label: str, value: float, buckets: tuple[float, ...]) -> None:
    """One histogram observation: the bucket it falls in (cumulated at scrape time) and sum."""
    pipe.hincrby(_key(f"{name}:buckets"), f"{label}{_FIELD_SEPARATOR}{bisect_left(buckets, value)}")
    pipe.hincrbyfloat(_key(f"{name}:sum"), label, value)


# --- Reading back, at scrape time -----------------------------------------------------------------


class TaskMetricsCollector:
    """The workers' task metrics, from Redis."""

    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        pipe = client.pipeline(transaction=False)
        for name in ("tasks", "task_seconds:buckets", "task_seconds:sum"):
            pipe.hgetall(_key(name))
        for name in ("step_seconds:buckets", "step_seconds:sum"):
            pipe.hgetall(_key(name))
        try:
            tasks, task_buckets, task_sums, step_buckets, step_sums = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("task metrics unavailable", extra={"error": repr(exc)})
            return
        outcomes = CounterMetricFamily(
            "orderflow_tasks", "Task executions finished, by outcome.", labels=["task", "outcome"]
        )
        for field, count in sorted(tasks.items()):
            task, _, outcome = field.decode().partition(_FIELD_SEPARATOR)
            outcomes.add_metric([task, outcome], int(count))
        yield outcomes
        yield _histogram(
            "orderflow_task_duration_seconds",
            "Run time of each task execution.",
            "task",
            task_buckets,
            task_sums,
            TASK_SECONDS_BUCKETS,
        )
        yield _histogram(
            "orderflow_step_latency_seconds",
            "Pipeline step: from its message being sent to the step finishing it.",
            "step",
            step_buckets,
            step_sums,
            STEP_SECONDS_BUCKETS,
        )


def _histogram(
    name: str, documentation: str, label: str, buckets: dict, sums: dict, bounds: tuple
) -> HistogramMetricFamily:
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(bounds) + 1))
    for field, count in buckets.items():
        value, _, index = field.decode().rpartition(_FIELD_SEPARATOR)
        counts[value][int(index)] += int(count)
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value in sorted(counts):
        cumulative, total = [], 0
        for bound, count in zip([*map(str, bounds), "+Inf"], counts[value], strict=True):
            total += count
            cumulative.append((bound, total))
        family.add_metric([value], cumulative, sum_value=float(sums.get(value.encode(), 0)))
    return family


# --- The view ------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in allowed)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """Every configured credential is required; with none configured, nobody may scrape."""
    token, allowed = settings.METRICS_TOKEN, tuple(settings.METRICS_ALLOWED_NETWORKS)
    if not token and not allowed:
        return JsonResponse(
            {"detail": "Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS."},
            status=403,
        )
    if allowed:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            address = None
        if address is None or not any(address in network for network in _networks(allowed)):
            return JsonResponse({"detail": "Not allowed from this address."}, status=403)
    if token:
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.strip().encode(), token.encode()
        ):
            response = JsonResponse({"detail": "A valid bearer token is required."}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


def metrics_view(request: HttpRequest, collectors: Iterable = ()) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every web worker's HTTP metrics
    else:
        registry.register(REGISTRY)  # this process's
    registry.register(TaskMetricsCollector())
    for collector in collectors:
        registry.register(collector)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
