"""Find lost work in seconds, and only lost work.

An unfinished order's lease (orders/services/leases.py) is renewed while a live worker holds its
message. When it runs out:

* a holder was recorded: that worker stopped heartbeating (killed, partitioned) with the message:
  the order is re-dispatched now, not after the broker's visibility timeout;
* no holder (handed to a queue, never received yet): if the step's queue holds messages the
  order is waiting its turn (a backlog at the provider's pace is progress) and its lease is
  extended; an empty queue means the message was lost (a flushed queue, a broker restart, a
  publish that never reached it): re-dispatch.

Every re-dispatch claims the next generation (orders/services/dispatch.py): however many sweeps
run at once, each stalled order is sent once, and the copies of older generations that the
broker redelivers later do nothing.
"""

import logging
from collections.abc import Mapping

from django.db.models import Q
from django.utils import timezone

from orders import workflow
from orders.models import Order

from .dispatch import Dispatch, order_dispatch_claim
from .leases import lease_duration

logger = logging.getLogger(__name__)


def order_recovery_claim(*, queue_depths: Mapping[str, int], limit: int = 200) -> list[Dispatch]:
    """Claim a re-dispatch for every order whose lease ran out; returns what to send.

    `queue_depths` is what the broker says each queue holds (unknown queues count as waiting).
    """
    now = timezone.now()
    expired = list(
        Order.objects.filter(status__in=workflow.ACTIVE_STATUSES)
        .filter(Q(lease_until__lt=now) | Q(lease_until__isnull=True, pipeline_started_at__lt=now))
        .order_by("lease_until")
        .values_list("pk", "run", "status", "lease_holder")[:limit]
    )
    waiting, lost = [], []
    for order_id, run, status, holder in expired:
        queue = workflow.STEP_QUEUES[workflow.STEP_FOR_STATUS[status]]
        if not holder and queue_depths.get(queue, 1) > 0:
            waiting.append(order_id)
        else:
            lost.append((order_id, run, "worker lost" if holder else "message lost"))
    if waiting:
        Order.objects.filter(pk__in=waiting, lease_until__lt=now).update(
            lease_until=now + lease_duration()
        )
    claims = []
    for order_id, run, why in lost:
        dispatch = order_dispatch_claim(order_id=str(order_id), run=run, reason=why)
        if dispatch is not None:
            claims.append(dispatch)
    if claims:
        logger.warning(
            "re-dispatching orders whose lease ran out",
            extra={"orders": [claim.order_id for claim in claims]},
        )
    return claims
