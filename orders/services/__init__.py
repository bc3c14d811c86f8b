"""Every write the product makes. Views and tasks call these; nothing else changes state."""

from .cart import cart_line_check, cart_verify
from .confirmation import order_confirm
from .events import event_record
from .failures import (
    ReplayNotAllowed,
    order_fail,
    order_outcome_notification_kwargs,
    order_step_interrupt_record,
    order_step_retry_record,
    replay_order,
)
from .orders import (
    batch_create,
    batch_finish_all_done,
    batch_finish_if_done,
    batch_pipeline_start,
    order_create,
    order_pipeline_start,
)
from .outbox import outbox_enqueue, outbox_mark_delivered, outbox_publish, outbox_relay
from .payments import payment_authorize
from .recovery import order_outcome_notification_sweep, order_stuck_sweep

__all__ = [
    "ReplayNotAllowed",
    "batch_create",
    "batch_finish_all_done",
    "batch_finish_if_done",
    "batch_pipeline_start",
    "cart_line_check",
    "cart_verify",
    "event_record",
    "order_confirm",
    "order_create",
    "order_fail",
    "order_outcome_notification_kwargs",
    "order_outcome_notification_sweep",
    "order_pipeline_start",
    "order_step_interrupt_record",
    "order_step_retry_record",
    "order_stuck_sweep",
    "outbox_enqueue",
    "outbox_mark_delivered",
    "outbox_publish",
    "outbox_relay",
    "payment_authorize",
    "replay_order",
]
