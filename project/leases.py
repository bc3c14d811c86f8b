"""A worker's heartbeat for the messages it holds: a consumer bootstep whose thread calls the
registered renewers every few seconds with the requests this worker holds (prefetched, waiting
on an ETA, or running), from the worker's main process, whatever the pool.

Apps register a renewer (orders renews its orders' leases, orders/signals.py); the heartbeat
stops with the worker, so a killed worker's leases simply run out.
"""

import logging
import threading
from collections.abc import Callable, Iterable

from celery import bootsteps
from celery.worker import state
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

Renewer = Callable[[Iterable, str], None]
_renewers: list[Renewer] = []


def register_renewer(renewer: Renewer) -> None:
    if renewer not in _renewers:
        _renewers.append(renewer)


def held_requests() -> list:
    """Every request this worker holds. The sets change under the consumer's feet: retry."""
    for _ in range(5):
        try:
            return [
                *state.reserved_requests,
                *state.active_requests,
                *state.scheduled_requests,
            ]
        except RuntimeError:  # a set changed size during iteration
            continue
    return []


def beat_once(hostname: str) -> None:
    requests = held_requests()
    for renewer in list(_renewers):
        try:
            renewer(requests, hostname)
        except Exception:  # one missed beat is harmless; the lease outlives a few
            logger.exception("lease heartbeat failed")


class LeaseHeartbeat(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, consumer) -> None:
        self._stopping.clear()
        hostname = consumer.hostname
        interval = settings.WORKER_LEASE_HEARTBEAT_SECONDS

        def run() -> None:
            while not self._stopping.wait(interval):
                beat_once(hostname)
                close_old_connections()

        self._thread = threading.Thread(target=run, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, consumer) -> None:
        self._stopping.set()

    shutdown = stop
