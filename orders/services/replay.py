from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from orders import workflow
from orders.errors import OrderflowError
from orders.models import Order, OrderStatus, Payment, PaymentStatus

from .events import event_record
from .leases import lease_handoff
from .outbox import outbox_enqueue


class ReplayNotAllowed(OrderflowError):
    """Only a failed order can be replayed."""


def _first_step_not_in_place(order: Order) -> OrderStatus:
    """The status to resume from: what a settled failure left in place decides."""
    payment = Payment.objects.filter(order=order).first()
    if payment is not None and payment.status == PaymentStatus.AUTHORIZED and not order.stock_held:
        return OrderStatus.PAYMENT_AUTHORIZED  # a hold from before settlement existed: keep it
    return OrderStatus.ACCEPTED


def replay_order(order_id, *, actor: AbstractBaseUser | None = None) -> Order:
    """Re-run a failed order from the first step whose effect is not in place.

    A settled failure holds nothing, so that is the first step, with fresh provider keys (the
    replay round is part of each key). `order_id` may be given positionally.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != OrderStatus.FAILED:
            raise ReplayNotAllowed(
                f"Order {order.pk} is {order.status}; only failed orders replay."
            )
        resume = _first_step_not_in_place(order)
        previous = {}
        if resume == OrderStatus.ACCEPTED:
            payment = Payment.objects.filter(order=order).first()
            if payment is not None:  # settled (refunded or never taken): keep it on the timeline
                previous = {"payment": payment.provider_payment_id, "was": payment.status}
                payment.delete()
        order.lines.update(check_ok=None, check_reason="")
        from_step = workflow.STEP_FOR_STATUS[resume]
        order.status = resume
        order.failure_reason = ""
        order.failed_step = ""
        order.failed_from_status = ""
        order.replays += 1
        order.save(
            update_fields=[
                "status",
                "failure_reason",
                "failed_step",
                "failed_from_status",
                "replays",
                "updated_at",
                *lease_handoff(order),
            ]
        )
        order.dead_letters.filter(replayed_at__isnull=True).update(replayed_at=timezone.now())
        event_record(
            order=order,
            name="replayed",
            detail={
                "from_step": from_step,
                "by": getattr(actor, "username", None) or "system",
                **previous,
            },
        )
        outbox_enqueue(
            task_name=workflow.START_PIPELINE,
            kwargs={"order_id": str(order.pk), "run": order.run, "from_step": from_step},
            correlation_id=order.correlation_id,
        )
    return order
