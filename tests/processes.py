"""Real worker processes for tests that need a whole worker (crashes, other brokers)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database the test run is using, for processes the test starts."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def kill_tree(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crashed host would."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # warm shutdown
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()


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
) -> Iterator[WorkerProcess]:
    """A prefork `celery worker`; `include` loads one more module into it (a test's fault)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": test_database_url(),
        "TEST_CELERY_BROKER_URL": broker_url,
        "PAYMENT_PROVIDER_URL": provider_url,
        **(extra_env or {}),
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--queues",
                "orders,provider,notifications",
                "--hostname",
                f"{name}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                *(["--include", include] if include else []),
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_tree reaches the pool children
        )
    worker = WorkerProcess(process, log_path)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


# --- More processes of the stack: beat, the web server, a worker stopped like an orchestrator ---


def terminate_main_process(worker: WorkerProcess, timeout: float = 30.0) -> int | None:
    """SIGTERM only the worker's main process, as `docker stop` or Kubernetes do (stop() signals
    the whole group, as systemd does); return its exit code, None if it had to be killed."""
    if worker.process.poll() is not None:
        return worker.process.returncode
    worker.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the running tasks
    try:
        return worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill_tree()
        return None


class ServiceProcess:
    """A process of the stack started by a test, in its own process group."""

    def __init__(self, process: subprocess.Popen, log_path: Path, url: str = "") -> None:
        self.process = process
        self.log_path = log_path
        self.url = url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _stack_env(*, broker_url: str, extra_env: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": test_database_url(),
        "TEST_CELERY_BROKER_URL": broker_url,
        **(extra_env or {}),
    }


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def beat_process(
    *, broker_url: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[ServiceProcess]:
    """`celery beat` with the project's scheduler and schedule (CELERY_BEAT_SCHEDULE)."""
    process = _start(
        [sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO"],
        _stack_env(broker_url=broker_url, extra_env=extra_env),
        log_path,
    )
    beat = ServiceProcess(process, log_path)
    try:
        deadline = time.monotonic() + 30
        while "beat: Starting" not in beat.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"beat did not start:\n{beat.log()[-3000:]}")
            time.sleep(0.1)
        yield beat
    finally:
        beat.stop()


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (a URL we built)
            return True
    except urllib.error.HTTPError:
        return True  # 401 and friends: the application is up
    except OSError:
        return False


@contextmanager
def web_process(
    *,
    broker_url: str,
    log_path: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[ServiceProcess]:
    """The API as production serves it: gunicorn on 127.0.0.1, publishing to `broker_url`."""
    port = port or free_port()
    process = _start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "project.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "8",
            "--timeout",
            "60",
            "--access-logfile",
            "-",
        ],
        _stack_env(broker_url=broker_url, extra_env=extra_env),
        log_path,
    )
    web = ServiceProcess(process, log_path, url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while not _answers_http(web.url + "/api/products/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{web.log()[-3000:]}")
            time.sleep(0.1)
        yield web
    finally:
        web.stop()
