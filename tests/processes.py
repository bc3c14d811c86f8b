"""The stack's processes for tests that need a whole one (crashes, other brokers): the harness of
project/processes.py with the suite's environment (tests.settings, the test database, the run's
broker)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from project import processes
from project.processes import ASGI_APP, ASGI_WORKER_CLASS, StackProcess, Worker, free_port

__all__ = [
    "StackProcess",
    "Worker",
    "beat_process",
    "free_port",
    "terminate_main_process",
    "test_database_url",
    "web_process",
    "worker_process",
]


def test_database_url() -> str:
    """The URL of the database the test run is using, for processes the test starts."""
    return processes.database_url(connection.settings_dict, connection.vendor)


def _stack_env(*, broker_url: str, extra_env: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": test_database_url(),
        "TEST_CELERY_BROKER_URL": broker_url,
        **(extra_env or {}),
    }


@contextmanager
def worker_process(
    *,
    broker_url: str,
    provider_url: str,
    log_path: Path,
    concurrency: int = 2,
    name: str = "testworker",
    extra_env: dict[str, str] | None = None,
    include: str | None = None,
) -> Iterator[Worker]:
    """A prefork `celery worker`; `include` loads one more module into it (a test's fault)."""
    env = _stack_env(broker_url=broker_url, extra_env=extra_env)
    env["PAYMENT_PROVIDER_URL"] = provider_url
    with processes.worker(
        env=env,
        log_path=log_path,
        concurrency=concurrency,
        name=name,
        include=[include] if include else (),
    ) as worker:
        yield worker


def terminate_main_process(worker: Worker, timeout: float = 30.0) -> int | None:
    """SIGTERM only the worker's main process, as `docker stop` or Kubernetes do (stop() signals
    the whole group, as systemd does); return its exit code, None if it had to be killed."""
    return worker.stop(timeout, main_only=True)


@contextmanager
def beat_process(
    *, broker_url: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[StackProcess]:
    """`celery beat` with the project's scheduler and schedule (CELERY_BEAT_SCHEDULE)."""
    with processes.beat(
        env=_stack_env(broker_url=broker_url, extra_env=extra_env), log_path=log_path
    ) as beat:
        yield beat


@contextmanager
def web_process(
    *,
    broker_url: str,
    log_path: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    asgi: bool = False,
) -> Iterator[StackProcess]:
    """The API under gunicorn on 127.0.0.1, publishing to `broker_url`: WSGI, or with `asgi` the
    Procfile's server (project/asgi.py in uvicorn workers, PostgreSQL through the pool)."""
    env = _stack_env(broker_url=broker_url, extra_env=extra_env)
    served = {"app": ASGI_APP, "worker_class": ASGI_WORKER_CLASS} if asgi else {}
    with processes.web(env=env, log_path=log_path, port=port, **served) as web:
        yield web
