"""OpenAPI: every operation documents every status code it can answer.

The error codes follow from how a view is built (authentication, permissions, path ids,
pagination, request bodies, throttles), so they are added here in one place rather than
repeated on every view; views declare only their own specific codes (e.g. 409).
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny, IsAuthenticated

from .api_errors import error_responses


class OrderflowAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, response in error_responses(*self._error_codes()).items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    response.response, str(code), direction=direction
                ) | {"description": response.description}
        return responses

    def _error_codes(self) -> list[int]:
        view = self.view
        permissions = view.get_permissions()
        codes = []
        has_body = self.method in {"POST", "PUT", "PATCH"}
        if has_body or self.get_filter_backends() or self._is_list_view() or self._query_params():
            codes.append(400)
        if not all(isinstance(permission, AllowAny) for permission in permissions):
            codes.append(401)
        if any(not isinstance(p, (AllowAny, IsAuthenticated)) for p in permissions):
            codes.append(403)
        if "{" in self.path or (self.method == "GET" and self._is_list_view()):
            codes.append(404)  # an unknown (or another user's) id, or a page past the end
        if has_body:
            codes.append(413)
        if view.get_throttles() or getattr(view, "throttle_scope", None):
            codes.append(429)
        return codes

    def _query_params(self) -> list:
        return [p for p in self._get_parameters() if p.get("in") == "query"]
