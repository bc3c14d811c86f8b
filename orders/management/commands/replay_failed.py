import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from orders.models import Order, OrderStatus
from orders.services import ReplayNotAllowed, replay_order

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if not match:
        raise CommandError(f"--since takes a duration like 30m, 1h or 2d, not {value!r}.")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Replay every failed order (optionally only those that failed recently)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="only orders updated within this window, e.g. 1h")
        parser.add_argument("--dry-run", action="store_true", help="list, replay nothing")

    def handle(self, *args, since: str | None = None, dry_run: bool = False, **options) -> None:
        orders = Order.objects.filter(status=OrderStatus.FAILED).order_by("updated_at")
        if since:
            orders = orders.filter(updated_at__gte=timezone.now() - parse_duration(since))
        replayed = 0
        for order in orders:
            line = f"{order.pk} failed at {order.failed_step}: {order.failure_reason[:120]}"
            if dry_run:
                self.stdout.write(f"would replay {line}")
                continue
            try:
                replay_order(order_id=order.pk)
            except ReplayNotAllowed:
                continue  # replayed by someone else meanwhile
            replayed += 1
            self.stdout.write(f"replaying {line}")
        verb = "would replay" if dry_run else "replayed"
        self.stdout.write(f"{verb} {orders.count() if dry_run else replayed} order(s)")
