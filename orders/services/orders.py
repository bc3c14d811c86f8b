import contextlib
import hashlib
import json
import uuid
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import selectors
from orders.errors import IdempotencyConflict, InvalidOrder
from orders.models import TERMINAL_STATUSES, Batch, Order, OrderLine, OrderStatus, Product

from .events import event_record
from .outbox import outbox_enqueue

START_PIPELINE_TASK = "orders.start_pipeline"
START_BATCH_TASK = "orders.start_batch"
FINISH_BATCH_TASK = "orders.finish_batch"


def _fingerprint(*, lines: list[dict], payment_token: str) -> str:
    canonical = json.dumps(
        {
            "lines": [{"sku": line["sku"], "quantity": int(line["quantity"])} for line in lines],
            "payment_token": payment_token,
        },
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing_for_key(*, user: AbstractBaseUser, idempotency_key: str, fingerprint: str) -> Order:
    """The order this user first placed with this key; raises Order.DoesNotExist if none."""
    order = Order.objects.get(user=user, idempotency_key=idempotency_key)
    if order.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body."
        )
    return order


def _validate_lines(lines: list[dict], products: dict[str, Product]) -> dict:
    """Field errors for lines the catalog cannot take, keyed by line index as DRF does."""
    errors: dict = {}
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line["sku"] not in products:
            errors[index] = {"sku": [f"Unknown product '{line['sku']}'."]}
        elif line["sku"] in seen:
            errors[index] = {"sku": [f"Product '{line['sku']}' appears twice; merge the lines."]}
        seen.add(line["sku"])
    if errors:
        return {"lines": errors}
    if len({products[line["sku"]].currency for line in lines}) > 1:
        return {"lines": ["All products of one order must share a currency."]}
    return {}


def _order_insert(
    *,
    user: AbstractBaseUser,
    lines: list[dict],
    payment_token: str,
    products: dict[str, Product],
    correlation_id: str,
    batch: Batch | None = None,
    idempotency_key: str | None = None,
) -> Order:
    """Write an order, its lines (prices captured now) and its first timeline event.

    The order comes back with those lines and that event prefetched, as the selectors return an
    order: serialising the new order reads nothing back from the database.
    """
    order = Order.objects.create(
        user=user,
        batch=batch,
        payment_token=payment_token,
        currency=products[lines[0]["sku"]].currency,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key or None,
        request_fingerprint=_fingerprint(lines=lines, payment_token=payment_token),
        total=sum(
            (products[line["sku"]].price * line["quantity"] for line in lines), Decimal("0.00")
        ),
    )
    order_lines = OrderLine.objects.bulk_create(
        [
            OrderLine(
                order=order,
                product=products[line["sku"]],
                sku=line["sku"],
                quantity=line["quantity"],
                unit_price=products[line["sku"]].price,
            )
            for line in lines
        ]
    )
    # Nobody can be listening on a brand-new order's channel yet: no live announcement.
    accepted = event_record(
        order=order, name="accepted", detail={"lines": len(lines)}, announce=False
    )
    return _prefetched(order, lines=order_lines, events=[accepted])


def _prefetched(order: Order, **related: list) -> Order:
    """Fill the order's related managers with objects just written, as prefetch_related would
    after reading them (Django's prefetch cache: a queryset whose results are already known)."""
    cache = {}
    for name, objects in related.items():
        queryset = getattr(order, name).all()
        queryset._result_cache = list(objects)
        queryset._prefetch_done = True
        cache[name] = queryset
    order._prefetched_objects_cache = cache
    return order


def order_create(
    *,
    user: AbstractBaseUser,
    lines: list[dict],
    payment_token: str,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
) -> tuple[Order, bool]:
    """Accept an order: the order, its lines and the outbox message commit together.

    Returns (order, created). With an Idempotency-Key already used by this user for the same
    body, returns the first order and creates nothing; with a different body, raises
    IdempotencyConflict.
    """
    # No look-up of the key before the insert: a repeated key is rare, and the unique
    # constraint on (user, idempotency_key) finds it at no cost for the common first request.
    fingerprint = _fingerprint(lines=lines, payment_token=payment_token)
    products = Product.objects.in_bulk([line["sku"] for line in lines], field_name="sku")
    errors = _validate_lines(lines, products)
    if errors:
        if idempotency_key:
            # A key already used answers as before (its order, or 409), whatever the catalog
            # says about the body now.
            with contextlib.suppress(Order.DoesNotExist):
                existing = _existing_for_key(
                    user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
                )
                return existing, False
        raise InvalidOrder(errors)
    try:
        # A savepoint when the caller holds a transaction: the key's look-up below still runs.
        with transaction.atomic():
            order = _order_insert(
                user=user,
                lines=lines,
                payment_token=payment_token,
                products=products,
                correlation_id=correlation_id or uuid.uuid4().hex,
                idempotency_key=idempotency_key,
            )
            outbox_enqueue(
                task_name=START_PIPELINE_TASK,
                kwargs={"order_id": str(order.pk)},
                correlation_id=order.correlation_id,
            )
    except IntegrityError as exc:
        # The key was used before, or by a request racing this one: the unique constraint let
        # one order in; answer with it (or 409 for another body).
        if not idempotency_key:
            raise
        try:
            existing = _existing_for_key(
                user=user, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
        except Order.DoesNotExist:
            raise exc from None  # another constraint failed: not ours to explain
        return existing, False
    return order, True


def order_pipeline_start(*, order_id: str, from_step: str | None = None) -> bool:
    """Send the order's canvas. The first start happens once; a replay names its step.

    Returns whether a canvas was sent.
    """
    from orders import pipeline

    if from_step is None:
        claimed = Order.objects.filter(
            pk=order_id, status=OrderStatus.ACCEPTED, pipeline_started_at__isnull=True
        ).update(pipeline_started_at=timezone.now())
        if not claimed:
            return False
    order = Order.objects.get(pk=order_id)
    pipeline.build(order=order, from_step=from_step or pipeline.FIRST_STEP).apply_async()
    return True


def batch_create(
    *, user: AbstractBaseUser, orders: list[dict], correlation_id: str | None = None
) -> Batch:
    """Accept many orders at once, all or nothing; one outbox message starts them all."""
    products = Product.objects.in_bulk(
        {line["sku"] for body in orders for line in body["lines"]}, field_name="sku"
    )
    errors = {
        index: order_errors
        for index, body in enumerate(orders)
        if (order_errors := _validate_lines(body["lines"], products))
    }
    if errors:
        raise InvalidOrder({"orders": errors})
    correlation_id = correlation_id or uuid.uuid4().hex
    with transaction.atomic():
        batch = Batch.objects.create(user=user, size=len(orders), correlation_id=correlation_id)
        for index, body in enumerate(orders):
            _order_insert(
                user=user,
                lines=body["lines"],
                payment_token=body["payment_token"],
                products=products,
                correlation_id=f"{correlation_id[:55]}-{index}",
                batch=batch,
            )
        outbox_enqueue(
            task_name=START_BATCH_TASK,
            kwargs={"batch_id": str(batch.pk)},
            correlation_id=correlation_id,
        )
    return batch


def batch_pipeline_start(*, batch_id: str) -> bool:
    """Send one chord: every order's pipeline in the header, the batch summary as callback."""
    from orders import pipeline

    claimed = Order.objects.filter(
        batch_id=batch_id, status=OrderStatus.ACCEPTED, pipeline_started_at__isnull=True
    ).update(pipeline_started_at=timezone.now())
    if not claimed:
        return False
    batch = Batch.objects.get(pk=batch_id)
    orders = list(batch.orders.prefetch_related("lines"))
    pipeline.build_batch(batch=batch, orders=orders).apply_async()
    return True


def batch_finish_if_done(*, batch_id: str) -> bool:
    """Write the summary and notify once, when every order of the batch is terminal.

    Called by the chord's callback and by the failure path (a failed step breaks the chord, so
    the callback alone would never run for a batch with a failed order).
    """
    from .failures import NOTIFY_TASK

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
            task_name=NOTIFY_TASK,
            kwargs={
                "kind": "batch.finished",
                "user_id": batch.user_id,
                "context": {"batch_id": str(batch.pk)},
            },
            correlation_id=batch.correlation_id,
        )
    return True


def batch_finish_all_done(*, limit: int = 100) -> int:
    """Safety net for batches whose chord broke (a failed order) and whose last order finished
    after the failure's own check: finish every unfinished batch that is all terminal."""
    unfinished = Batch.objects.filter(finished_at__isnull=True).exclude(
        orders__status__in=set(OrderStatus) - TERMINAL_STATUSES
    )
    return sum(
        batch_finish_if_done(batch_id=batch_id)
        for batch_id in unfinished.values_list("pk", flat=True)[:limit]
    )
