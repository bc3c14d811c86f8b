from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from orders.models import Product

CATALOG = [
    ("BOOK-001", "Designing Data-Intensive Applications", "42.50", 40),
    ("BOOK-002", "Two Scoops of Django", "39.90", 25),
    ("MUG-001", "Orderflow mug", "12.00", 100),
    ("TEE-001", "Orderflow T-shirt", "24.00", 60),
    ("STICKER-001", "Sticker pack", "3.50", 500),
    ("LAMP-001", "Desk lamp", "58.00", 5),
    ("RARE-001", "Signed first edition", "250.00", 1),
]

# Demo accounts for a local stack; refused when DEBUG is off (see --force).
USERS = [
    ("admin", "admin-orderflow", "admin@orderflow.localhost", True),
    ("alice", "alice-orderflow", "alice@example.com", False),
]


class Command(BaseCommand):
    help = "Load the demo catalog, a staff user and a customer, and print their credentials."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="seed even when DEBUG is off (never in prod)"
        )

    def handle(self, *args, force: bool = False, **options) -> None:
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates well-known passwords; refused with DEBUG=0.")
        for sku, name, price, stock in CATALOG:
            Product.objects.update_or_create(
                sku=sku,
                defaults={"name": name, "price": Decimal(price), "currency": "EUR", "stock": stock},
            )
        self.stdout.write(f"Catalog: {len(CATALOG)} products (GET /api/products/).")
        user_model = get_user_model()
        for username, password, email, is_staff in USERS:
            user, _ = user_model.objects.get_or_create(username=username)
            user.email = email
            user.is_staff = user.is_superuser = is_staff
            user.set_password(password)
            user.save()
            token, _ = Token.objects.get_or_create(user=user)
            role = "staff" if is_staff else "customer"
            self.stdout.write(f"{role:9} username={username} password={password} token={token.key}")
