"""The order's vocabulary, in one place: statuses and what each owes, steps, the step that moves
each status on, progress labels, and every task name.

    accepted --authorize_payment--> payment_authorized --check_cart--> cart_verified
        --confirm_order--> stock_reserved --(capture)--> confirmed
    check_cart or a sold-out reservation --> compensating --confirm_order (refund)--> cart_rejected
    authorize_payment declined --> payment_declined
    any step that cannot finish --> settling --settle_order--> failed (or confirmed, if the
        provider shows the capture went through)

Imports only the models: the pipeline, the services, the tasks and the admin read from here.
"""

from dataclasses import dataclass

from django.conf import settings

from orders.models import TERMINAL_STATUSES, OrderStatus

# --- task names: decorators, canvases, the outbox, beat and logs all say these -------------------
START_PIPELINE = "orders.start_pipeline"
AUTHORIZE_PAYMENT = "orders.authorize_payment"
CHECK_CART_LINE = "orders.check_cart_line"
VERIFY_CART = "orders.verify_cart"
CONFIRM_ORDER = "orders.confirm_order"
SETTLE_ORDER = "orders.settle_order"
START_BATCH = "orders.start_batch"
FINISH_BATCH = "orders.finish_batch"
RELAY_OUTBOX = "orders.relay_outbox"
RECOVER_ORDERS = "orders.recover_orders"
RECONCILE_PAYMENTS = "orders.reconcile_payments"
PRUNE_TABLES = "orders.prune_tables"
NOTIFY = "notifications.notify"  # the notifications app's one task, addressed by name

# Beat runs these every few seconds; their routine log lines are DEBUG.
HOUSEKEEPING_TASKS = frozenset({RELAY_OUTBOX, RECOVER_ORDERS, RECONCILE_PAYMENTS, PRUNE_TABLES})

# --- queues -------------------------------------------------------------------------------------
ORDERS_QUEUE = "orders"
PROVIDER_QUEUE = "provider"  # every task that calls the payment provider, paced cluster-wide
TASK_QUEUES = {
    AUTHORIZE_PAYMENT: PROVIDER_QUEUE,
    CONFIRM_ORDER: PROVIDER_QUEUE,
    SETTLE_ORDER: PROVIDER_QUEUE,
}


# A customer's single orders go ahead of its batch orders, at the limiter and in the queue.
SINGLE_LANE = "single"
BATCH_LANE = "batch"


def lane_of(order) -> str:
    return BATCH_LANE if order.batch_id else SINGLE_LANE


# --- steps ----------------------------------------------------------------------------------------
AUTHORIZE = "authorize_payment"
CHECK_CART = "check_cart"
CONFIRM = "confirm_order"
SETTLE = "settle_order"
STEPS = (AUTHORIZE, CHECK_CART, CONFIRM)  # the forward path; settlement is off it
FIRST_STEP = STEPS[0]

# The step that moves an unfinished order on from each status (recovery and replay start there).
STEP_FOR_STATUS = {
    OrderStatus.ACCEPTED: AUTHORIZE,
    OrderStatus.PAYMENT_AUTHORIZED: CHECK_CART,
    OrderStatus.CART_VERIFIED: CONFIRM,
    OrderStatus.STOCK_RESERVED: CONFIRM,
    OrderStatus.COMPENSATING: CONFIRM,
    OrderStatus.SETTLING: SETTLE,
}
ACTIVE_STATUSES = frozenset(STEP_FOR_STATUS)
assert set(OrderStatus) == ACTIVE_STATUSES | TERMINAL_STATUSES

# The queue each step's first task waits in (recovery asks the broker whether it is waiting).
STEP_QUEUES = {
    AUTHORIZE: PROVIDER_QUEUE,
    CHECK_CART: ORDERS_QUEUE,
    CONFIRM: PROVIDER_QUEUE,
    SETTLE: PROVIDER_QUEUE,
}


# --- what each status owes ------------------------------------------------------------------------
@dataclass(frozen=True)
class Holdings:
    """What is in place for an order in a status: money held or taken, stock off the shelf."""

    authorized: bool = False  # an authorization hold at the provider
    captured: bool = False  # the money is taken
    stock: bool = False  # the quantities are reserved

    @property
    def anything(self) -> bool:
        return self.authorized or self.captured or self.stock


NOTHING = Holdings()
OWES = {
    OrderStatus.ACCEPTED: NOTHING,  # unless an authorization was asked for: settlement asks
    OrderStatus.PAYMENT_AUTHORIZED: Holdings(authorized=True),
    OrderStatus.CART_VERIFIED: Holdings(authorized=True),
    OrderStatus.STOCK_RESERVED: Holdings(authorized=True, stock=True),
    OrderStatus.COMPENSATING: Holdings(authorized=True),
    OrderStatus.CONFIRMED: Holdings(captured=True, stock=True),
    OrderStatus.PAYMENT_DECLINED: NOTHING,
    OrderStatus.CART_REJECTED: NOTHING,  # the authorization was voided
    OrderStatus.FAILED: NOTHING,  # settled: nothing captured, no hold left, no stock held
}
# `settling` owes what its `failed_from_status` owed until settlement has undone it.
assert set(OWES) | {OrderStatus.SETTLING} == set(OrderStatus)


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router (CELERY_TASK_ROUTES names it): the provider's calls on their own queue, a
    batch order's behind single orders (a message priority within the queue, so that a single
    order is not stuck behind hundreds of batch messages waiting for the provider's pace)."""
    if name not in TASK_QUEUES:
        return None
    batch = (kwargs or {}).get("lane") == BATCH_LANE
    return {"queue": TASK_QUEUES[name], "priority": message_priority(batch=batch)}


def message_priority(*, batch: bool) -> int:
    """Redis serves priority 0 first; RabbitMQ serves the highest number first."""
    first_is_zero = settings.CELERY_BROKER_URL.startswith(("redis", "rediss"))
    if first_is_zero:
        return 6 if batch else 0
    return 0 if batch else 6
