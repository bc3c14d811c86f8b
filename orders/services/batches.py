import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import selectors, workflow
from orders.errors import IdempotencyConflict, InvalidOrder
from orders.models import TERMINAL_STATUSES, Batch, Order, OrderStatus, Product

from .dispatch import Dispatch
from .leases import lease_duration
from .orders import order_insert, request_fingerprint, validate_lines
from .outbox import outbox_enqueue


def _batch_fingerprint(orders: list[dict]) -> str:
    return request_fingerprint(
        [
            {
                "lines": [
                    {"sku": line["sku"], "quantity": int(line["quantity"])}
                    for line in body["lines"]
                ],
                "payment_token": body["payment_token"],
            }
            for body in orders
        ]
    )


def _existing_batch(*, user, idempotency_key: str, fingerprint: str) -> Batch:
    batch = Batch.objects.get(user=user, idempotency_key=idempotency_key)
    if batch.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body."
        )
    return batch


def batch_create(
    *,
    user: AbstractBaseUser,
    orders: list[dict],
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Batch, bool]:
    """Accept many orders at once, all or nothing; one outbox message starts them all.

    Returns (batch, created). The same Idempotency-Key with the same body returns the first
    batch and orders nothing; with another body it raises IdempotencyConflict.
    """
    fingerprint = _batch_fingerprint(orders)
    if idempotency_key:
        try:
            return _existing_batch(
                user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
            ), False
        except Batch.DoesNotExist:
            pass
    products = Product.objects.in_bulk(
        {line["sku"] for body in orders for line in body["lines"]}, field_name="sku"
    )
    errors = {
        index: order_errors
        for index, body in enumerate(orders)
        if (order_errors := validate_lines(body["lines"], products))
    }
    if errors:
        raise InvalidOrder({"orders": errors})
    correlation_id = correlation_id or uuid.uuid4().hex
    try:
        with transaction.atomic():
            batch = Batch.objects.create(
                user=user,
                size=len(orders),
                correlation_id=correlation_id,
                idempotency_key=idempotency_key or None,
                request_fingerprint=fingerprint,
            )
            for index, body in enumerate(orders):
                order_insert(
                    user=user,
                    lines=body["lines"],
                    payment_token=body["payment_token"],
                    products=products,
                    correlation_id=f"{correlation_id[:55]}-{index}",
                    batch=batch,
                )
            outbox_enqueue(
                task_name=workflow.START_BATCH,
                kwargs={"batch_id": str(batch.pk)},
                correlation_id=correlation_id,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A request racing this one with the same key won the unique constraint.
        return _existing_batch(
            user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
        ), False
    return batch, True


def batch_dispatch_claim(*, batch_id: str) -> list[Dispatch]:
    """Claim the first generation of every order of the batch not started yet.

    The rows are locked while claimed, so a duplicated start message claims nothing twice.
    """
    now = timezone.now()
    with transaction.atomic():
        orders = list(
            Order.objects.select_for_update()
            .filter(batch_id=batch_id, run=0, status=OrderStatus.ACCEPTED)
            .prefetch_related("lines")
        )
        if not orders:
            return []
        Order.objects.filter(pk__in=[order.pk for order in orders], run=0).update(
            run=1, pipeline_started_at=now, lease_until=now + lease_duration(), lease_holder=""
        )
    return [
        Dispatch(
            order_id=str(order.pk),
            run=1,
            from_step=workflow.FIRST_STEP,
            line_ids=tuple(line.pk for line in order.lines.all()),
            lane=workflow.BATCH_LANE,
        )
        for order in orders
    ]


def batch_finish_if_done(*, batch_id: str) -> bool:
    """Write the summary and notify once, when every order of the batch is terminal."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch_id)
        if batch.finished_at is not None:
            return False
        counts = selectors.batch_status_counts(batch=batch)
        if sum(counts.get(status, 0) for status in TERMINAL_STATUSES) < batch.size:
            return False
        batch.summary = counts
        batch.finished_at = timezone.now()
        batch.save(update_fields=["summary", "finished_at"])
        outbox_enqueue(
            task_name=workflow.NOTIFY,
            kwargs={
                "kind": "batch.finished",
                "user_id": batch.user_id,
                "context": {"batch_id": str(batch.pk)},
            },
            correlation_id=batch.correlation_id,
        )
    return True


def batch_finish_all_done(*, limit: int = 100) -> int:
    """Finish every unfinished batch that is all terminal (the last two orders of a batch may end
    at once, each seeing the other unfinished)."""
    unfinished = Batch.objects.filter(finished_at__isnull=True).exclude(
        orders__status__in=workflow.ACTIVE_STATUSES
    )
    return sum(
        batch_finish_if_done(batch_id=batch_id)
        for batch_id in unfinished.values_list("pk", flat=True)[:limit]
    )
