"""POST /api/auth/token/: a documented, JSON-only version of DRF's obtain_auth_token.

Password guessing meets two limits: a rate per client address (the `auth_token` throttle, in
Redis, open when Redis is down) and the login lockout that every login path shares (django-axes,
in the database): once locked, even the right password is refused with 429.
"""

from axes.helpers import get_cool_off
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api_errors import error_responses
from project.throttling import FailOpenScopedRateThrottle


class TokenRequestSerializer(AuthTokenSerializer):
    username = serializers.CharField(write_only=True, max_length=150)
    password = serializers.CharField(
        write_only=True, max_length=128, style={"input_type": "password"}, trim_whitespace=False
    )


class ObtainTokenApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [FailOpenScopedRateThrottle]  # by client IP: slows password guessing
    throttle_scope = "auth_token"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: inline_serializer("TokenResponse", {"token": serializers.CharField()}),
            **error_responses(400, 429),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        payload = TokenRequestSerializer(data=request.data, context={"request": request})
        if not payload.is_valid() and getattr(request, "axes_locked_out", False):
            # Axes marks the request it refused; the serializer only saw "no such user".
            cool_off = get_cool_off(request)
            raise Throttled(
                wait=cool_off.total_seconds() if cool_off else None,
                detail="Too many failed logins; try again later.",
            )
        payload.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=payload.validated_data["user"])
        return Response({"token": token.key})
