"""HTTP endpoints of the image API; thin: resolve the route, check the key, call the service."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from edits_api import idempotency, metrics, results, services
from edits_api.auth import authenticate
from edits_api.errors import GatewayError
from edits_api.models import UsageRecord
from edits_api.resilience import RetryPolicy
from edits_api.routing import KeyInfo, RouteInfo, route_table
from edits_api.schema import EDIT_DESCRIPTION, EDIT_RESPONSES, ImageEditSerializer
from edits_api.uploads import Upload, declared_length, multipart_upload
from edits_api.usage import usage_save

logger = logging.getLogger(__name__)


class ImagesEndpoint(APIView):
    """Shared by the image endpoints: route resolution before the body is read, and usage records."""

    endpoint = ""  # "edits" or "generations"
    route: RouteInfo | None = None
    key: KeyInfo | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.started = time.monotonic()
        self.outcome = services.Outcome()
        response = super().dispatch(request, *args, **kwargs)
        self._record(request, response, self.started)
        return response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        match = route_table().match(request.get_host(), request.path)
        expected = f"/v1/images/{self.endpoint}"
        if match is None or match[1].rstrip("/") != expected or not self._plugin_on(match[0]):
            raise GatewayError(
                404,
                f"No route serves {self.endpoint} at {request.get_host()}{request.path}.",
                code="route_not_found",
            )
        self.route = match[0]
        if request.method != "POST":
            raise GatewayError(
                405,
                f"{request.method} is not allowed here; use POST.",
                code="method_not_allowed",
                headers={"Allow": "POST"},
            )
        self.key = authenticate(request._request, self.route)

    def _plugin_on(self, route: RouteInfo) -> bool:
        raise NotImplementedError

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in self._served_headers().items():
            response.setdefault(name, value)
        return response

    def _served_headers(self) -> dict[str, str]:
        """Which route and image model served, and after how many provider calls."""
        headers = {}
        if self.route is not None:
            headers["X-Gateway-Route"] = self.route.route.id
        if self.outcome.image_model is not None:
            headers["X-Gateway-Image-Model"] = self.outcome.image_model.id
            headers["X-Gateway-Attempts"] = str(self.outcome.attempts)
        return headers

    def _record(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        """One usage row per request; a failure to record is logged, never turned into an error."""
        body = getattr(response, "data", None)
        error = body.get("error") if isinstance(body, dict) else None
        outcome = self.outcome
        metrics.observe(
            endpoint=self.endpoint,
            route=self.route.route.id if self.route else "",
            image_model=self.outcome.image_model.id if self.outcome.image_model else "",
            status=response.status_code,
            seconds=time.monotonic() - started,
            attempts=self.outcome.attempts,
            images=self.outcome.images,
        )
        record = UsageRecord(
            endpoint=self.endpoint,
            route_id=self.route.route.id if self.route else "",
            image_model_id=outcome.image_model.id if outcome.image_model else "",
            api_key_id=self.key.id if self.key else "",
            provider=outcome.image_model.provider if outcome.image_model else "",
            model=outcome.model[:200],
            status=response.status_code,
            error_code=(error.get("code") or "")[:64] if isinstance(error, dict) else "",
            images=outcome.images,
            request_bytes=_safe_length(request),
            latency_ms=int((time.monotonic() - started) * 1000),
            attempts=outcome.attempts,
            usage=outcome.usage,
        )
        usage_save(record)


def _safe_length(request: HttpRequest) -> int:
    try:
        return declared_length(request) or 0
    except GatewayError:
        return 0


class EditsView(ImagesEndpoint):
    endpoint = "edits"

    def _plugin_on(self, route: RouteInfo) -> bool:
        return bool(route.route.edit_plugin_enabled)

    @extend_schema(
        operation_id="createImageEdit",
        summary="Edit images",
        description=EDIT_DESCRIPTION,
        tags=["Images"],
        request={"multipart/form-data": ImageEditSerializer},
        responses=EDIT_RESPONSES,
    )
    def post(self, request: Request) -> Response:
        assert self.route is not None
        route = self.route.route
        with multipart_upload(request._request, limit=route.max_size_upload) as upload:
            idempotency_key = request.headers.get("Idempotency-Key")
            if idempotency_key is None:
                return Response(self._edit(request, upload))
            answer = idempotency.run_once(
                scope=f"key:{self.key.id}" if self.key else f"route:{route.id}",
                key=idempotency_key,
                fingerprint=idempotency.fingerprint(upload.fields, upload.files),
                wait_until=self.started + route.edit_deadline_ms / 1000,
                run=lambda: self._edit(request, upload),
                served_headers=self._served_headers,
            )
            return Response(answer.body, status=answer.status, headers=answer.headers)

    def _edit(self, request: Request, upload: Upload) -> dict[str, Any]:
        assert self.route is not None
        route = self.route.route
        result, provider, response_format = services.image_edit(
            refs=self.route.edit_refs,
            fields=upload.fields,
            files=upload.files,
            fallback=route.edit_fallback,
            fallback_named=route.edit_fallback_named,
            policy=RetryPolicy(route.edit_retries, self.started + route.edit_deadline_ms / 1000),
            outcome=self.outcome,
        )
        body = results.answer(result, response_format=response_format, request=request._request, connection=provider)
        self.outcome.images = len(body["data"])
        self.outcome.usage = body.get("usage")
        return body


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, when configured) answer; 503 naming what failed."""
    failed = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        failed.append("database")
    if settings.REDIS_URL:
        try:
            cache.get("readyz")
        except Exception:  # any client error means Redis is not usable
            failed.append("redis")
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ready"})
