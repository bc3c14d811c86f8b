"""What a customer is told about an order, in their language: the tracking page's progress tiles,
its timeline and outcome, and the outcome message's text.

Read only and pure: everything is derived from the order and its timeline (the events the caller
already loaded), so the page, the JSON API and the outcome notification say the same thing. The
timeline is folded in order, which makes "what was done, then undone" exact: a payment authorized
and later released shows as released, not as authorized and not as never reached. Internal text
(exception messages, task and step names, provider codes) never leaves this module; the order's
`failure_reason` is for operators and is not read here.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils.encoding import force_str
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import TERMINAL_STATUSES, Order, OrderEvent, OrderStatus

# The progress tiles, in order.
ACCEPTED, PAYMENT, CART, STOCK, CONFIRMATION = (
    "accepted",
    "payment",
    "cart",
    "stock",
    "confirmation",
)
STEPS = (ACCEPTED, PAYMENT, CART, STOCK, CONFIRMATION)

# A tile's state: reached and still in place, being worked on now, where the order stopped,
# reached and then reversed (the money or the items were given back), or not reached.
DONE, CURRENT, FAILED, UNDONE, PENDING = "done", "current", "failed", "undone", "pending"

LABELS = {
    ACCEPTED: {PENDING: _("Order received")},  # always done: the order exists
    PAYMENT: {
        PENDING: _("Payment"),
        CURRENT: _("Authorizing payment…"),
        DONE: _("Payment authorized"),
        FAILED: _("Payment not completed"),
        UNDONE: _("Authorization released"),
    },
    CART: {
        PENDING: _("Items check"),
        CURRENT: _("Checking your items…"),
        DONE: _("Items available"),
        FAILED: _("Items check not completed"),
    },
    STOCK: {
        PENDING: _("Reservation"),
        CURRENT: _("Reserving your items…"),
        DONE: _("Items reserved"),
        FAILED: _("Reservation not completed"),
        UNDONE: _("Items released"),
    },
    CONFIRMATION: {
        PENDING: _("Confirmation"),
        CURRENT: _("Taking payment…"),
        DONE: _("Confirmed"),
        FAILED: _("Not confirmed"),
    },
}
# Labels when the step's own check said no (rather than the step not finishing).
REFUSED_LABELS = {
    PAYMENT: _("Payment declined"),
    CART: _("Items unavailable"),
    STOCK: _("Sold out"),
}
REFUNDED_LABEL = _("Payment refunded")
RELEASING_LABEL = _("Releasing authorization…")

# The tile an unfinished order is working on, per status. An order that stopped (its cart was
# refused, or a step could not finish) is giving back what it holds, shown on the payment tile.
CURRENT_STEP = {
    OrderStatus.ACCEPTED: PAYMENT,
    OrderStatus.PAYMENT_AUTHORIZED: CART,
    OrderStatus.CART_VERIFIED: STOCK,
    OrderStatus.STOCK_RESERVED: CONFIRMATION,
    OrderStatus.COMPENSATING: PAYMENT,
    OrderStatus.SETTLING: PAYMENT,
}
STOPPING_STATUSES = frozenset({OrderStatus.COMPENSATING, OrderStatus.SETTLING})

STATUS_LABELS = {
    OrderStatus.ACCEPTED: _("Processing"),
    OrderStatus.PAYMENT_AUTHORIZED: _("Processing"),
    OrderStatus.CART_VERIFIED: _("Processing"),
    OrderStatus.STOCK_RESERVED: _("Processing"),
    OrderStatus.COMPENSATING: _("Cancelling"),
    OrderStatus.SETTLING: _("Cancelling"),
    OrderStatus.CONFIRMED: _("Confirmed"),
    OrderStatus.PAYMENT_DECLINED: _("Payment declined"),
    OrderStatus.CART_REJECTED: _("Not fulfilled"),
    OrderStatus.FAILED: _("Not completed"),
}

# The outcome, per terminal status: the headline (also the notification's title) and what it
# means for the customer. No promise the system does not keep: nothing here says someone will
# act, only what happened and what the customer can do.
HEADLINES = {
    OrderStatus.CONFIRMED: _("Order confirmed"),
    OrderStatus.PAYMENT_DECLINED: _("Payment declined"),
    OrderStatus.CART_REJECTED: _("We could not fulfil your order"),
    OrderStatus.FAILED: _("We could not complete your order"),
}
MESSAGES = {
    OrderStatus.CONFIRMED: _("Your payment was taken and your items are reserved for you."),
    OrderStatus.PAYMENT_DECLINED: _(
        "Nothing was charged and the order was not placed. You can place the order again "
        "with another payment method."
    ),
    OrderStatus.CART_REJECTED: _(
        "An item was out of stock or its price had changed. Please check the current stock "
        "and prices and place the order again."
    ),
    OrderStatus.FAILED: _(
        "A problem on our side stopped your order before it was confirmed. You can place "
        "the order again."
    ),
}

NOTHING_CHARGED = _("Nothing was charged.")
AUTHORIZATION_RELEASED = _("Your payment authorization was released: you have not been charged.")
PAYMENT_REFUNDED = _("Your payment was refunded.")
STOCK_RELEASED = _("The items reserved for you were put back in stock.")
# Only for an order that ended without being settled (SPEC §2 says it must not): the truth.
STILL_AUTHORIZED = _("Your payment is authorized but has not been taken.")
STILL_CAPTURED = _("Your payment was taken and has not been refunded.")
STILL_RESERVED = _("The items are still reserved for you.")

# The timeline in customer words; events not listed here are internal and not shown.
EVENT_TEXTS = {
    "accepted": (_("Order received"), "info"),
    "payment_authorized": (_("Payment authorized"), "ok"),
    "payment_declined": (_("Payment declined"), "bad"),
    "cart_verified": (_("Items checked: in stock and at the listed price"), "ok"),
    "cart_check_failed": (_("An item was out of stock or its price had changed"), "bad"),
    "stock_reserved": (_("Items reserved for you"), "ok"),
    "stock_reservation_failed": (_("An item sold out before it could be reserved"), "bad"),
    "stock_released": (_("Reserved items put back in stock"), "info"),
    "payment_captured": (_("Payment taken"), "ok"),
    "payment_voided": (_("Payment authorization released"), "info"),
    "confirmed": (_("Order confirmed"), "ok"),
    "cart_rejected": (_("Order not fulfilled"), "bad"),
    "step_failed": (_("Stopped by a problem on our side"), "bad"),
    "settling": (_("Giving back what your order held…"), "info"),
    "failed": (_("Order not completed"), "bad"),
    "step_interrupted": (_("Delayed on our side; it continues automatically"), "retry"),
    "redispatched": (_("Continuing your order"), "info"),
    "replayed": (_("Your order was restarted"), "info"),
}
PROVIDER_BUSY = _("Payment provider busy, retrying…")
RETRY_TEXTS = {
    "authorize_payment": PROVIDER_BUSY,
    "confirm_order": PROVIDER_BUSY,
    "check_cart": _("Checking your items took longer than usual, retrying…"),
}
SLOW_RETRY = _("Taking longer than usual, retrying…")
RETRY_EVENTS = {"step_retry", "provider_throttled"}
REFUND_EVENTS = {"payment_refunded", "payment_voided"}


@dataclass
class _Fold:
    """What the timeline says happened, event by event."""

    reached: set[str] = field(default_factory=set)
    undone: set[str] = field(default_factory=set)
    failed: str | None = None
    refused: bool = False  # the failed step's own check said no (decline, stock, price)
    captured: bool = False
    refunded_after_capture: bool = False
    problems: list[str] = field(default_factory=list)

    def apply(self, event: OrderEvent) -> None:
        name, detail = event.name, event.detail or {}
        reaches = {
            "accepted": ACCEPTED,
            "payment_authorized": PAYMENT,
            "cart_verified": CART,
            "stock_reserved": STOCK,
            "confirmed": CONFIRMATION,
        }
        refusals = {
            "payment_declined": PAYMENT,
            "cart_check_failed": CART,
            "stock_reservation_failed": STOCK,
        }
        if name in reaches:
            self.reached.add(reaches[name])
            self.undone.discard(reaches[name])
        elif name in refusals:
            self.failed, self.refused = refusals[name], True
            self.problems.extend(_problems(name, detail))
        elif name == "payment_captured":
            self.captured = True
        elif name in REFUND_EVENTS:
            self._payment_released()
        elif name == "stock_released":
            self.undone.add(STOCK)
        elif name in ("settled", "failed"):  # settlement says what it undid
            if detail.get("refunded"):
                self._payment_released()
            if detail.get("stock_released"):
                self.undone.add(STOCK)
        elif name == "payment_reconciled" and detail.get("action") == "refund":
            self._payment_released()
        elif name == "replayed":  # a replay resumes: the earlier stop no longer holds
            self.failed, self.refused, self.problems = None, False, []

    def _payment_released(self) -> None:
        # Also when the authorization's answer was lost (never reached here) and settlement found
        # and voided it at the provider: it was held, and is no longer.
        self.undone.add(PAYMENT)
        self.refunded_after_capture = self.captured


def _problems(name: str, detail: dict) -> list[str]:
    if name == "cart_check_failed":
        # One line each, written by the cart check for the customer ("PEN-1: only 3 in stock,
        # 5 ordered."), never an exception.
        return [str(problem) for problem in detail.get("problems", [])]
    if name == "stock_reservation_failed" and detail.get("sku"):
        return [_("%(sku)s sold out before it could be reserved.") % {"sku": detail["sku"]}]
    return []


def _steps(order: Order, fold: _Fold) -> list[dict]:
    status = order.status
    stopped = status in TERMINAL_STATUSES or status in STOPPING_STATUSES
    failed = fold.failed
    if status == OrderStatus.PAYMENT_DECLINED:
        failed = PAYMENT
    elif stopped and status != OrderStatus.CONFIRMED and failed is None:
        # The first step whose effect never took place is where the order stopped.
        failed = next((step for step in STEPS if step not in fold.reached), CONFIRMATION)
    current = None if status in TERMINAL_STATUSES else CURRENT_STEP.get(status)
    steps = []
    for step in STEPS:
        if status == OrderStatus.CONFIRMED or step == ACCEPTED:
            state = DONE
        elif step == failed and stopped:
            state = FAILED
        elif step in fold.undone:
            state = UNDONE
        elif step == current:
            state = CURRENT
        elif step in fold.reached:
            state = DONE
        else:
            state = PENDING
        label = LABELS[step].get(state, LABELS[step][PENDING])
        if state == FAILED and fold.refused and step in REFUSED_LABELS:
            label = REFUSED_LABELS[step]
        elif state == UNDONE and step == PAYMENT and fold.refunded_after_capture:
            label = REFUNDED_LABEL
        elif state == CURRENT and status in STOPPING_STATUSES:
            label = RELEASING_LABEL
        steps.append({"key": step, "state": state, "label": label})
    return steps


def _money(order: Order, fold: _Fold) -> tuple[list, list]:
    """What was given back, and what is still held, for an order that did not complete."""
    if order.status not in (
        OrderStatus.PAYMENT_DECLINED,
        OrderStatus.CART_REJECTED,
        OrderStatus.FAILED,
    ):
        return [], []
    undone, held = [], []
    if PAYMENT in fold.undone:
        undone.append(PAYMENT_REFUNDED if fold.refunded_after_capture else AUTHORIZATION_RELEASED)
    elif PAYMENT in fold.reached:
        held.append(STILL_CAPTURED if fold.captured else STILL_AUTHORIZED)
    elif order.status == OrderStatus.FAILED:
        undone.append(NOTHING_CHARGED)  # a decline already says so in its message
    if STOCK in fold.undone:
        undone.append(STOCK_RELEASED)
    elif STOCK in fold.reached:
        held.append(STILL_RESERVED)
    return undone, held


def _released_text(captured: bool):
    return _("Payment refunded") if captured else _("Payment authorization released")


def _event_rows(event: OrderEvent, captured: bool) -> list[tuple]:
    """What one event says to the customer: (text, tone) rows, none for internal events."""
    name, detail = event.name, event.detail or {}
    if name in RETRY_EVENTS:
        return [(RETRY_TEXTS.get(detail.get("step"), SLOW_RETRY), "retry")]
    if name in REFUND_EVENTS:
        return [(_released_text(captured), "info")]
    if name == "settled":
        if detail.get("outcome") == "confirmed":
            return [(_("The payment provider confirmed your payment"), "ok")]
        rows = [(_released_text(captured), "info")] if detail.get("refunded") else []
        if detail.get("stock_released"):
            rows.append((EVENT_TEXTS["stock_released"][0], "info"))
        return rows
    if name == "payment_reconciled":
        return [(_released_text(captured), "info")] if detail.get("action") == "refund" else []
    if name in EVENT_TEXTS:
        return [EVENT_TEXTS[name]]
    return []


def _timeline(events: Iterable[OrderEvent]) -> list[dict]:
    rows: list[dict] = []
    captured = False
    for event in events:
        captured = captured or event.name == "payment_captured"
        for text, tone in _event_rows(event, captured):
            last = rows[-1] if rows else None
            if tone == "retry" and last and last["text"] == text:  # a run of retries: one row
                last["count"] += 1
                last["at"] = event.created_at
                continue
            rows.append({"at": event.created_at, "text": text, "tone": tone, "count": 1})
    for row in rows:
        if row["count"] > 1:
            tries = ngettext("%(count)d try", "%(count)d tries", row["count"])
            row["text"] = f"{row['text']} ({tries % {'count': row['count']}})"
    return rows


def order_progress(order: Order, *, events: Iterable[OrderEvent] | None = None) -> dict:
    """The customer's view of `order`: status label, tiles, outcome, what was undone, timeline.

    `events` default to `order.events.all()` (prefetched by the detail selectors). Strings are
    lazy translations; `order_progress_data` gives the same with plain strings, for JSON.
    """
    events = list(order.events.all() if events is None else events)
    fold = _Fold()
    for event in events:
        fold.apply(event)
    undone, held = _money(order, fold)
    steps = _steps(order, fold)
    terminal = order.status in TERMINAL_STATUSES
    return {
        "status": order.status,
        "status_label": status_label(order.status),
        "terminal": terminal,
        "outcome": (
            None if not terminal else "ok" if order.status == OrderStatus.CONFIRMED else "bad"
        ),
        "headline": HEADLINES.get(order.status, ""),
        "message": MESSAGES.get(order.status, ""),
        "problems": fold.problems if order.status == OrderStatus.CART_REJECTED else [],
        "undone": undone,
        "held": held,
        "failed_step": next((step["key"] for step in steps if step["state"] == FAILED), None),
        "steps": steps,
        "timeline": [
            {"at": row["at"], "text": row["text"], "tone": row["tone"], "count": row["count"]}
            for row in _timeline(events)
        ],
    }


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, _("Processing"))


def _plain(value):
    if isinstance(value, Promise):
        return force_str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def order_progress_data(order: Order, *, events: Iterable[OrderEvent] | None = None) -> dict:
    """`order_progress` with every string translated now (for JSON and for the template)."""
    data = _plain(order_progress(order, events=events))
    for row in data["timeline"]:
        row["at"] = row["at"].isoformat()
    return data


def order_outcome_lines(order: Order, *, events: Iterable[OrderEvent] | None = None) -> list[str]:
    """The outcome message's body after its greeting: what stopped the order (a cart's lines),
    what was given back, what is still held. The headline and the general message are the
    notification's title and its template's own text, so neither is repeated here."""
    progress = order_progress(order, events=events)
    return [
        force_str(line) for line in (*progress["problems"], *progress["undone"], *progress["held"])
    ]
