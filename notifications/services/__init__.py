"""Writes of the notifications app: notifications on every channel, webhook endpoints and
deliveries."""

from .notifications import notification_email_render, notification_mark_read, notification_send
from .webhooks import (
    DELIVER_WEBHOOK_TASK,
    DeliveryOutcome,
    InvalidWebhookEndpoint,
    WebhookEndpointLimitReached,
    WebhookError,
    WebhookReplayNotAllowed,
    webhook_attempts_prune,
    webhook_body_encode,
    webhook_deliveries_create,
    webhook_deliveries_sweep,
    webhook_delivery_enqueue,
    webhook_delivery_replay,
    webhook_delivery_send,
    webhook_delivery_time_limit_record,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_event_id,
    webhook_payload,
)

__all__ = [
    "DELIVER_WEBHOOK_TASK",
    "DeliveryOutcome",
    "InvalidWebhookEndpoint",
    "WebhookEndpointLimitReached",
    "WebhookError",
    "WebhookReplayNotAllowed",
    "notification_email_render",
    "notification_mark_read",
    "notification_send",
    "webhook_attempts_prune",
    "webhook_body_encode",
    "webhook_deliveries_create",
    "webhook_deliveries_sweep",
    "webhook_delivery_enqueue",
    "webhook_delivery_replay",
    "webhook_delivery_send",
    "webhook_delivery_time_limit_record",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_event_id",
    "webhook_payload",
]
