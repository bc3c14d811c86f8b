from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from orders.views import order_tracking

from .auth_api import ObtainTokenApi
from .health import healthz

handler404 = "project.api_errors.handler404"
handler500 = "project.api_errors.handler500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("orders/<uuid:order_id>/", order_tracking, name="order-tracking"),
    path("healthz", healthz, name="healthz"),
    path("api/auth/token/", ObtainTokenApi.as_view(), name="api-token"),
    path("api/", include("orders.urls")),
    path("api/", include("notifications.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
