"""The endpoints bench/api.py compares POST /api/orders/ with; served by bench/bench_urls.py only.

* `NaiveOrderCreateApi`: what a typical Django developer writes instead: a ModelSerializer with
  nested lines, prices taken from the catalog, and the pipeline task's `.delay()` in
  `transaction.on_commit`. No Idempotency-Key, no outbox (the message is lost if the broker is
  down at commit), no timeline event, no throttle, no re-read of the order for the response.
* `FloorInsertApi`: the floor: the same middleware, authentication and JSON parsing, then one
  row inserted and a tiny response.
"""

from django.db import transaction
from django.utils import timezone
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.models import Order, OrderLine, OutboxMessage, Product
from orders.tasks import start_pipeline


class NaiveOrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price"]
        read_only_fields = ["unit_price"]


class NaiveOrderSerializer(serializers.ModelSerializer):
    lines = NaiveOrderLineSerializer(many=True)

    class Meta:
        model = Order
        fields = ["id", "status", "total", "currency", "payment_token", "lines", "created_at"]
        read_only_fields = ["id", "status", "total", "currency", "created_at"]
        extra_kwargs = {"payment_token": {"write_only": True}}

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        if not lines:
            raise serializers.ValidationError("An order needs at least one line.")
        self._products = Product.objects.in_bulk([line["sku"] for line in lines], field_name="sku")
        unknown = [line["sku"] for line in lines if line["sku"] not in self._products]
        if unknown:
            raise serializers.ValidationError(f"Unknown products: {', '.join(unknown)}.")
        return lines

    def create(self, validated_data: dict) -> Order:
        lines = validated_data.pop("lines")
        products = self._products
        with transaction.atomic():
            order = Order.objects.create(
                currency=products[lines[0]["sku"]].currency,
                total=sum(products[line["sku"]].price * line["quantity"] for line in lines),
                **validated_data,
            )
            for line in lines:
                OrderLine.objects.create(
                    order=order,
                    product=products[line["sku"]],
                    unit_price=products[line["sku"]].price,
                    **line,
                )
        return order


class NaiveOrderCreateApi(generics.CreateAPIView):
    serializer_class = NaiveOrderSerializer

    def perform_create(self, serializer: NaiveOrderSerializer) -> None:
        order = serializer.save(user=self.request.user)
        transaction.on_commit(lambda: start_pipeline.delay(str(order.pk)))


class FloorInsertApi(APIView):
    def post(self, request) -> Response:
        lines = len(request.data.get("lines", []))
        # Marked as published: a throw-away row that no relay will ever send.
        row = OutboxMessage.objects.create(
            task_name="bench.floor", kwargs={"lines": lines}, published_at=timezone.now()
        )
        return Response({"id": row.pk}, status=status.HTTP_201_CREATED)
