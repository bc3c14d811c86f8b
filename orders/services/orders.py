import contextlib
import hashlib
import json
import uuid
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import workflow
from orders.errors import IdempotencyConflict, InvalidOrder
from orders.models import Batch, Order, OrderLine, Product
from project.prefetch import prefetched

from .events import event_record
from .leases import lease_duration
from .outbox import outbox_enqueue


def _canonical_body(*, lines: list[dict], payment_token: str) -> dict:
    return {
        "lines": [{"sku": line["sku"], "quantity": int(line["quantity"])} for line in lines],
        "payment_token": payment_token,
    }


def request_fingerprint(body) -> str:
    """What an Idempotency-Key is bound to: the request body, canonically."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _fingerprint(*, lines: list[dict], payment_token: str) -> str:
    return request_fingerprint(_canonical_body(lines=lines, payment_token=payment_token))


def _existing_for_key(*, user: AbstractBaseUser, idempotency_key: str, fingerprint: str) -> Order:
    """The order this user first placed with this key; raises Order.DoesNotExist if none."""
    order = Order.objects.get(user=user, idempotency_key=idempotency_key)
    if order.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request body."
        )
    return order


def validate_lines(lines: list[dict], products: dict[str, Product]) -> dict:
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


def order_insert(
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
    order.
    """
    order = Order.objects.create(
        lease_until=timezone.now() + lease_duration(),  # its start message is on its way
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
    # Serialising the new order then reads nothing back (bench/README.md, API figures).
    return prefetched(order, lines=order_lines, events=[accepted])


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
    errors = validate_lines(lines, products)
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
            order = order_insert(
                user=user,
                lines=lines,
                payment_token=payment_token,
                products=products,
                correlation_id=correlation_id or uuid.uuid4().hex,
                idempotency_key=idempotency_key,
            )
            outbox_enqueue(
                task_name=workflow.START_PIPELINE,
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
