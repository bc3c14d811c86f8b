from django.contrib import admin, messages

from . import services
from .models import (
    DeadLetter,
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    OutboxMessage,
    Payment,
    Product,
)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "currency", "stock"]
    search_fields = ["sku", "name"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    readonly_fields = ["product", "sku", "quantity", "unit_price", "check_ok", "check_reason"]
    can_delete = False


class PaymentInline(admin.StackedInline):
    model = Payment
    extra = 0
    readonly_fields = [
        "provider_payment_id",
        "amount",
        "currency",
        "status",
        "created_at",
        "updated_at",
    ]
    can_delete = False


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    readonly_fields = ["created_at", "name", "attempt", "detail", "correlation_id"]
    can_delete = False
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # the timeline is append-only, written by the pipeline


def _replay(modeladmin, request, order_ids) -> None:
    replayed = 0
    for order_id in order_ids:
        try:
            services.replay_order(order_id=order_id, actor=request.user)
            replayed += 1
        except services.ReplayNotAllowed as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
    modeladmin.message_user(request, f"Replayed {replayed} order(s).", messages.SUCCESS)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "status", "total", "currency", "created_at", "correlation_id"]
    list_filter = ["status", "created_at"]
    search_fields = ["id", "correlation_id", "user__username", "idempotency_key"]
    readonly_fields = [field.name for field in Order._meta.fields]
    inlines = [OrderLineInline, PaymentInline, OrderEventInline]
    actions = ["replay_failed_orders"]

    @admin.action(description="Replay the selected failed orders from their failed step")
    def replay_failed_orders(self, request, queryset) -> None:
        _replay(
            self, request, queryset.filter(status=OrderStatus.FAILED).values_list("pk", flat=True)
        )


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "task_name",
        "step",
        "order",
        "attempts",
        "replayed_at",
        "correlation_id",
    ]
    list_filter = ["task_name", "step", "replayed_at"]
    search_fields = ["order__id", "correlation_id", "exception"]
    readonly_fields = [field.name for field in DeadLetter._meta.fields]
    actions = ["replay_orders"]

    @admin.action(description="Replay the orders of the selected dead letters")
    def replay_orders(self, request, queryset) -> None:
        _replay(self, request, set(queryset.values_list("order_id", flat=True)))


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "task_name", "created_at", "published_at", "attempts", "correlation_id"]
    list_filter = ["task_name", "published_at"]
    search_fields = ["correlation_id", "kwargs"]
    readonly_fields = [field.name for field in OutboxMessage._meta.fields]
