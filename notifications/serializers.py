from rest_framework import serializers

from .models import (
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "kind", "title", "body", "data", "read_at", "created_at"]
        read_only_fields = fields


class WebhookEndpointCreateInputSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    # Which kinds are known is checked by the service (kinds register at start-up).
    events = serializers.ListField(
        child=serializers.CharField(max_length=64), allow_empty=False, max_length=50
    )
    is_active = serializers.BooleanField(default=True)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    """An endpoint as listed: never with its secret."""

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "is_active", "created_at"]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """The answer to the creation, the only time the secret is shown."""

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["attempted_at", "status_code", "duration_ms", "error", "response_body"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    endpoint = serializers.PrimaryKeyRelatedField(read_only=True)
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint",
            "event_id",
            "event_kind",
            "payload",
            "status",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "attempts",
        ]
        read_only_fields = fields


class WebhookDeliveryFilterSerializer(serializers.Serializer):
    """Query filters; give it `query_params.dict()` so that `?status=` is an error, not ignored."""

    status = serializers.ChoiceField(choices=WebhookDeliveryStatus.choices, required=False)
    endpoint = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
