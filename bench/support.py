"""What the benchmarks share beyond the process harness (project/processes.py): their environment,
Django on a throw-away database, the seed, the sandbox provider in a process of its own and
percentiles."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import django
import redis
from django.db import connections

from project.processes import (
    LOCALHOST,
    ChildServer,
    postgres_answers,
    postgres_database,
    require_local,
)
from project.processes import (
    migrate as migrate_database,
)

BENCH_PRODUCTS = {"BENCH-A": "10.00", "BENCH-B": "4.50"}
# Nothing leaves 127.0.0.1, whatever .env says: e-mail goes to the worker's log (the settings'
# default, so the figures stay comparable) or, with LOCMEM_EMAIL, stays in memory.
CONSOLE_EMAIL = "django.core.mail.backends.console.EmailBackend"
LOCMEM_EMAIL = "django.core.mail.backends.locmem.EmailBackend"


def environment(*, settings: str, redis_url: str, **values: str) -> dict[str, str]:
    """The processes' environment: this one's, the settings module, one Redis database for the
    broker, the cache and everything else (REDIS_URL), e-mail on the console, then `values`."""
    require_local(redis_url)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "CACHE_URL": redis_url,
        "EMAIL_BACKEND": CONSOLE_EMAIL,
        **values,
    }


def production_mode(name: str) -> dict[str, str]:
    """DEBUG=0 (no query log) over plain HTTP on loopback, with a throw-away secret key."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": f"bench-{name}-{uuid.uuid4().hex}",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": LOCALHOST,
    }


@contextlib.contextmanager
def django_database(
    name: str, env: dict[str, str], *, kind: str = "postgres", workdir: Path | None = None
) -> Iterator[dict[str, str]]:
    """A fresh database `name` (PostgreSQL, dropped afterwards; or with kind "sqlite" a file in
    `workdir`; "auto": PostgreSQL if it answers), migrated; Django set up on it in this process
    (logging at WARNING: the scripts print tables); the Redis database flushed before and after.
    Yields `env` with its DATABASE_URL."""
    if kind == "auto":
        kind = "postgres" if postgres_answers() else "sqlite"
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{workdir / f'{name}.sqlite3'}"  # the temp dir goes with the run
            migrate_database({**env, "DATABASE_URL": url})
        else:
            url = stack.enter_context(postgres_database(name, env))
        env = {**env, "DATABASE_URL": url}
        os.environ.update(env)
        os.environ["LOG_LEVEL"] = "WARNING"
        django.setup()
        redis_client = redis.Redis.from_url(env["REDIS_URL"])
        redis_client.flushdb()
        stack.callback(redis_client.flushdb)
        # Before the database is dropped (FORCE would cut them anyway).
        stack.callback(connections.close_all)
        yield env


def seed(*, username: str = "bench", products: dict[str, str] = BENCH_PRODUCTS):
    """A customer and `products` (SKU -> price in EUR) with stock for any run; the customer."""
    from django.contrib.auth import get_user_model

    from orders.models import Product

    user = get_user_model().objects.create_user(username=username, password="bench-orderflow")
    for sku, price in products.items():
        Product.objects.get_or_create(
            sku=sku,
            defaults={
                "name": sku,
                "price": Decimal(price),
                "currency": "EUR",
                "stock": 1_000_000_000,
            },
        )
    return user


def api_token(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=user).key


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


# --- the sandbox provider, in a process of its own ---------------------------------------------


class ArrivalClock:
    """The sandbox's clock: it reads it once per arrival, so it also logs arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrivals: list[tuple[float, float]] = []  # (monotonic, wall)

    def __call__(self) -> float:
        now = time.monotonic()
        with self._lock:
            self.arrivals.append((now, time.time()))
        return now

    def reset(self) -> None:
        with self._lock:
            self.arrivals = []


class BenchSandbox:
    """orders.provider.sandbox's SandboxProvider with, when asked, every arrival's time logged;
    built by ChildServer in its own interpreter."""

    def __init__(self, *, rate_limit: int, window: float, latency: float, log_arrivals: bool):
        from orders.provider.sandbox import SandboxProvider

        self.clock = ArrivalClock() if log_arrivals else None
        self.provider = SandboxProvider(
            host=LOCALHOST,
            rate_limit=rate_limit,
            window=window,
            latency=latency,
            clock=self.clock or time.monotonic,
        )
        self.url = self.provider.url

    def start(self) -> None:
        self.provider.start()

    def stop(self) -> None:
        self.provider.stop()

    def stats(self) -> dict:
        return self.provider.stats()

    def reset(self) -> None:
        self.provider.reset()
        if self.clock is not None:
            self.clock.reset()

    def arrivals(self) -> list[tuple[float, float]]:
        return sorted(self.clock.arrivals) if self.clock is not None else []


def sandbox_process(
    *,
    rate_limit: int,
    window: float = 1.0,
    latency: float = 0.0,
    log_arrivals: bool = False,
    priority: int = 0,
) -> ChildServer:
    """The sandbox provider (rate_limit 0: no limit) serving from an interpreter of its own;
    `.call("stats")`, `.call("reset")`, `.call("arrivals")`; `.url`, `.pid`, `.stop()`."""
    return ChildServer(
        BenchSandbox,
        priority=priority,
        rate_limit=rate_limit,
        window=window,
        latency=latency,
        log_arrivals=log_arrivals,
    )
