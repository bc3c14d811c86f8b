"""The product's URLs plus the two comparison endpoints of bench/api.py (benchmark runs only)."""

from django.urls import path

from bench.naive import FloorInsertApi, NaiveOrderCreateApi
from project.urls import handler404, handler500
from project.urls import urlpatterns as product_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]

urlpatterns = [
    path("bench/naive/orders/", NaiveOrderCreateApi.as_view(), name="bench-naive-order-create"),
    path("bench/floor/", FloorInsertApi.as_view(), name="bench-floor"),
    *product_urlpatterns,
]
