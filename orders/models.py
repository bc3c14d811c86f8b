import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class Product(models.Model):
    """A catalog item. Stock moves only by deltas (`F("stock") +/- n`): reservations, releases
    and staff adjustments. `save()` of an existing product never writes `stock`, so a form or
    shell object read before a reservation cannot write its stale count back (oversell)."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    stock = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name != "stock"
            ]
        super().save(*args, **kwargs)


class OrderStatus(models.TextChoices):
    ACCEPTED = "accepted"
    PAYMENT_AUTHORIZED = "payment_authorized"
    CART_VERIFIED = "cart_verified"
    STOCK_RESERVED = "stock_reserved"
    COMPENSATING = "compensating"
    # A step could not finish (out of retries, poisoned, interrupted past recovery) after money
    # or stock was touched: what the provider really did is being asked and undone.
    SETTLING = "settling"
    CONFIRMED = "confirmed"
    PAYMENT_DECLINED = "payment_declined"
    CART_REJECTED = "cart_rejected"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.CONFIRMED,
        OrderStatus.PAYMENT_DECLINED,
        OrderStatus.CART_REJECTED,
        OrderStatus.FAILED,
    }
)


class Batch(models.Model):
    """Many orders placed at once (the B2B case); finished once every order is terminal."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="batches"
    )
    size = models.PositiveIntegerField()
    correlation_id = models.CharField(max_length=64, db_index=True)
    summary = models.JSONField(default=dict, blank=True)  # counts per status when finished
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="batch_unique_idempotency_key_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"Batch {self.id} ({self.size} orders)"


class Order(models.Model):
    # UUIDs: ids are shown to users and sent to the provider as the reference; not enumerable.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders"
    )
    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, null=True, blank=True, related_name="orders"
    )
    status = models.CharField(
        max_length=32, choices=OrderStatus.choices, default=OrderStatus.ACCEPTED, db_index=True
    )
    total = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    currency = models.CharField(max_length=3, default="EUR")
    payment_token = models.CharField(max_length=128)
    correlation_id = models.CharField(max_length=64, db_index=True)
    failure_reason = models.TextField(blank=True, default="")
    # The step that ran out of retries and the status it started from: replay resumes there.
    failed_step = models.CharField(max_length=64, blank=True, default="")
    failed_from_status = models.CharField(max_length=32, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    pipeline_started_at = models.DateTimeField(null=True, blank=True)
    replays = models.PositiveIntegerField(default=0)
    # Dispatch generation: every (re-)dispatch claims the next number and its messages carry it;
    # a message of an older generation (redelivered after a crash) does nothing.
    run = models.PositiveIntegerField(default=0)
    # Who holds the order's next step and until when. A worker that holds its message (queued,
    # waiting on an ETA, running) renews the lease; a step that hands the order on clears the
    # holder. An expired lease is lost work: the recovery sweep re-dispatches it at once.
    lease_until = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_holder = models.CharField(max_length=200, blank=True, default="")
    # Stock is taken off the shelf for this order (set and cleared by conditional updates).
    stock_held = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The sweepers look for orders by when they last changed (stuck ones, lost notifications).
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="order_unique_idempotency_key_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"Order {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)  # captured at order time
    # Written by the cart check (one task per line); the aggregate reads them back.
    check_ok = models.BooleanField(null=True, blank=True)
    check_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


class PaymentStatus(models.TextChoices):
    # Written before the authorize call: if its answer is lost, settlement asks the provider.
    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    REFUNDED = "refunded"
    DECLINED = "declined"


FINAL_PAYMENT_STATUSES = frozenset(
    {PaymentStatus.CAPTURED, PaymentStatus.REFUNDED, PaymentStatus.DECLINED}
)


class Payment(models.Model):
    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    # Null until the provider answers the authorization.
    provider_payment_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # When reconciliation last compared this payment with the provider.
    reconciled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.provider_payment_id or 'pending'} {self.status}"


class OrderEvent(models.Model):
    """The order's append-only timeline."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=64, db_index=True)
    attempt = models.PositiveIntegerField(default=1)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.created_at:%H:%M:%S}"


class OutboxMessage(models.Model):
    """A message written in the same transaction as the change it announces (transactional outbox).

    Published after commit; the relay publishes whatever a crash or a broker outage left behind.
    """

    task_name = models.CharField(max_length=128)
    kwargs = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # When a worker received the message (it marks the row); until then the relay may resend it.
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Who may send it until when: the writer (from its insert) or a relay; a lease that runs out
    # without the message received lets the relay send it again.
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.pk}"


class DeadLetter(models.Model):
    """A step that ran out of retries: everything needed to understand and replay it."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="dead_letters")
    task_name = models.CharField(max_length=128)
    task_id = models.CharField(max_length=255, blank=True, default="")
    step = models.CharField(max_length=64)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    exception = models.TextField()
    traceback = models.TextField(blank=True, default="")
    correlation_id = models.CharField(max_length=64, db_index=True)
    attempts = models.PositiveIntegerField(default=1)
    # Why it was dead-lettered: out of retries, a final error, or a message that kept killing
    # its worker (poison).
    reason = models.CharField(max_length=32, blank=True, default="out_of_retries")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task_name} for {self.order_id}"
