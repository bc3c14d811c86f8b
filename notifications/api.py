"""Thin API views: validate input, call one service or selector, serialise the result."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from project.throttling import FailOpenScopedRateThrottle

from . import selectors, services
from .pagination import StrictPageNumberPagination
from .serializers import (
    NotificationSerializer,
    WebhookDeliveryFilterSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateInputSerializer,
    WebhookEndpointSerializer,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class NotificationListApi(generics.ListAPIView):
    pagination_class = StrictPageNumberPagination
    serializer_class = NotificationSerializer

    def get_queryset(self):
        return selectors.notification_list_for_user(user=self.request.user)

    def list(self, request: Request, *args, **kwargs) -> Response:
        response = super().list(request, *args, **kwargs)
        response.data["unread"] = self.get_queryset().filter(read_at__isnull=True).count()
        return response


class NotificationReadApi(APIView):
    @extend_schema(request=None, responses={200: NotificationSerializer})
    def post(self, request: Request, notification_id: int) -> Response:
        notification = selectors.notification_get_for_user(
            user=request.user, notification_id=notification_id
        )
        notification = services.notification_mark_read(notification=notification)
        return Response(NotificationSerializer(notification).data)


class WebhookEndpointListCreateApi(generics.GenericAPIView):
    pagination_class = StrictPageNumberPagination
    serializer_class = WebhookEndpointSerializer
    throttle_scope = "webhook_create"

    def get_throttles(self):
        # Registering is throttled (each endpoint fans out every event); listing is not.
        return [FailOpenScopedRateThrottle()] if self.request.method == "POST" else []

    def get_queryset(self):
        return selectors.webhook_endpoint_list_for_user(user=self.request.user)

    @extend_schema(responses={200: WebhookEndpointSerializer(many=True)})
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        request=WebhookEndpointCreateInputSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
        description=(
            "The response carries the signing secret (`whsec_...`, verify deliveries as "
            "Standard Webhooks specifies); it is never shown again. At most "
            "WEBHOOK_MAX_ENDPOINTS_PER_USER endpoints per user."
        ),
    )
    def post(self, request: Request) -> Response:
        payload = WebhookEndpointCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            endpoint = services.webhook_endpoint_create(user=request.user, **payload.validated_data)
        except services.InvalidWebhookEndpoint as exc:
            raise ValidationError(exc.errors) from exc
        except services.WebhookEndpointLimitReached as exc:
            raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [str(exc)]}) from exc
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )


class WebhookEndpointDetailApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, endpoint_id: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for_user(
            user=request.user, endpoint_id=endpoint_id
        )
        services.webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(generics.GenericAPIView):
    pagination_class = StrictPageNumberPagination
    serializer_class = WebhookDeliverySerializer

    @extend_schema(
        parameters=[WebhookDeliveryFilterSerializer],
        responses={200: WebhookDeliverySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        filters = WebhookDeliveryFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        deliveries = selectors.webhook_delivery_list_for_user(
            user=request.user,
            status=filters.validated_data.get("status"),
            endpoint_id=filters.validated_data.get("endpoint"),
        )
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryReplayApi(APIView):
    throttle_classes = [FailOpenScopedRateThrottle]
    throttle_scope = "webhook_replay"

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    def post(self, request: Request, delivery_id: int) -> Response:
        delivery = selectors.webhook_delivery_get_for_user(
            user=request.user, delivery_id=delivery_id
        )
        try:
            delivery = services.webhook_delivery_replay(delivery=delivery)
        except services.WebhookReplayNotAllowed as exc:
            raise Conflict(str(exc)) from exc
        delivery = selectors.webhook_delivery_get_for_user(
            user=request.user, delivery_id=delivery.pk
        )
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
