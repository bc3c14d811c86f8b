"""The project's ASGI application (project/asgi.py) served by uvicorn in a thread of the test
process, on a free port: same settings, same test database and the same in-thread Celery worker
as the test, real HTTP. Plus a small Server-Sent Events reader."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
import uvicorn

from tests.processes import free_port


@dataclass
class Server:
    url: str
    server: uvicorn.Server


def _application():
    """project/asgi.py's app, without its DATABASE_POOL default staying in this process's
    environment (the worker and web processes the suite starts inherit it)."""
    before = os.environ.get("DATABASE_POOL")
    from project.asgi import application

    if before is None:
        os.environ.pop("DATABASE_POOL", None)
    return application


@contextmanager
def asgi_server(application=None) -> Iterator[Server]:
    """`application`: project/asgi.py's unless given (e.g. an edge built under other settings)."""
    application = application or _application()
    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        proxy_headers=False,  # as the Procfile: X-Forwarded-For is the app's to trust
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Server(url=f"http://127.0.0.1:{port}", server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class Event:
    event: str
    data: str
    id: str | None


def sse_events(response: requests.Response) -> Iterator[Event]:
    """The events of a text/event-stream response, as they arrive (comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if line == "":
            if "data" in fields or "event" in fields:
                event = fields.get("event", "message")
                yield Event(event, fields.get("data", ""), fields.get("id"))
            fields = {}
        elif not line.startswith(":") and ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
