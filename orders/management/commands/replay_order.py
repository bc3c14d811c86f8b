from django.core.management.base import BaseCommand, CommandError

from orders.models import Order
from orders.services import ReplayNotAllowed, replay_order


class Command(BaseCommand):
    help = "Re-run a failed order from the step that failed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("order_id")

    def handle(self, *args, order_id: str, **options) -> None:
        try:
            order = replay_order(order_id=order_id)
        except (Order.DoesNotExist, ValueError) as exc:
            raise CommandError(f"No order {order_id}.") from exc
        except ReplayNotAllowed as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Replaying order {order.pk} (now {order.status}).")
