"""The stack's processes, started for a test or a benchmark: worker, beat, web server, a server in
an interpreter of its own (the sandbox provider), and a throw-away PostgreSQL database.

One harness for `tests/` (through tests/processes.py, which adds the suite's environment) and
`bench/`. It imports no app and no pytest: every process gets the complete environment from its
caller, so a test points it at the test database and a benchmark at its own. Local only: the
benchmarks refuse any host but 127.0.0.1 (`require_local`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

BASE_DIR = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
QUEUES = ("orders", "provider", "notifications")  # every queue the Procfile's worker consumes
POSTGRES_ADMIN_DSN = f"host={LOCALHOST} port=5432 user=postgres dbname=postgres connect_timeout=3"
# The Procfile's web server: project/asgi.py in uvicorn workers (web(app=..., worker_class=...)).
ASGI_APP = "project.asgi:application"
ASGI_WORKER_CLASS = "uvicorn_worker.UvicornWorker"


def require_local(*urls: str) -> None:
    """Refuse any host but this machine: the benchmarks flush and drop what they use."""
    for url in urls:
        host = urlsplit(url).hostname
        if host not in (None, "", LOCALHOST, "localhost"):
            raise SystemExit(f"refusing to talk to {host!r}: only {LOCALHOST} is used here")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll until predicate() is truthy; False if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (a URL we built)
            return True
    except urllib.error.HTTPError:
        return True  # 401 and friends: the application is up
    except OSError:
        return False


# --- a throw-away PostgreSQL database ----------------------------------------------------------


def database_url(settings_dict: dict[str, Any], vendor: str) -> str:
    """The DATABASE_URL of a Django connection's database, for the processes it starts."""
    if vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or LOCALHOST
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def postgres_answers() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_DSN):
            return True
    except psycopg.Error:  # no server, refused, auth: no PostgreSQL to use
        return False


def _admin(statement: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(statement)


@contextlib.contextmanager
def postgres_database(name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Yield the DATABASE_URL of a fresh PostgreSQL database `name`, migrated when `env` (the
    environment `manage.py migrate` runs in) is given; drop it afterwards, even if in use."""
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    url = f"postgres://postgres@{LOCALHOST}:5432/{name}"
    try:
        if env is not None:
            migrate({**env, "DATABASE_URL": url})
        yield url
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")


# --- processes of the stack --------------------------------------------------------------------


class StackProcess:
    """A process of the stack in its own process group (so signals reach its children), logging
    to a file."""

    def __init__(self, command: list[str], *, env: dict[str, str], log_path: Path, url: str = ""):
        self.log_path = log_path
        self.url = url
        # Readiness is read from what this start wrote, not from an earlier run's lines.
        self._log_start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our interpreter, arguments we build)
                command,
                cwd=BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self, what: str) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{self.log()[-3000:]}")

    def wait_for(self, ready: Callable[[], object], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive(what)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within {timeout:.0f}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def logged_since_start(self, text: str) -> bool:
        return text in self.log()[self._log_start :]

    def kill_tree(self) -> None:
        """SIGKILL the process and its children at once, as a crashed host would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def signal_stop(self, *, main_only: bool = False) -> None:
        """SIGTERM: to the whole group as systemd does, or to the main process only as `docker
        stop` and Kubernetes do (a worker's pool children then exit on their own)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if main_only:
                self.process.send_signal(signal.SIGTERM)
            else:
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0, *, main_only: bool = False) -> int | None:
        """A warm stop; the exit code, or None if it had to be killed after `timeout` s."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.signal_stop(main_only=main_only)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            return None


def stop_all(processes: Iterable[StackProcess], timeout: float = 30.0) -> None:
    """Signal every process first, so their warm shutdowns overlap, then wait for each."""
    processes = list(processes)
    for process in processes:
        process.signal_stop()
    for process in processes:
        process.stop(timeout)


class Worker(StackProcess):
    """A prefork `celery -A project worker`."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        name: str = "worker",
        queues: Iterable[str] = QUEUES,
        include: Iterable[str] = (),
        loglevel: str = "INFO",
        task_events: bool = False,
    ) -> None:
        self.hostname = f"{name}@{socket.gethostname()}"  # what %h would give
        self.queues = list(queues)
        command = [
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
            ",".join(self.queues),
            "--hostname",
            self.hostname,
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            *(["--include", ",".join(include)] if include else []),
            *(["--task-events"] if task_events else []),
        ]
        super().__init__(command, env=env, log_path=log_path)

    def wait_ready(self, timeout: float = 90.0, *, app=None) -> None:
        """Ready: its "ready." line, or with a Celery `app` on the same broker, an answer to a
        remote-control ping (whatever the log level; the control consumer starts last)."""
        if app is None:
            self.wait_for(lambda: self.logged_since_start("ready."), "worker", timeout)
        else:
            self.wait_for(
                lambda: app.control.ping(destination=[self.hostname], timeout=0.5),
                "worker",
                timeout,
            )

    def consume(self, app, on: bool) -> None:
        """Stop or resume taking messages (remote control), e.g. to queue a burst first."""
        control = app.control.add_consumer if on else app.control.cancel_consumer
        for queue in self.queues:
            if not control(queue, destination=[self.hostname], reply=True, timeout=5):
                raise RuntimeError(f"{self.hostname} did not confirm {control.__name__} {queue}")


@contextlib.contextmanager
def worker(*, app=None, **options: Any) -> Iterator[Worker]:
    """A started, ready Worker (see Worker for the options), stopped warm on the way out."""
    process = Worker(**options)
    try:
        process.wait_ready(app=app)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def beat(*, env: dict[str, str], log_path: Path) -> Iterator[StackProcess]:
    """`celery beat` with the project's scheduler and schedule (CELERY_BEAT_SCHEDULE)."""
    command = [sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO"]
    process = StackProcess(command, env=env, log_path=log_path)
    try:
        process.wait_for(lambda: process.logged_since_start("beat: Starting"), "beat", 30.0)
        yield process
    finally:
        process.stop(15.0)


@contextlib.contextmanager
def web(
    *,
    env: dict[str, str],
    log_path: Path,
    port: int | None = None,
    app: str = "project.wsgi:application",
    workers: int = 1,
    threads: int = 8,
    worker_class: str | None = None,
    timeout: float = 60.0,
) -> Iterator[StackProcess]:
    """The API under gunicorn on 127.0.0.1, with the access log (its cost is part of serving).
    `worker_class` (e.g. uvicorn's, for project/asgi.py) replaces the threads."""
    port = port or free_port()
    per_worker = (
        ["--worker-class", worker_class, "--forwarded-allow-ips", ""]
        if worker_class
        else ["--threads", str(threads)]
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--bind",
        f"{LOCALHOST}:{port}",
        "--workers",
        str(workers),
        *per_worker,
        "--timeout",
        f"{timeout:g}",
        "--access-logfile",
        "-",
        "--no-control-socket",  # its default path is shared with every other gunicorn here
    ]
    process = StackProcess(command, env=env, log_path=log_path, url=f"http://{LOCALHOST}:{port}")
    try:
        process.wait_for(lambda: answers_http(process.url + "/api/products/"), "gunicorn", 30.0)
        yield process
    finally:
        process.stop(15.0)


# --- a server in an interpreter of its own -----------------------------------------------------


def _serve_in_child(connection, factory: Callable[..., Any], kwargs: dict, priority: int) -> None:
    if priority:
        try:
            os.nice(-priority)
        except OSError:  # raising priority needs root or CAP_SYS_NICE
            print(f"could not raise the server's priority by {priority}; running at nice 0")
    server = factory(**kwargs)
    server.start()
    connection.send((server.url, os.getpid()))
    try:
        while connection.poll(3600):  # the parent calls at least once an hour
            request = connection.recv()
            if request is None:
                break
            method, args = request
            connection.send(getattr(server, method)(*args))
    finally:
        server.stop()


class ChildServer:
    """`factory(**kwargs)` (an object with start(), stop() and url, importable by name) built and
    served in a spawned interpreter, so its answers and clock never wait for the caller's GIL, as
    a real remote service's would not; `call(method, *args)` runs one of its methods there.
    `priority` N runs it at nice -N (when allowed)."""

    def __init__(self, factory: Callable[..., Any], *, priority: int = 0, **kwargs: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve_in_child, args=(child, factory, kwargs, priority), daemon=True
        )
        self._process.start()
        self.url, self.pid = self._receive(what="start")

    def _receive(self, *, what: str, timeout: float = 30.0) -> Any:
        if not self._connection.poll(timeout):
            raise RuntimeError(f"the server's process did not {what} within {timeout:.0f}s")
        return self._connection.recv()

    def call(self, method: str, *args: Any) -> Any:
        self._connection.send((method, args))
        return self._receive(what=f"answer {method}")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
