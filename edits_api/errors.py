"""The gateway's one error type and the handlers that turn any error into the OpenAI envelope."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
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
    drf_exceptions.ValidationError: ("invalid_value", "invalid_request_error"),
}


def database_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway's database is unavailable; retry shortly.",
        type="server_error",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


def _first_error(detail: Any, param: str | None = None) -> tuple[str | None, Any]:
    """The first message in a DRF error detail and the field it is about (a dict's key, else None)."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return _first_error(value, None if key == api_settings.NON_FIELD_ERRORS_KEY else str(key))
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], param)
    return param, detail


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler: GatewayError and DRF's own errors in the OpenAI shape; the rest logged, 500."""
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable: %s", exc)
        exc = database_unavailable()
    if isinstance(exc, GatewayError):
        return Response(exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, drf_exceptions.APIException):
        param, detail = _first_error(exc.detail)
        own_code = detail.code if isinstance(detail, drf_exceptions.ErrorDetail) else None
        code, type_ = _DRF_CODES.get(type(exc), (own_code or "invalid_request", "invalid_request_error"))
        if own_code and own_code != exc.default_code:  # a code the raiser chose beats the class's
            code = own_code
        error = GatewayError(exc.status_code, str(detail), type=type_, param=param, code=code)
        # DRF sets auth_header on a 401 (NotAuthenticated, AuthenticationFailed); it belongs on the answer.
        auth_header = getattr(exc, "auth_header", None)
        return Response(
            error.body(), status=error.status, headers={"WWW-Authenticate": auth_header} if auth_header else None
        )
    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    error = GatewayError(500, "The gateway failed to handle this request.", type="server_error", code="internal_error")
    return Response(error.body(), status=500)


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


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return GatewayError(404, f"No endpoint at {request.path}.", code="not_found").response()


def handler500(request: HttpRequest) -> JsonResponse:
    return GatewayError(
        500, "The gateway failed to handle this request.", type="server_error", code="internal_error"
    ).response()
