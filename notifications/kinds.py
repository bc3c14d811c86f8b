"""What each kind of notification says. Apps register a renderer for their kinds in ready().

A renderer turns (user, context) into the message, or None when there is nothing to say yet.
A registered kind may stand for several concrete kinds ("order.outcome" renders
"order.confirmed", "order.failed", ...): the concrete kind is what is recorded, picks the email
template and is what webhook endpoints subscribe to.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    kind: str  # the concrete kind recorded and matched by channels, e.g. "order.confirmed"
    title: str
    body: str
    dedupe_key: str  # one message per key, however often the task runs
    data: dict = field(default_factory=dict)


Renderer = Callable[[int, dict], Message | None]

# Every concrete kind a webhook endpoint may subscribe to (besides "*" for all of them).
EVENT_KINDS: set[str] = {
    "order.confirmed",
    "order.payment_declined",
    "order.cart_rejected",
    "order.failed",
    "batch.finished",
}
ALL_EVENTS = "*"

_renderers: dict[str, Renderer] = {}


def register(kind: str, renderer: Renderer, *, emits: Iterable[str] = ()) -> None:
    """Register the renderer of `kind`; `emits` adds the concrete kinds it produces."""
    _renderers[kind] = renderer
    EVENT_KINDS.update(emits)


def render(kind: str, user_id: int, context: dict) -> Message | None:
    try:
        renderer = _renderers[kind]
    except KeyError:
        raise ValueError(f"no renderer registered for notification kind {kind!r}") from None
    return renderer(user_id, context)


def event_kinds() -> list[str]:
    return sorted(EVENT_KINDS)
