from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's sanctioned place for imports that need the app registry ready.
        from notifications import kinds
        from project import health

        from . import signals  # noqa: F401  (worker start-up hooks)
        from .notifications import render_batch_finished, render_order_outcome
        from .services import reconciliation_last_report

        health.register_detail("reconciliation", reconciliation_last_report)

        kinds.register(
            "order.outcome",
            render_order_outcome,
            emits=[
                "order.confirmed",
                "order.payment_declined",
                "order.cart_rejected",
                "order.failed",
            ],
        )
        kinds.register("batch.finished", render_batch_finished, emits=["batch.finished"])
