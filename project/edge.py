"""The web edge: one ASGI application that serves each request the cheapest way it can.

- Requests that wait (`POST /api/orders/?wait=N`, the order event stream) go to Django's ASGI
  handler: their views are async and hold no thread and no database connection while they wait.
- Every other request goes to Django's WSGI handler on a small pool of threads per process
  (a2wsgi, uvicorn's own recommendation for WSGI apps). Under Django's ASGI handler a sync view
  costs a hop between the event loop and a thread for every middleware (MiddlewareMixin runs
  process_request and process_response through sync_to_async) and a new thread per request; the
  WSGI handler runs the whole chain on one thread. Measured in bench/api.py: 1.6-2 x the
  throughput of the plain ASGI handler on the sync API, as much as gunicorn's sync workers.
- Static files are served at the edge by ServeStatic, so no async-only middleware sits in
  MIDDLEWARE (one would turn the WSGI chain async and cost every request an event loop).

Which way a request goes is the URL conf's answer, not a list kept here: a coroutine view goes
async, a sync view goes to the threads. An async view that waits only for some requests names
its sync twin with `waits_only_when` (below); the threads then serve it with that twin.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs

from a2wsgi import WSGIMiddleware
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.urls import Resolver404, resolve
from servestatic import ServeStaticASGI

Query = dict[str, list[str]]


def waits_only_when(predicate: Callable[[str, Query], bool], *, sync_view: Callable):
    """Mark an async view as waiting only for requests where `predicate(method, query)` holds;
    the others are served on the threads by `sync_view`, the same view without the wait."""

    def mark(view):
        view.waits_when = predicate
        view.sync_view = sync_view
        return view

    return mark


def waits(scope: dict) -> bool:
    """Whether the edge serves this HTTP request with Django's ASGI handler."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        view = resolve(path).func
    except Resolver404:
        return False  # the threads answer the 404
    if not iscoroutinefunction(view):
        return False
    predicate = getattr(view, "waits_when", None)
    if predicate is None:
        return True
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return predicate(scope["method"], query)


class ThreadedHandler(WSGIHandler):
    """Django's WSGI handler, serving an async view's sync twin (`waits_only_when`) when the
    edge sent it a request that does not wait."""

    def resolve_request(self, request):
        match = super().resolve_request(request)
        sync_view = getattr(match.func, "sync_view", None)
        if sync_view is not None:
            match.func = sync_view
        return match


class Edge:
    def __init__(self, *, threads: int) -> None:
        self.asgi = ASGIHandler()
        self.threaded = WSGIMiddleware(ThreadedHandler(), workers=threads)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not waits(scope):
            return await self.threaded(scope, receive, send)
        return await self.asgi(scope, receive, send)


def static_files() -> dict:
    """ServeStatic's options, for its ASGI app here and its WSGI app in project/wsgi.py:
    collectstatic's STATIC_ROOT, as ServeStatic's Django middleware serves it (looked up per
    request and never cached in DEBUG)."""
    return {
        "root": settings.STATIC_ROOT,
        "prefix": f"/{settings.STATIC_URL.strip('/')}/",
        "autorefresh": settings.DEBUG,
        "max_age": 0 if settings.DEBUG else 60,
    }


def application(*, threads: int | None = None):
    """The edge with static files in front."""
    return ServeStaticASGI(Edge(threads=threads or settings.WEB_SYNC_THREADS), **static_files())
