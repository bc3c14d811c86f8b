from django.urls import path

from . import api

app_name = "notifications"

urlpatterns = [
    path("notifications/", api.NotificationListApi.as_view(), name="notification-list"),
    path(
        "notifications/<int:notification_id>/read/",
        api.NotificationReadApi.as_view(),
        name="notification-read",
    ),
    path("webhooks/", api.WebhookEndpointListCreateApi.as_view(), name="webhook-list"),
    path(
        "webhooks/<int:endpoint_id>/",
        api.WebhookEndpointDetailApi.as_view(),
        name="webhook-detail",
    ),
    path(
        "webhooks/deliveries/",
        api.WebhookDeliveryListApi.as_view(),
        name="webhook-delivery-list",
    ),
    path(
        "webhooks/deliveries/<int:delivery_id>/replay/",
        api.WebhookDeliveryReplayApi.as_view(),
        name="webhook-delivery-replay",
    ),
]
