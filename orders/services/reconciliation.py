"""Compare our payments with the provider's and settle the drift (SPEC §6 reconcile_payments).

Looked at: every payment that is not final (pending, authorized) whose order is not in flight,
and every failed or rejected order's payment. For each the provider is asked; a difference is
fixed (a hold or a capture left on an order that did not go through is refunded; a capture we
did not record on a confirmed order is recorded) and written on the order's timeline.
"""

import logging
from dataclasses import asdict, dataclass, field

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orders import workflow
from orders.models import OrderStatus, Payment, PaymentStatus
from orders.provider.errors import OrderflowError

from .events import event_record
from .payments import idempotency_key_for, payment_provider_status, provider_for

logger = logging.getLogger(__name__)

REPORT_CACHE_KEY = "orderflow:reconciliation:last"
SETTLED_ORDER_STATUSES = (OrderStatus.FAILED, OrderStatus.CART_REJECTED)


@dataclass
class ReconciliationReport:
    checked: int = 0
    in_sync: int = 0
    fixed: int = 0
    errors: int = 0
    fixes: list[dict] = field(default_factory=list)
    dry_run: bool = False
    finished_at: str = ""


def _payments_to_check():
    not_final = Q(status__in=[PaymentStatus.PENDING, PaymentStatus.AUTHORIZED]) & ~Q(
        order__status__in=workflow.ACTIVE_STATUSES
    )
    # Each settled order's payment is looked at once after it ended (reconciled_at says when).
    settled_orders = (
        Q(order__status__in=SETTLED_ORDER_STATUSES)
        & ~Q(status=PaymentStatus.DECLINED)
        & Q(reconciled_at__isnull=True)
    )
    return Payment.objects.filter(not_final | settled_orders).select_related("order")


def _fix(payment: Payment, provider_status: str, payment_id: str | None, dry_run: bool) -> dict:
    """What to change so that the payment and the provider agree with the order's status."""
    order = payment.order
    keep_captured = order.status == OrderStatus.CONFIRMED
    fix = {"order": str(order.pk), "ours": payment.status, "provider": provider_status}
    if provider_status in ("authorized", "captured") and not keep_captured:
        fix["action"] = "refund"
        if not dry_run:
            provider_for(order).refund(
                payment_id=payment_id, idempotency_key=idempotency_key_for(order, "refund")
            )
        provider_status = "refunded"
    else:
        fix["action"] = "record"
    if not dry_run:
        with transaction.atomic():
            Payment.objects.filter(pk=payment.pk).update(
                provider_payment_id=payment_id,
                status=provider_status if provider_status != "none" else PaymentStatus.DECLINED,
                reconciled_at=timezone.now(),
            )
            event_record(order=order, name="payment_reconciled", detail=fix)
    return fix


def payments_reconcile(*, dry_run: bool = False, limit: int = 500) -> ReconciliationReport:
    report = ReconciliationReport(dry_run=dry_run)
    for payment in _payments_to_check().order_by("updated_at")[:limit]:
        report.checked += 1
        try:
            provider_status, payment_id = payment_provider_status(
                order=payment.order, payment=payment
            )
        except OrderflowError as exc:
            report.errors += 1
            logger.warning(
                "reconciliation could not ask the provider",
                extra={"order_id": str(payment.order_id), "error": str(exc)},
            )
            continue
        expected = payment.status
        if payment.order.status in SETTLED_ORDER_STATUSES:
            expected = PaymentStatus.REFUNDED
        in_sync = provider_status == payment.status == expected or (
            provider_status == "declined" and payment.status == PaymentStatus.DECLINED
        )
        if in_sync:
            report.in_sync += 1
            if not dry_run:
                Payment.objects.filter(pk=payment.pk).update(reconciled_at=timezone.now())
            continue
        try:
            report.fixes.append(_fix(payment, provider_status, payment_id, dry_run))
            report.fixed += 1
        except OrderflowError as exc:
            report.errors += 1
            logger.warning(
                "reconciliation could not fix a payment",
                extra={"order_id": str(payment.order_id), "error": str(exc)},
            )
    report.finished_at = timezone.now().isoformat()
    if not dry_run:
        try:
            cache.set(REPORT_CACHE_KEY, asdict(report), timeout=None)
        except Exception:  # the report is for operators; the fixes are done
            logger.warning("reconciliation report not cached", exc_info=True)
    if report.fixed or report.errors:
        logger.warning("payments reconciled", extra={k: v for k, v in asdict(report).items()})
    return report


def reconciliation_last_report() -> dict | None:
    try:
        return cache.get(REPORT_CACHE_KEY)
    except Exception:
        return None
