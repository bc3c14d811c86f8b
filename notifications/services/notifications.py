import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import select_template
from django.utils import timezone

from notifications import kinds
from notifications.models import Notification

from .webhooks import webhook_deliveries_create

logger = logging.getLogger(__name__)

EMAIL_TEMPLATE = "notifications/email/{kind}.txt"
DEFAULT_EMAIL_TEMPLATE = "notifications/email/default.txt"


def notification_send(*, kind: str, user_id: int, context: dict) -> Notification | None:
    """Render a notification and deliver it on every channel the user has, once.

    In-app: a Notification row (unique per dedupe key). Webhooks: one delivery per subscribed
    active endpoint (unique per endpoint and notification), sent by its own task. Email: through
    Django's email backend, marked as sent so a redelivered task does not mail twice.
    """
    message = kinds.render(kind, user_id, context)
    if message is None:
        return None
    notification = _notification_record(message=message, user_id=user_id)
    # Webhooks before email: an SMTP outage retries this task and must not hold them back.
    webhook_deliveries_create(notification=notification)
    _deliver_email(notification, registered_kind=kind)
    return notification


def _notification_record(*, message: kinds.Message, user_id: int) -> Notification:
    try:
        with transaction.atomic():
            notification, _ = Notification.objects.get_or_create(
                dedupe_key=message.dedupe_key,
                defaults={
                    "user_id": user_id,
                    "kind": message.kind,
                    "title": message.title,
                    "body": message.body,
                    "data": message.data,
                },
            )
    except IntegrityError:  # a concurrent duplicate won the insert
        notification = Notification.objects.get(dedupe_key=message.dedupe_key)
    return notification


def notification_email_render(
    *, notification: Notification, user: AbstractBaseUser, registered_kind: str = ""
) -> str:
    """The email text: the kind's template, else the registered kind's, else the default."""
    names = [EMAIL_TEMPLATE.format(kind=notification.kind)]
    if registered_kind and registered_kind != notification.kind:
        names.append(EMAIL_TEMPLATE.format(kind=registered_kind))
    names.append(DEFAULT_EMAIL_TEMPLATE)
    return select_template(names).render(
        {
            "user": user,
            "kind": notification.kind,
            "title": notification.title,
            "body": notification.body,
            "data": notification.data,
        }
    )


def _deliver_email(notification: Notification, *, registered_kind: str) -> None:
    if notification.emailed_at is not None:
        return
    user = get_user_model().objects.get(pk=notification.user_id)
    if not user.email:
        return
    text = notification_email_render(
        notification=notification, user=user, registered_kind=registered_kind
    )
    # Claim before sending: a duplicate task may skip, never send twice at once.
    claimed = Notification.objects.filter(pk=notification.pk, emailed_at__isnull=True).update(
        emailed_at=timezone.now()
    )
    if not claimed:
        return
    try:
        send_mail(
            subject=notification.title,
            message=text,
            from_email=None,
            recipient_list=[user.email],
        )
    except Exception:
        Notification.objects.filter(pk=notification.pk).update(emailed_at=None)
        raise


def notification_mark_read(*, notification: Notification) -> Notification:
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at"])
    return notification
