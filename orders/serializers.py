import functools

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import presentation
from .models import Order, OrderEvent, OrderLine, OrderStatus, Product


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["sku", "name", "price", "currency", "stock"]


class OrderLineInputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=10_000)


class OrderCreateInputSerializer(serializers.Serializer):
    lines = OrderLineInputSerializer(many=True, allow_empty=False)
    payment_token = serializers.CharField(max_length=128)

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        if len(lines) > settings.ORDER_MAX_LINES:
            raise serializers.ValidationError(
                f"At most {settings.ORDER_MAX_LINES} lines per order."
            )
        return lines


class OrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price"]


class OrderEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderEvent
        fields = ["name", "created_at", "attempt", "detail"]


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "total",
            "currency",
            "lines",
            "correlation_id",
            "failure_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ProgressStepSerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=presentation.STEPS)
    state = serializers.ChoiceField(
        choices=[
            presentation.DONE,
            presentation.CURRENT,
            presentation.FAILED,
            presentation.UNDONE,
            presentation.PENDING,
        ]
    )
    label = serializers.CharField()


class ProgressTimelineRowSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    text = serializers.CharField()
    tone = serializers.ChoiceField(choices=["info", "ok", "bad", "retry"])
    count = serializers.IntegerField(help_text="Consecutive retries shown as this one row.")


class OrderProgressSerializer(serializers.Serializer):
    """The customer's view of the order (orders/presentation.py), in the request's language."""

    status = serializers.CharField()
    status_label = serializers.CharField()
    terminal = serializers.BooleanField()
    outcome = serializers.ChoiceField(choices=["ok", "bad"], allow_null=True)
    headline = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    problems = serializers.ListField(child=serializers.CharField())
    undone = serializers.ListField(
        child=serializers.CharField(), help_text="What was given back (payment, stock)."
    )
    held = serializers.ListField(
        child=serializers.CharField(), help_text="What is still held for an unsettled order."
    )
    failed_step = serializers.CharField(
        allow_null=True, help_text="The `key` of the step where the order stopped, if any."
    )
    steps = ProgressStepSerializer(many=True)
    timeline = ProgressTimelineRowSerializer(many=True)


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)
    progress = serializers.SerializerMethodField()

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "events", "progress"]
        read_only_fields = fields

    @extend_schema_field(OrderProgressSerializer)
    def get_progress(self, order: Order) -> dict:
        return presentation.order_progress_data(order)


@functools.cache
def _order_detail_serializer() -> OrderDetailSerializer:
    return OrderDetailSerializer()


def order_detail_data(order: Order) -> dict:
    """`OrderDetailSerializer(order).data`, for a response on a hot path.

    A ModelSerializer builds its fields from the model on every instantiation, which costs ten
    times what rendering them does. Rendering keeps no state in the serializer or its fields, so
    one instance, built once per process, serves every request and thread.
    """
    return _order_detail_serializer().to_representation(order)


class OrderListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False)


class OrderCreateQuerySerializer(serializers.Serializer):
    wait = serializers.IntegerField(
        min_value=0,
        max_value=30,
        required=False,
        help_text="Seconds (0-30) to wait for a terminal status: 200 if reached, else 202.",
    )


class BatchCreateInputSerializer(serializers.Serializer):
    orders = OrderCreateInputSerializer(many=True, allow_empty=False)

    def validate_orders(self, orders: list[dict]) -> list[dict]:
        if len(orders) > settings.BATCH_MAX_ORDERS:
            raise serializers.ValidationError(
                f"At most {settings.BATCH_MAX_ORDERS} orders per batch."
            )
        return orders


class BatchAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status_url = serializers.URLField()


class BatchSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    size = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    done = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
