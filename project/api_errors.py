"""The API's errors: DRF's shape everywhere (never an HTML page, never a 500 for bad input)."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views.defaults import page_not_found, server_error
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.views import exception_handler as drf_exception_handler


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def _too_large_message() -> str:
    return f"Request body too large (at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(_too_large_message())
    return drf_exception_handler(exc, context)


class BodySizeLimitMiddleware:
    """Refuse an announced oversized body with 413 before anything reads it."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit and request.path.startswith("/api/"):
            return JsonResponse({"detail": _too_large_message()}, status=413)
        return self.get_response(request)


_DESCRIPTIONS = {
    400: 'Invalid input: field errors, e.g. {"lines": {"0": {"sku": ["..."]}}}.',
    401: "Authentication credentials were not provided or are invalid.",
    403: "Not allowed for this user.",
    404: "Not found (or not yours).",
    409: "Conflict, e.g. an Idempotency-Key reused with another body.",
    413: "Request body too large.",
    429: "Too many requests; see Retry-After.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI entries for the error codes an endpoint can answer."""
    return {code: OpenApiResponse(OpenApiTypes.OBJECT, _DESCRIPTIONS[code]) for code in codes}


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def handler404(request, exception=None):
    """JSON 404s under /api/ (a path that matched no route, e.g. a malformed id)."""
    if _wants_json(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def handler500(request):
    if _wants_json(request):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return server_error(request)
