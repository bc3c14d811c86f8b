"""What each kind of notification says. The app that emits a kind registers it in its ready().

A renderer turns (user, context) into the message, or None when there is nothing to say yet.
A registered kind may stand for several concrete kinds ("order.outcome" renders
"order.confirmed", "order.failed", ...): the concrete kind is what is recorded, picks the email
template and is what webhook endpoints subscribe to. The emitting app declares those concrete
kinds with ``register(..., emits=[...])``; this module knows none of them itself, so the list
is complete once every app is ready (validation reads it per request, never at import time).
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

# Every concrete kind a webhook endpoint may subscribe to (besides "*" for all of them), as
# declared by the apps that emit them. The notifications app emits none of its own.
EVENT_KINDS: set[str] = set()
ALL_EVENTS = "*"

_renderers: dict[str, Renderer] = {}


def register(kind: str, renderer: Renderer, *, emits: Iterable[str] = ()) -> None:
    """Register the renderer of `kind`; `emits` declares the concrete kinds it produces, the
    ones webhook endpoints may subscribe to."""
    if isinstance(emits, str):  # emits="order.confirmed" would declare "o", "r", "d", ...
        raise TypeError("emits is a list of kind names, not a string")
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
