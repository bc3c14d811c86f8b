from django.core.management.base import BaseCommand

from orders.services import payments_reconcile


class Command(BaseCommand):
    help = "Compare our payments with the provider's and settle the drift (refund or record)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
        parser.add_argument("--limit", type=int, default=500)

    def handle(self, *args, dry_run: bool = False, limit: int = 500, **options) -> None:
        report = payments_reconcile(dry_run=dry_run, limit=limit)
        for fix in report.fixes:
            verb = "would " if dry_run else ""
            self.stdout.write(
                f"{verb}{fix['action']} order {fix['order']}: ours {fix['ours']}, "
                f"provider {fix['provider']}"
            )
        self.stdout.write(
            f"checked {report.checked}, in sync {report.in_sync}, "
            f"{'drifted' if dry_run else 'fixed'} {report.fixed}, errors {report.errors}"
        )
