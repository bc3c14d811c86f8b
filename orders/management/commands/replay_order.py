import uuid

from django.core.management.base import BaseCommand, CommandError

from orders.models import Order
from orders.services import ReplayNotAllowed, replay_order


class Command(BaseCommand):
    help = "Re-run a failed order from the step that failed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("order_id", help="the order's id (a UUID, as in its tracking URL)")

    def handle(self, *args, order_id: str, **options) -> None:
        # Checked here so a typo is one line, not the database layer's traceback.
        try:
            order_uuid = uuid.UUID(order_id.strip())
        except ValueError:
            raise CommandError(f"{order_id!r} is not an order id (a UUID).") from None
        try:
            order = replay_order(order_id=str(order_uuid))
        except Order.DoesNotExist:
            raise CommandError(f"No order {order_uuid}.") from None
        except ReplayNotAllowed as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Replaying order {order.pk} (now {order.status}).")
