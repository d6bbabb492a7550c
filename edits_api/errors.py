"""The gateway's one error type and the handlers that turn any error into the OpenAI envelope."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, DisallowedHost
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error answered to the client as {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        # The provider may have done (and billed) the work: it received the whole request and then
        # went silent or dropped the connection, or it answered and the answer cannot be used. The
        # request is never sent again, by the gateway nor on a replay of its Idempotency-Key (§3.6).
        self.outcome_unknown = outcome_unknown

    @property
    def retryable(self) -> bool:
        """Whether another attempt (here or at another provider) may succeed without a second bill."""
        if self.outcome_unknown:
            return False
        return self.status in (429, 500, 502, 503, 504) and self.code != "upstream_bad_response"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def invalid(message: str, param: str | None, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


_DRF_CODES = {
    drf_exceptions.MethodNotAllowed: ("method_not_allowed", "invalid_request_error"),
    drf_exceptions.UnsupportedMediaType: ("unsupported_media_type", "invalid_request_error"),
    drf_exceptions.ParseError: ("invalid_request_body", "invalid_request_error"),
    drf_exceptions.NotFound: ("not_found", "invalid_request_error"),
    drf_exceptions.Throttled: ("rate_limit_exceeded", "rate_limit_error"),
    drf_exceptions.NotAuthenticated: ("invalid_api_key", "invalid_request_error"),
    drf_exceptions.AuthenticationFailed: ("invalid_api_key", "invalid_request_error"),
    drf_exceptions.PermissionDenied: ("permission_denied", "invalid_request_error"),
}
# Django and DRF validation codes that mean "this field is missing", as the OpenAI envelope says it.
_MISSING_CODES = frozenset({"required", "null", "blank"})


def database_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway's database is unavailable; retry shortly.",
        type="server_error",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


def connection_misconfigured() -> GatewayError:
    """A provider connection (token, header value) holds what HTTP cannot send: the operator must fix it."""
    return GatewayError(
        502,
        "A provider connection of this route holds characters an HTTP header cannot carry (latin-1 only); "
        "an operator must set its token again.",
        type="server_error",
        code="upstream_misconfigured",
    )


def first_error(detail: Any, path: str | None = None) -> tuple[str | None, str, str | None]:
    """(param, message, code) of the first error in a DRF `detail` (dict, list or string).

    Nested fields are named with dots (`config.connection.token`); non-field errors name none.
    """
    if isinstance(detail, dict):
        for key, value in detail.items():
            field = None if key in (NON_FIELD_ERRORS, api_settings.NON_FIELD_ERRORS_KEY) else str(key)
            return first_error(value, f"{path}.{field}" if path and field else (field or path))
        return path, "Invalid request.", None
    if isinstance(detail, list | tuple):
        if not detail:
            return path, "Invalid request.", None
        return first_error(detail[0], path)
    return path, str(detail), getattr(detail, "code", None)


def _from_drf(exc: drf_exceptions.APIException) -> GatewayError:
    param, message, detail_code = first_error(exc.detail)
    if isinstance(exc, drf_exceptions.ValidationError):
        code = "missing_required_parameter" if detail_code in _MISSING_CODES else "invalid_value"
        return GatewayError(400, message, param=param, code=code)
    fallback_type = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    code, type_ = _DRF_CODES.get(type(exc), (detail_code or "invalid_request", fallback_type))
    if detail_code and detail_code != exc.default_code:  # a code the raiser chose beats the class's
        code = detail_code
    headers = {}
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    # DRF sets auth_header on a 401 (NotAuthenticated, AuthenticationFailed); it belongs on the answer.
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    return GatewayError(exc.status_code, message, type=type_, code=code, headers=headers)


def as_gateway_error(exc: Exception, where: str) -> GatewayError:
    """Any exception as the error the client is told; an unexpected one is logged (`where` raised it).

    Django's own ValidationError, Http404 and PermissionDenied are turned into DRF's first
    (HackSoft's pattern), so a model's `full_clean()` raised from a view answers 400, never 500.
    """
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable: %s", exc)
        return database_unavailable()
    elif isinstance(exc, UnicodeEncodeError) and exc.encoding == "latin-1":
        # http.client encodes header values as latin-1: a credential the operator typed is at fault.
        logger.error("a provider connection holds a value that is not latin-1: %s", exc.reason)
        return connection_misconfigured()
    if isinstance(exc, drf_exceptions.APIException):
        return _from_drf(exc)
    logger.exception("unhandled error in %s", where)
    return GatewayError(500, "The gateway failed to handle this request.", type="server_error", code="internal_error")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler: every error in the OpenAI envelope, with the field at fault as `param`."""
    error = as_gateway_error(exc, context.get("view").__class__.__name__)
    return Response(error.body(), status=error.status, headers=error.headers)


class DatabaseUnavailableMiddleware:
    """Outside the API views too (admin, readiness), a lost database is a 503, not a 500."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> JsonResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            logger.error("database unavailable: %s", exception)
            return database_unavailable().response()
        return None


# Django's error views, for everything outside DRF (the URL map, middleware, the admin): the same
# envelope, so no answer of the gateway is Django's HTML page. None of them echoes the request.


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, DisallowedHost):
        return GatewayError(400, "The Host header is not a valid host name.", code="invalid_host").response()
    return GatewayError(400, "The request is malformed.", code="bad_request").response()


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return GatewayError(403, "You do not have permission to do this.", code="permission_denied").response()


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    return GatewayError(
        403,
        "The form's CSRF check failed (missing or expired token): reload the page and submit it again.",
        code="csrf_failed",
    ).response()


def login_locked_out(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> JsonResponse:
    """django-axes' answer once an admin login is locked after too many wrong passwords."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    return GatewayError(
        429,
        f"Too many failed logins: this account is locked for {minutes} minute(s) from this address.",
        type="rate_limit_error",
        code="login_locked_out",
        headers={"Retry-After": str(int(settings.AXES_COOLOFF_TIME.total_seconds()))},
    ).response()


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return GatewayError(404, f"No endpoint at {request.path}.", code="not_found").response()


def handler500(request: HttpRequest) -> JsonResponse:
    return GatewayError(
        500, "The gateway failed to handle this request.", type="server_error", code="internal_error"
    ).response()
