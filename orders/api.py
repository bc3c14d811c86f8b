"""Thin API views: validate input, call one service or selector, serialise the result."""

from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project import edge
from project.api_errors import error_responses
from project.observability import current_correlation_id
from project.throttling import FailOpenScopedRateThrottle

from . import live, presentation, selectors, services
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


def held_slot(request: Request) -> live.HeldSlot | None:
    """One of the user's held slots for a wait or a stream; 429 in DRF's shape beyond the cap."""
    try:
        return live.held_slot_acquire(user_id=request.user.pk)
    except live.HeldLimitExceeded as exc:
        raise Throttled(
            wait=exc.retry_after,
            detail=f"Too many held waits and streams at once (at most "
            f"{settings.LIVE_MAX_HELD_PER_USER} per user).",
        ) from exc


@dataclass(frozen=True)
class PendingWait:
    """What the async part of POST ?wait=N (order_list_create) waits for."""

    order_id: object
    timeout: int
    slot: live.HeldSlot | None


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
        idempotency_key = _idempotency_key(request)
        slot = held_slot(request) if wait else None  # before ordering: a 429 orders nothing
        try:
            order, created = services.order_create(
                user=request.user,
                idempotency_key=idempotency_key,
                correlation_id=current_correlation_id(),
                **payload.validated_data,
            )
        except BaseException as exc:
            live.held_slot_release_now(slot)
            if isinstance(exc, InvalidOrder):
                raise ValidationError(exc.errors) from exc
            if isinstance(exc, IdempotencyConflict):
                raise Conflict(str(exc)) from exc
            raise
        if not created:
            # The first order of this key: it may have moved on since. A new order is the one
            # just written, with its lines and first event: nothing to read back.
            order = selectors.order_get_for_user(user=request.user, order_id=order.pk)
        response = Response(
            order_detail_data(order),
            status=status.HTTP_200_OK if order.is_terminal else status.HTTP_202_ACCEPTED,
            headers={
                "Location": request.build_absolute_uri(
                    reverse("orders:order-detail", args=[order.pk])
                ),
                "X-Correlation-ID": order.correlation_id,
            },
        )
        if wait and not order.is_terminal:
            # Waited for by order_list_create, on Redis, with no thread and no connection.
            response.pending_wait = PendingWait(order_id=order.pk, timeout=wait, slot=slot)
        else:
            live.held_slot_release_now(slot)
        return response


_order_list_create_sync = OrderListCreateApi.as_view()


def _order_data(user, order_id) -> dict:
    return order_detail_data(selectors.order_get_for_user(user=user, order_id=order_id))


async def _finish_wait(request, response: Response, pending: PendingWait) -> Response:
    """The wait of POST ?wait=N: the order is committed, so whatever happens here (Redis down,
    the wait running out) the answer is the order, 200 if terminal, else 202; `X-Wait-Outcome`
    says how the wait ended: `terminal`, `timeout` or `unavailable` (no live updates now)."""
    outcome = "unavailable"
    subscription = None
    # The order's connection goes back before anything is awaited: many waits opened at once
    # would otherwise hold the whole pool while they subscribe.
    await sync_to_async(live.close_database_connections)()
    try:
        subscription = await live.subscribe(pending.order_id)
        if await sync_to_async(live.order_status)(pending.order_id) in TERMINAL_STATUSES:
            outcome = "terminal"
        else:
            live.release_request_thread()  # the order_status read closed the connection
            reached = await live.wait_until_terminal(
                subscription=subscription, timeout=pending.timeout
            )
            outcome = "terminal" if reached else "timeout"
    except live.LiveUnavailable:
        outcome = "unavailable"
    finally:
        if subscription is not None:
            await subscription.close()
        await live.held_slot_release(pending.slot)
    response.data = await sync_to_async(_order_data)(request.user, pending.order_id)
    terminal = response.data["status"] in TERMINAL_STATUSES
    response.status_code = status.HTTP_200_OK if terminal else status.HTTP_202_ACCEPTED
    response["X-Wait-Outcome"] = outcome
    return response


@csrf_exempt  # as DRF's views: SessionAuthentication enforces CSRF itself
@edge.waits_only_when(
    lambda method, query: method == "POST" and "wait" in query, sync_view=_order_list_create_sync
)
async def order_list_create(request, *args, **kwargs):
    """GET/POST /api/orders/: the DRF view on a thread, then for POST ?wait=N the wait, async.
    The edge (project/edge.py) serves every other request with the DRF view alone."""
    response = await sync_to_async(_order_list_create_sync)(request, *args, **kwargs)
    pending = getattr(response, "pending_wait", None)
    if pending is None:
        return response
    return await _finish_wait(request, response, pending)


# The schema generator reads the DRF view behind the URL from these.
order_list_create.cls = _order_list_create_sync.cls
order_list_create.initkwargs = _order_list_create_sync.initkwargs


# --- GET /api/orders/<id>/stream/ ---------------------------------------------------------------


class JSONErrorsNegotiation(BaseContentNegotiation):
    """EventSource asks for text/event-stream: the stream answers in it, and errors in JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@dataclass(frozen=True)
class PendingStream:
    order_id: object
    snapshot: live.StreamSnapshot
    slot: live.HeldSlot | None


class OrderStreamApi(APIView):
    """Authentication, permissions, the owner's 404, the cap's 429 and the first read of the
    stream, sync and in DRF's shape; order_stream then streams, async."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsNegotiation

    def get(self, request: Request, order_id) -> Response:
        last_event_id = request.headers.get("Last-Event-ID") or None
        if last_event_id is not None:
            if not last_event_id.isdigit():
                raise ValidationError({"Last-Event-ID": ["An event id this stream sent."]})
            last_event_id = int(last_event_id)
        order = selectors.order_get_for_user(user=request.user, order_id=order_id)
        slot = held_slot(request)
        try:
            snapshot = live.snapshot_for(order, after_id=last_event_id)
        except BaseException:
            live.held_slot_release_now(slot)
            raise
        response = Response(status=status.HTTP_200_OK)
        response.pending_stream = PendingStream(order_id=order.pk, snapshot=snapshot, slot=slot)
        return response


_order_stream_sync = OrderStreamApi.as_view()


def _progress_now(user, order_id) -> dict:
    """What the tracking page draws, read for a status event; the connection goes back at once."""
    try:
        order = selectors.order_get_for_user(user=user, order_id=order_id)
        return presentation.order_progress_data(order)
    finally:
        live.close_database_connections()


def _final_state(user, order_id, after_id: int | None) -> tuple[dict, live.StreamSnapshot]:
    order = selectors.order_get_for_user(user=user, order_id=order_id)
    return order_detail_data(order), live.snapshot_for(order, after_id=after_id)


@csrf_exempt
async def order_stream(request, order_id):
    """Server-Sent Events of one order (orders/live.py: order_events). Subscribed before the
    first read, so nothing published in between is missed."""
    if not isinstance(request, ASGIRequest):
        # A WSGI server would run the whole stream on one of its threads, and Django would
        # buffer it to the end: the tracking page falls back to polling on this answer.
        return JsonResponse(
            {"detail": "Live updates need the ASGI server; poll GET /api/orders/<id>/."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    try:
        subscription = await live.subscribe(order_id)
    except live.LiveUnavailable:
        subscription = None
    try:
        response = await sync_to_async(_order_stream_sync)(request, order_id=order_id)
    except BaseException:
        if subscription is not None:
            await subscription.close()
        raise
    pending = getattr(response, "pending_stream", None)
    if pending is None:  # 400, 401, 404, 429
        if subscription is not None:
            await subscription.close()
        return response
    if subscription is None and pending.snapshot.status not in TERMINAL_STATUSES:
        await live.held_slot_release(pending.slot)
        return JsonResponse(
            {"detail": "Live updates are unavailable now; poll GET /api/orders/<id>/."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    async def read_final(after_id: int | None) -> tuple[dict, live.StreamSnapshot]:
        return await sync_to_async(_final_state)(request.user, pending.order_id, after_id)

    stream = StreamingHttpResponse(
        live.order_events(
            subscription=subscription,
            snapshot=pending.snapshot,
            slot=pending.slot,
            read_final=read_final,
            close_connections=sync_to_async(live.close_database_connections),
            # A pool thread, not the request's: a held stream keeps no thread of its own.
            read_progress=lambda: sync_to_async(_progress_now, thread_sensitive=False)(
                request.user, pending.order_id
            ),
        ),
        content_type="text/event-stream",
    )
    stream["Cache-Control"] = "no-cache"
    stream["X-Accel-Buffering"] = "no"  # a buffering proxy would hold the events back
    return stream


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
