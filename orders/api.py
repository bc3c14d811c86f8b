"""Thin API views: validate input, call one service or selector, serialise the result."""

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api_errors import error_responses
from project.observability import current_correlation_id
from project.throttling import FailOpenScopedRateThrottle

from . import live, selectors, services
from .errors import IdempotencyConflict, InvalidOrder
from .models import TERMINAL_STATUSES
from .serializers import (
    BatchAcceptedSerializer,
    BatchCreateInputSerializer,
    BatchSerializer,
    OrderCreateInputSerializer,
    OrderCreateQuerySerializer,
    OrderDetailSerializer,
    OrderListFilterSerializer,
    OrderSerializer,
    ProductSerializer,
    order_detail_data,
)

IDEMPOTENCY_KEY_MAX = 255

ORDER_EXAMPLE = OpenApiExample(
    "Two lines",
    value={
        "lines": [{"sku": "BOOK-001", "quantity": 1}, {"sku": "MUG-001", "quantity": 2}],
        "payment_token": "tok_ok",
    },
    request_only=True,
)


def _idempotency_key(request: Request) -> str | None:
    idempotency_key = request.headers.get("Idempotency-Key") or None
    if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise ValidationError({"Idempotency-Key": [f"At most {IDEMPOTENCY_KEY_MAX} characters."]})
    return idempotency_key


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class ProductListApi(generics.ListAPIView):
    serializer_class = ProductSerializer

    def get_queryset(self):
        return selectors.product_list()


class OrderListCreateApi(generics.GenericAPIView):
    serializer_class = OrderSerializer
    throttle_scope = "order_create"

    def get_throttles(self):
        return [FailOpenScopedRateThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        parameters=[OrderListFilterSerializer],
        responses={200: OrderSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        # A plain dict: DRF would read a blank form value (?status=) as "not given".
        filters = OrderListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        orders = selectors.order_list_for_user(
            user=request.user, status=filters.validated_data.get("status")
        )
        page = self.paginate_queryset(orders)
        return self.get_paginated_response(OrderSerializer(page, many=True).data)

    @extend_schema(
        request=OrderCreateInputSerializer,
        parameters=[
            OrderCreateQuerySerializer,
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Same key + same body returns the first order; another body is 409.",
            ),
            OpenApiParameter(
                "X-Correlation-ID",
                str,
                OpenApiParameter.HEADER,
                description="Carried by every task and log line of this order (1-64 of "
                "A-Z a-z 0-9 . _ : -); another value is replaced by a generated id.",
            ),
        ],
        examples=[ORDER_EXAMPLE],
        responses={
            200: OpenApiResponse(OrderDetailSerializer, "Terminal within ?wait seconds."),
            202: OpenApiResponse(OrderDetailSerializer, "Accepted; poll the Location."),
            **error_responses(409),
        },
    )
    def post(self, request: Request) -> Response:
        wait = 0
        if request.query_params:  # most clients send none: skip building the serializer
            query = OrderCreateQuerySerializer(data=request.query_params)
            query.is_valid(raise_exception=True)
            wait = query.validated_data.get("wait", 0)
        payload = OrderCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            order, created = services.order_create(
                user=request.user,
                idempotency_key=_idempotency_key(request),
                correlation_id=current_correlation_id(),
                **payload.validated_data,
            )
        except InvalidOrder as exc:
            raise ValidationError(exc.errors) from exc
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from exc
        reached = wait > 0 and live.wait_until_terminal(order_id=order.pk, timeout=wait)
        if wait or not created:
            # It may have moved on since: read it again. A new order answered at once is the
            # one just written, with its lines and first event: nothing to read back.
            order = selectors.order_get_for_user(user=request.user, order_id=order.pk)
        return Response(
            order_detail_data(order),
            status=status.HTTP_200_OK if reached or order.is_terminal else status.HTTP_202_ACCEPTED,
            headers={
                "Location": request.build_absolute_uri(
                    reverse("orders:order-detail", args=[order.pk])
                ),
                "X-Correlation-ID": order.correlation_id,
            },
        )


class OrderDetailApi(APIView):
    @extend_schema(responses={200: OrderDetailSerializer})
    def get(self, request: Request, order_id) -> Response:
        order = selectors.order_get_for_user(user=request.user, order_id=order_id)
        return Response(OrderDetailSerializer(order).data)


class OrderReplayApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={202: OrderDetailSerializer, **error_responses(409)},
    )
    def post(self, request: Request, order_id) -> Response:
        order = selectors.order_get_for_user(user=request.user, order_id=order_id)
        try:
            services.replay_order(order_id=order.pk, actor=request.user)
        except services.ReplayNotAllowed as exc:
            raise Conflict(str(exc)) from exc
        order = selectors.order_get_for_user(user=request.user, order_id=order_id)
        return Response(OrderDetailSerializer(order).data, status=status.HTTP_202_ACCEPTED)


class BatchCreateApi(APIView):
    throttle_classes = [FailOpenScopedRateThrottle]
    throttle_scope = "batch_create"

    @extend_schema(
        request=BatchCreateInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Same key + same body returns the first batch; another body is 409.",
            ),
        ],
        responses={202: BatchAcceptedSerializer, **error_responses(409)},
    )
    def post(self, request: Request) -> Response:
        payload = BatchCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            batch, _created = services.batch_create(
                user=request.user,
                orders=payload.validated_data["orders"],
                correlation_id=current_correlation_id(),
                idempotency_key=_idempotency_key(request),
            )
        except InvalidOrder as exc:
            raise ValidationError(exc.errors) from exc
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from exc
        status_url = request.build_absolute_uri(reverse("orders:batch-detail", args=[batch.pk]))
        return Response(
            {"id": str(batch.pk), "status_url": status_url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )


class BatchDetailApi(APIView):
    @extend_schema(responses={200: BatchSerializer})
    def get(self, request: Request, batch_id) -> Response:
        batch = selectors.batch_get_for_user(user=request.user, batch_id=batch_id)
        counts = selectors.batch_status_counts(batch=batch)
        terminal = sum(counts.get(status, 0) for status in TERMINAL_STATUSES)
        return Response(
            BatchSerializer(
                {
                    "id": batch.pk,
                    "size": batch.size,
                    "counts": counts,
                    "done": terminal >= batch.size,
                    "created_at": batch.created_at,
                    "finished_at": batch.finished_at,
                }
            ).data
        )
