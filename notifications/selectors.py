from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from .models import Notification, WebhookDelivery, WebhookEndpoint

# Keys per query: well under SQLite's limit on bound parameters (999 before 3.32).
DEDUPE_KEYS_PER_QUERY = 500


def notification_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user)


def notification_get_for_user(*, user: AbstractBaseUser, notification_id: int) -> Notification:
    try:
        return notification_list_for_user(user=user).get(pk=notification_id)
    except Notification.DoesNotExist as exc:
        raise Http404("No such notification.") from exc


def notification_dedupe_keys_existing(*, keys: Iterable[str]) -> set[str]:
    """Which of these dedupe keys already have a notification: what a flow that owes a
    notification asks instead of reading the table itself."""
    wanted = list(dict.fromkeys(keys))
    existing: set[str] = set()
    for start in range(0, len(wanted), DEDUPE_KEYS_PER_QUERY):
        chunk = wanted[start : start + DEDUPE_KEYS_PER_QUERY]
        existing.update(
            Notification.objects.filter(dedupe_key__in=chunk).values_list("dedupe_key", flat=True)
        )
    return existing


def webhook_endpoint_list_for_user(*, user: AbstractBaseUser) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user=user)


def webhook_endpoint_get_for_user(*, user: AbstractBaseUser, endpoint_id: int) -> WebhookEndpoint:
    """The user's own endpoint; anyone else's is a 404 (its existence is not disclosed)."""
    try:
        return webhook_endpoint_list_for_user(user=user).get(pk=endpoint_id)
    except WebhookEndpoint.DoesNotExist as exc:
        raise Http404("No such webhook endpoint.") from exc


def webhook_delivery_list_for_user(
    *,
    user: AbstractBaseUser,
    status: str | None = None,
    endpoint_id: int | None = None,
) -> QuerySet[WebhookDelivery]:
    deliveries = WebhookDelivery.objects.filter(endpoint__user=user)
    if status:
        deliveries = deliveries.filter(status=status)
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    return deliveries.select_related("endpoint").prefetch_related("attempts")


def webhook_delivery_get_for_user(*, user: AbstractBaseUser, delivery_id: int) -> WebhookDelivery:
    try:
        return webhook_delivery_list_for_user(user=user).get(pk=delivery_id)
    except WebhookDelivery.DoesNotExist as exc:
        raise Http404("No such webhook delivery.") from exc
