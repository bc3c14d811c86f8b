"""The admin, shaped by the money: an order changes only through the pipeline (and a replay), stock
only by deltas, and what failed shows what was done about it."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import monitoring, services
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


def short_id(value) -> str:
    return str(value)[:8]


def compact_time(moment) -> str:
    """A changelist's time column: narrow enough for a 1280 px screen with both sidebars."""
    return "—" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


class ProductForm(forms.ModelForm):
    stock_change = forms.IntegerField(
        required=False,
        label=_("Add or remove stock"),
        help_text=_(
            "Units to add (10) or remove (-3), applied to the stock as it is when you save: "
            "reservations made while this page was open are kept."
        ),
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "currency", "stock"]

    def clean_stock_change(self) -> int:
        change = self.cleaned_data.get("stock_change") or 0
        if change < 0 and self.instance.pk:
            stock = Product.objects.filter(pk=self.instance.pk).values_list("stock", flat=True)[0]
            if stock + change < 0:
                raise forms.ValidationError(
                    _("Cannot remove %(units)d: only %(stock)d in stock.")
                    % {"units": -change, "stock": stock}
                )
        return change


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductForm
    list_display = ["sku", "name", "price", "currency", "stock"]
    search_fields = ["sku", "name"]
    # Everything but the stock: a form opened before a reservation must not write its old
    # figure back (that oversold). Stock moves by `stock_change`, as a delta.
    editable_fields = ["sku", "name", "price", "currency"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return [*self.editable_fields, "stock"]  # a new product's opening stock
        return [*self.editable_fields, "stock", "stock_change"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["stock"]

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        obj.save(update_fields=self.editable_fields)
        delta = form.cleaned_data.get("stock_change") or 0
        if delta:
            try:
                services.product_stock_adjust(product_id=obj.pk, delta=delta)
            except ValueError:
                # Reserved away between the form's check and this update: nothing was removed.
                self.message_user(
                    request,
                    _("Stock was not changed: fewer than %(units)d units are left.")
                    % {"units": -delta},
                    messages.ERROR,
                )
        obj.refresh_from_db(fields=["stock"])


class ReadOnlyInline:
    """An inline that shows the order's record and offers no add, edit or delete."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class OrderLineInline(ReadOnlyInline, admin.TabularInline):
    model = OrderLine
    fields = ["product", "sku", "quantity", "unit_price", "check_ok", "check_reason"]
    readonly_fields = fields


class PaymentInline(ReadOnlyInline, admin.StackedInline):
    model = Payment
    fields = [
        "provider_payment_id",
        "status",
        "amount",
        "currency",
        "created_at",
        "updated_at",
        "reconciled_at",
    ]
    readonly_fields = fields


class OrderEventInline(ReadOnlyInline, admin.TabularInline):
    model = OrderEvent  # the append-only timeline, written by the pipeline
    fields = ["created_at", "name", "attempt", "detail"]
    readonly_fields = fields
    ordering = ["created_at", "id"]


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
    list_display = ["order_id", "user", "status", "amount", "created", "replays"]
    list_display_links = ["order_id"]
    list_filter = ["status"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    search_fields = ["id", "correlation_id", "user__username", "idempotency_key"]
    readonly_fields = [
        "id",
        "tracking_page",
        "user",
        "batch",
        "status",
        "total",
        "currency",
        "correlation_id",
        "failed_step",
        "failed_from_status",
        "failure_reason",
        "replays",
        "stock_held",
        "run",
        "lease_holder",
        "lease_until",
        "idempotency_key",
        "created_at",
        "pipeline_started_at",
        "updated_at",
    ]
    fields = readonly_fields
    inlines = [OrderLineInline, PaymentInline, OrderEventInline]
    actions = ["replay_failed_orders"]

    @admin.display(description=_("order"), ordering="id")
    def order_id(self, order: Order) -> str:
        return short_id(order.pk)

    @admin.display(description=_("total"), ordering="total")
    def amount(self, order: Order) -> str:
        return f"{order.total} {order.currency}"

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, order: Order) -> str:
        return compact_time(order.created_at)

    @admin.display(description=_("tracking page"))
    def tracking_page(self, order: Order) -> str:
        url = reverse("order-tracking", args=[order.pk])
        return format_html('<a href="{}">{}</a>', url, url)

    # Orders are money records: they move through the pipeline, which a staff edit would race
    # (an in-flight order) or contradict (an authorized, captured or refunded one), and they are
    # never deleted. The change page is a read-only view; a failed order has its replay button.
    def has_add_permission(self, request) -> bool:
        return False  # orders come in through the API, with their payment and outbox row

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        own = [
            path(
                "pipeline-health/",
                self.admin_site.admin_view(self.pipeline_health_view),
                name="orders_pipeline_health",
            ),
            path(
                "<uuid:order_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="orders_order_replay",
            ),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        order = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "can_replay": order is not None
            and order.status == OrderStatus.FAILED
            and request.user.has_perm("orders.change_order"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def replay_view(self, request, order_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("orders.change_order"):
            raise PermissionDenied
        order = get_object_or_404(Order, pk=order_id)
        _replay(self, request, [order.pk])
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def pipeline_health_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": _("Pipeline health"),
            "opts": self.model._meta,
            "health": monitoring.pipeline_health(),
        }
        return TemplateResponse(request, "admin/orders/pipeline_health.html", context)

    @admin.action(description="Replay the selected failed orders from their failed step")
    def replay_failed_orders(self, request, queryset) -> None:
        _replay(
            self, request, queryset.filter(status=OrderStatus.FAILED).values_list("pk", flat=True)
        )


class ReplayedFilter(admin.SimpleListFilter):
    title = _("replayed")
    parameter_name = "replayed"

    def lookups(self, request, model_admin):
        return [("no", _("Not replayed")), ("yes", _("Replayed"))]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(replayed_at__isnull=self.value() == "no")
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["created", "step", "order_link", "attempts", "replay"]
    list_filter = [ReplayedFilter, "step", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["order"]
    search_fields = ["order__id", "correlation_id", "exception"]
    fields = [
        "order_link",
        "step",
        "reason",
        "task_name",
        "attempts",
        "created_at",
        "replay_outcome",
        "exception",
        "traceback",
        "args",
        "kwargs",
        "task_id",
        "correlation_id",
    ]
    readonly_fields = fields
    actions = ["replay_orders"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the record of a failure, kept as it was written

    @admin.display(description=_("order"), ordering="order")
    def order_link(self, letter: DeadLetter) -> str:
        url = reverse("admin:orders_order_change", args=[letter.order_id])
        return format_html('<a href="{}">{}</a>', url, short_id(letter.order_id))

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, letter: DeadLetter) -> str:
        return compact_time(letter.created_at)

    @admin.display(description=_("replayed"), ordering="replayed_at")
    def replay(self, letter: DeadLetter) -> str:
        """When it was replayed and where its order is now."""
        if letter.replayed_at is None:
            return _("Not replayed")
        return f"{compact_time(letter.replayed_at)} → {letter.order.status}"

    @admin.display(description=_("replay"))
    def replay_outcome(self, letter: DeadLetter) -> str:
        if letter.replayed_at is None:
            return _("Not replayed")
        order = letter.order
        again = order.dead_letters.filter(created_at__gt=letter.replayed_at).order_by("created_at")
        failed_again = ""
        if again:
            url = reverse("admin:orders_deadletter_change", args=[again[0].pk])
            failed_again = format_html(' (failed again: <a href="{}">dead letter</a>)', url)
        return format_html(
            'Replayed {}; the order is now <a href="{}">{}</a>{} · <a href="{}">tracking page</a>',
            letter.replayed_at.strftime("%Y-%m-%d %H:%M:%S"),
            reverse("admin:orders_order_change", args=[order.pk]),
            order.status,
            failed_again,
            reverse("order-tracking", args=[order.pk]),
        )

    @admin.action(description="Replay the orders of the selected dead letters")
    def replay_orders(self, request, queryset) -> None:
        _replay(self, request, set(queryset.values_list("order_id", flat=True)))


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "task_name", "created", "published", "attempts"]
    date_hierarchy = "created_at"
    list_filter = [("published_at", admin.EmptyFieldListFilter), "task_name"]
    search_fields = ["correlation_id", "kwargs"]
    readonly_fields = [field.name for field in OutboxMessage._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, message: OutboxMessage) -> str:
        return compact_time(message.created_at)

    @admin.display(description=_("received"), ordering="published_at")
    def published(self, message: OutboxMessage) -> str:
        return compact_time(message.published_at)
