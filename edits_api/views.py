"""HTTP endpoints of the image API; thin: resolve the route, check the key, call the service."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from edits_api import idempotency, metrics, results, services, wire
from edits_api.auth import authenticate
from edits_api.errors import GatewayError
from edits_api.models import UsageRecord
from edits_api.resilience import Outcome
from edits_api.routing import KeyInfo, RouteInfo, route_table
from edits_api.schema import (
    EDIT_DESCRIPTION,
    GENERATION_DESCRIPTION,
    IMAGES_RESPONSES,
    ImageEditSerializer,
    ImageGenerationSerializer,
)
from edits_api.uploads import declared_length, multipart_upload
from edits_api.usage import usage_save
from edits_api.wire import ImagesRequest
from entities.catalog import Operation
from entities.models import DEFAULT_MAX_SIZE_UPLOAD
from entities.plugins import PluginConfig

logger = logging.getLogger(__name__)


class ImagesEndpoint(APIView):
    """Shared by the image endpoints: route resolution before the body is read, and usage records."""

    operation: Operation
    route: RouteInfo | None = None
    key: KeyInfo | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.started = time.monotonic()
        self.outcome = Outcome()
        response = super().dispatch(request, *args, **kwargs)
        self._record(request, response, self.started)
        return response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        match = route_table().match(request.get_host(), request.path)
        endpoint = self.operation.endpoint
        if match is None or match[1].rstrip("/") != f"/v1/images/{endpoint}" or not self._plugin(match[0]).enabled:
            raise GatewayError(
                404, f"No route serves {endpoint} at {request.get_host()}{request.path}.", code="route_not_found"
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

    def _plugin(self, route: RouteInfo) -> PluginConfig:
        return route.route.plugin(self.operation)

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
        if self.outcome.notices:
            headers["X-Gateway-Notice"] = "; ".join(self.outcome.notices)
        return headers

    def _serve(
        self, request: Request, images_request: ImagesRequest, fingerprint: Callable[[], str]
    ) -> HttpResponseBase:
        """Runs the service once, or replays the first answer for a repeated Idempotency-Key."""
        assert self.route is not None
        route = self.route.route
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is None:
            served = self._call(request, images_request)
            return _image_response(served.body) if served.decode else Response(served.body)

        def run() -> dict[str, Any]:
            return self._call(request, images_request).body

        answer = idempotency.run_once(
            # The key and the route, so one key's answer is never replayed on another route.
            scope=f"key:{self.key.id}|route:{route.id}" if self.key else f"route:{route.id}",
            key=idempotency_key,
            fingerprint=fingerprint(),
            wait_until=self.started + self._plugin(self.route).deadline_ms / 1000,
            run=run,
            served_headers=self._served_headers,
        )
        if answer.status == 200 and self._plugin(self.route).decode and len(answer.body.get("data") or []) == 1:
            response: HttpResponseBase = _image_response(answer.body)
            for name, value in answer.headers.items():
                response[name] = value
            return response
        return Response(answer.body, status=answer.status, headers=answer.headers)

    def _call(self, request: Request, images_request: ImagesRequest) -> services.Served:
        assert self.route is not None
        use_case = services.image_edit if self.operation is Operation.EDIT else services.image_generate
        return use_case(
            route=self.route,
            request=images_request,
            public_base=request.build_absolute_uri("/").rstrip("/"),
            started=self.started,
            outcome=self.outcome,
        )

    def _record(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        """One usage row per request; a failure to record is logged, never turned into an error."""
        body = getattr(response, "data", None)
        error = body.get("error") if isinstance(body, dict) else None
        outcome = self.outcome
        metrics.observe(
            endpoint=self.operation.endpoint,
            route=self.route.route.id if self.route else "",
            image_model=outcome.image_model.id if outcome.image_model else "",
            status=response.status_code,
            seconds=time.monotonic() - started,
            attempts=outcome.attempts,
            images=outcome.images,
        )
        record = UsageRecord(
            endpoint=self.operation.endpoint,
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


def _image_response(body: dict[str, Any]) -> HttpResponse:
    data, content_type = results.decoded_image(body)
    return HttpResponse(data, content_type=content_type)


def _safe_length(request: HttpRequest) -> int:
    try:
        return declared_length(request) or 0
    except GatewayError:
        return 0


class EditsView(ImagesEndpoint):
    operation = Operation.EDIT

    @extend_schema(
        operation_id="createImageEdit",
        summary="Edit images",
        description=EDIT_DESCRIPTION,
        tags=["Images"],
        request={"multipart/form-data": ImageEditSerializer},
        responses=IMAGES_RESPONSES,
    )
    def post(self, request: Request) -> HttpResponseBase:
        assert self.route is not None
        limit = self._plugin(self.route).max_size_upload or DEFAULT_MAX_SIZE_UPLOAD
        with multipart_upload(request._request, limit=limit) as upload:
            images_request = wire.edit_request(upload.fields, upload.files)
            return self._serve(request, images_request, lambda: idempotency.fingerprint(upload.fields, upload.files))


class GenerationsView(ImagesEndpoint):
    operation = Operation.GENERATION
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="createImage",
        summary="Generate images",
        description=GENERATION_DESCRIPTION,
        tags=["Images"],
        request={"application/json": ImageGenerationSerializer},
        responses=IMAGES_RESPONSES,
    )
    def post(self, request: Request) -> HttpResponseBase:
        images_request = wire.generation_request(request.data)
        canonical = json.dumps(request.data, sort_keys=True)
        return self._serve(request, images_request, lambda: idempotency.fingerprint({"json": [canonical]}, {}))


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
