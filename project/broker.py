"""What the broker holds: queue depths, asked the same way on Redis and RabbitMQ."""

import contextlib
import logging
from collections.abc import Iterable

from celery import current_app

logger = logging.getLogger(__name__)


def queue_depths(names: Iterable[str]) -> dict[str, int]:
    """Messages ready in each queue. A queue the broker does not know holds 0; a queue that
    cannot be asked is left out (callers treat an unknown depth as "still waiting")."""
    depths: dict[str, int] = {}
    try:
        with current_app.connection_for_read() as connection:
            for name in names:
                channel = connection.channel()  # a failed passive declare closes its channel
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except Exception as exc:
                    if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                        depths[name] = 0
                    else:
                        logger.warning(
                            "queue depth unknown", extra={"queue": name, "error": repr(exc)}
                        )
                finally:
                    with contextlib.suppress(Exception):  # a closed channel is what we wanted
                        channel.close()
    except Exception as exc:
        logger.warning("broker unreachable for queue depths", extra={"error": repr(exc)})
    return depths
