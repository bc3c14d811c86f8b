import functools
from decimal import Decimal

from django.conf import settings
from rest_framework import serializers

from .models import Order, OrderEvent, OrderLine, OrderStatus, Product


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["sku", "name", "price", "currency", "stock"]


class LimitedListSerializer(serializers.ListSerializer):
    """A list whose length limit is a setting, checked before any item is validated.

    DRF checks `max_length` first too, but fixes it when the class is defined; the limits here
    are settings. A 90,000-line body is refused for its length, not after 90,000 validations.
    """

    def __init__(self, *args, limit_setting: str, message: str, **kwargs) -> None:
        self.limit_setting = limit_setting
        self.message = message
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        limit = getattr(settings, self.limit_setting)
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(self.message.format(limit=limit), code="max_length")
        return super().to_internal_value(data)


def _column_max(field) -> Decimal:
    """The largest value a DecimalField's column holds (PostgreSQL refuses anything above)."""
    return Decimal(10) ** (field.max_digits - field.decimal_places) - Decimal(1).scaleb(
        -field.decimal_places
    )


MAX_ORDER_TOTAL = _column_max(Order._meta.get_field("total"))
_MAX_UNIT_PRICE = _column_max(Product._meta.get_field("price"))


def _orders_over_max_total(orders: list[list[dict]]) -> list[int]:
    """Indexes of the orders (each a list of lines) whose total would not fit the total column.

    Orders of so few units that no price could overflow are passed without a query; the others
    are priced in one query (unknown SKUs count nothing: the service reports them).
    """
    suspects = [
        index
        for index, lines in enumerate(orders)
        if sum(line["quantity"] for line in lines) * _MAX_UNIT_PRICE > MAX_ORDER_TOTAL
    ]
    if not suspects:
        return []
    skus = {line["sku"] for index in suspects for line in orders[index]}
    prices = dict(Product.objects.filter(sku__in=skus).values_list("sku", "price"))
    return [
        index
        for index in suspects
        if sum(prices.get(line["sku"], 0) * line["quantity"] for line in orders[index])
        > MAX_ORDER_TOTAL
    ]


def _max_total_error() -> dict:
    return {"lines": [f"The order's total would exceed {MAX_ORDER_TOTAL}; split the order."]}


class OrderLineInputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=10_000)


class OrderCreateInputSerializer(serializers.Serializer):
    lines = LimitedListSerializer(
        child=OrderLineInputSerializer(),
        allow_empty=False,
        limit_setting="ORDER_MAX_LINES",
        message="At most {limit} lines per order.",
    )
    payment_token = serializers.CharField(max_length=128)

    def validate(self, attrs: dict) -> dict:
        # In a batch, the batch prices all its orders in one query instead (below).
        if self.parent is None and _orders_over_max_total([attrs["lines"]]):
            raise serializers.ValidationError(_max_total_error())
        return attrs


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


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "events"]
        read_only_fields = fields


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
    orders = LimitedListSerializer(
        child=OrderCreateInputSerializer(),
        allow_empty=False,
        limit_setting="BATCH_MAX_ORDERS",
        message="At most {limit} orders per batch.",
    )

    def validate_orders(self, orders: list[dict]) -> list[dict]:
        over = _orders_over_max_total([order["lines"] for order in orders])
        if over:
            raise serializers.ValidationError({index: _max_total_error() for index in over})
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
