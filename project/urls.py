from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from orders.monitoring import PipelineHealthCollector
from orders.views import order_list_page, order_tracking

from .auth_api import ObtainTokenApi
from .health import healthz
from .metrics import metrics_view

handler404 = "project.api_errors.handler404"
handler500 = "project.api_errors.handler500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", RedirectView.as_view(pattern_name="order-list-page"), name="home"),
    path("orders/", order_list_page, name="order-list-page"),
    path("orders/<uuid:order_id>/", order_tracking, name="order-tracking"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, {"collectors": [PipelineHealthCollector()]}, name="metrics"),
    path("api/auth/token/", ObtainTokenApi.as_view(), name="api-token"),
    path("api/", include("orders.urls")),
    path("api/", include("notifications.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
