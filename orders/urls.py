from django.urls import path

from . import api

app_name = "orders"

urlpatterns = [
    path("products/", api.ProductListApi.as_view(), name="product-list"),
    path("orders/", api.order_list_create, name="order-list"),
    path("orders/batch/", api.BatchCreateApi.as_view(), name="batch-create"),
    path("batches/<uuid:batch_id>/", api.BatchDetailApi.as_view(), name="batch-detail"),
    path("orders/<uuid:order_id>/", api.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<uuid:order_id>/replay/", api.OrderReplayApi.as_view(), name="order-replay"),
    path("orders/<uuid:order_id>/stream/", api.order_stream, name="order-stream"),
]
