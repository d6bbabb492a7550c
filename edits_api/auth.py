"""Client API keys: a route that any key names needs one of its keys (enabled and unexpired).

A refused caller learns nothing it could use: an unknown, disabled or expired key gets the same
answer, and no 401 names the route or image model behind it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils import timezone

from edits_api.errors import GatewayError
from edits_api.routing import KeyInfo, RouteInfo
from entities.models import hash_secret

INVALID_KEY = "The API key is not valid for this route."


def presented_secret(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.META.get("HTTP_API_KEY", "").strip() or None


def authenticate(request: HttpRequest, route: RouteInfo) -> KeyInfo | None:
    """The key used, None on an open route, or 401 when the route's keys do not admit the request."""
    if not route.requires_key:
        return None
    secret = presented_secret(request)
    if secret is None:
        raise _unauthorized("This route needs an API key: send 'Authorization: Bearer <key>'.")
    # Looked up by its SHA-256, so lookup timing tells nothing about the secret itself.
    key = route.key_hashes.get(hash_secret(secret))
    # Unknown, disabled or expired: one answer, so a caller learns nothing about which keys exist.
    if key is None or not key.usable(timezone.now()):
        raise _unauthorized(INVALID_KEY)
    return key


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(
        401,
        message,
        type="invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer realm="image-gateway"'},
    )


class ConcealRouteOnUnauthorized:
    """Drops the `X-Gateway-*` headers (route, image model, attempts) from every 401 answer.

    Whichever view answers, a caller without a valid key must not learn which route or image
    model its request reached.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.status_code == 401:
            for name in [name for name in response.headers if name.lower().startswith("x-gateway-")]:
                del response[name]
        return response
