from django.contrib import admin, messages

from . import services
from .models import (
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "kind", "title", "emailed_at", "read_at"]
    list_filter = ["kind"]
    search_fields = ["user__username", "title", "dedupe_key"]
    readonly_fields = [field.name for field in Notification._meta.fields]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Users create endpoints through the API (URL checks, the secret shown once); staff can
    look, switch one off or delete it. The secret is never shown here."""

    list_display = ["id", "url", "user", "events", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["url", "user__username"]
    fields = ["user", "url", "events", "is_active", "created_at"]
    readonly_fields = ["user", "url", "events", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    fields = ["attempted_at", "status_code", "duration_ms", "error", "response_body"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # the attempt log is written by the sender only


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "created_at",
        "endpoint",
        "event_kind",
        "status",
        "attempt_count",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "event_kind"]
    search_fields = ["event_id", "endpoint__url", "endpoint__user__username"]
    list_select_related = ["endpoint"]
    exclude = ["lease_until"]
    readonly_fields = [
        field.name for field in WebhookDelivery._meta.fields if field.name != "lease_until"
    ]
    inlines = [WebhookAttemptInline]
    actions = ["replay_failed_deliveries"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Replay the selected failed deliveries")
    def replay_failed_deliveries(self, request, queryset) -> None:
        replayed = 0
        for delivery in queryset.select_related("endpoint"):
            if delivery.status != WebhookDeliveryStatus.FAILED:
                continue
            try:
                services.webhook_delivery_replay(delivery=delivery)
                replayed += 1
            except services.WebhookReplayNotAllowed as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Replayed {replayed} delivery(ies).", messages.SUCCESS)
