"""The order's canvas, built in one place (no business logic here).

    authorize_payment -> chord(check_cart_line x lines -> verify_cart) -> confirm_order -> notify

Every link is an immutable `.si(order_id)` signature: each step re-reads the truth from the
database and skips itself when the order is not in the status it acts on, so a declined order
flows through the remaining links as no-ops down to the notification, and a replay can start
the same canvas at any step.
"""

from celery import chain, chord
from celery.canvas import Signature

from notifications.tasks import notify
from orders.models import Batch, Order
from orders.services import order_outcome_notification_kwargs

from .tasks import authorize_payment, check_cart_line, confirm_order, finish_batch, verify_cart

STEPS = ("authorize_payment", "check_cart", "confirm_order", "notify")
FIRST_STEP = STEPS[0]

# What a customer sees on the tracking page: (label, statuses at which that step is done).
PROGRESS_STEPS = [
    ("Accepted", ["accepted"]),
    ("Payment authorized", ["payment_authorized"]),
    ("Cart verified", ["cart_verified"]),
    ("Stock reserved", ["stock_reserved"]),
    ("Confirmed", ["confirmed"]),
]


def build(*, order: Order, from_step: str = FIRST_STEP) -> Signature:
    if from_step not in STEPS:
        raise ValueError(f"unknown step {from_step!r}; steps are {', '.join(STEPS)}")
    order_id = str(order.pk)
    links = {
        "authorize_payment": lambda: authorize_payment.si(order_id),
        "check_cart": lambda: chord(
            [
                check_cart_line.si(order_id, line_id)
                for line_id in order.lines.values_list("pk", flat=True)
            ],
            verify_cart.si(order_id),
        ),
        "confirm_order": lambda: confirm_order.si(order_id),
        "notify": lambda: notify.si(**order_outcome_notification_kwargs(order=order)),
    }
    return chain(*(links[step]() for step in STEPS[STEPS.index(from_step) :]))


def build_batch(*, batch: Batch, orders: list[Order]) -> Signature:
    """A chord of the orders' pipelines whose callback writes the batch summary."""
    return chord([build(order=order) for order in orders], finish_batch.si(str(batch.pk)))
