"""Every write the orders app makes, one entity or concern a file. Views and tasks call these;
nothing else changes state."""

from .batches import batch_create, batch_dispatch_claim, batch_finish_all_done, batch_finish_if_done
from .cart import cart_line_check, cart_verify
from .confirmation import order_confirm
from .dispatch import Dispatch, order_dispatch_claim, order_message_is_current
from .events import event_record
from .failures import order_fail, order_step_interrupt_record, order_step_retry_record
from .leases import order_leases_renew
from .orders import order_create
from .outbox import outbox_enqueue, outbox_mark_delivered, outbox_publish, outbox_relay
from .outcomes import order_outcome_notification_kwargs
from .payments import payment_authorize
from .pruning import outbox_prune
from .reconciliation import ReconciliationReport, payments_reconcile, reconciliation_last_report
from .recovery import order_recovery_claim
from .replay import ReplayNotAllowed, replay_order
from .settlement import order_settle
from .stock import product_stock_adjust

__all__ = [
    "Dispatch",
    "ReconciliationReport",
    "ReplayNotAllowed",
    "batch_create",
    "batch_dispatch_claim",
    "batch_finish_all_done",
    "batch_finish_if_done",
    "cart_line_check",
    "cart_verify",
    "event_record",
    "order_confirm",
    "order_create",
    "order_dispatch_claim",
    "order_fail",
    "order_leases_renew",
    "order_message_is_current",
    "order_outcome_notification_kwargs",
    "order_recovery_claim",
    "order_settle",
    "order_step_interrupt_record",
    "order_step_retry_record",
    "outbox_enqueue",
    "outbox_mark_delivered",
    "outbox_prune",
    "outbox_publish",
    "outbox_relay",
    "payment_authorize",
    "payments_reconcile",
    "product_stock_adjust",
    "reconciliation_last_report",
    "replay_order",
]
