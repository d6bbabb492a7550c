"""HTTP endpoints of the image API; thin: resolve the route, check the key, call the service."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from edits_api import idempotency, results, services, wire
from edits_api.accounting import admission, ledger
from edits_api.auth import authenticate
from edits_api.errors import GatewayError, as_gateway_error
from edits_api.observability import current_request_id
from edits_api.routing import KeyInfo, RouteInfo, route_table
from edits_api.schema import (
    EDIT_DESCRIPTION,
    GENERATION_DESCRIPTION,
    IMAGES_RESPONSES,
    ImageEditSerializer,
    ImageGenerationSerializer,
)
from edits_api.uploads import declared_length, json_body, multipart_upload
from edits_api.wire import ImagesRequest
from entities.catalog import Operation
from entities.models import DEFAULT_MAX_SIZE_UPLOAD
from entities.plugins import PluginConfig

logger = logging.getLogger(__name__)


class ImagesEndpoint(APIView):
    """Shared by the image endpoints: route resolution before the body is read, and the ledger row.

    DRF only describes these views (the OpenAPI schema); a request skips its dispatch (Request
    wrapping, negotiation, renderers), which was about 8% of an edit's instructions. Every error
    still answers in the envelope through `errors.as_gateway_error`, as DRF's handler does elsewhere.
    """

    operation: Operation
    post: Callable[[HttpRequest], HttpResponseBase]  # each endpoint's own, documented by @extend_schema
    route: RouteInfo | None = None
    key: KeyInfo | None = None
    host = ""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.started = time.monotonic()
        endpoint = self.operation.endpoint
        with ledger.recording(request_id=current_request_id(), channel="api", endpoint=endpoint) as draft:
            self.draft, self.outcome = draft, draft.outcome
            draft.request_bytes = _safe_length(request)
            try:
                self._admit(request)
                response = self.post(request)
            except Exception as exc:
                error = as_gateway_error(exc, type(self).__name__)
                draft.maybe_billed = error.outcome_unknown  # the ledger's cost: unknown, not 0
                response = JSONAnswer(error.body(), status=error.status, headers=error.headers)
            for name, value in {**self._served_headers(), **admission.rate_headers(draft, self.key)}.items():
                response.setdefault(name, value)
            _answered(draft, response)
            if isinstance(response, HttpResponse):  # sized, not chunked (CommonMiddleware's job elsewhere)
                response.setdefault("Content-Length", str(draft.response_bytes))
        return response

    def _admit(self, request: HttpRequest) -> None:
        """The route this host and path reach, the method, and the route's API key, before the body."""
        self.host = request.get_host()  # validated against ALLOWED_HOSTS, once per request
        match = route_table().match(self.host, request.path)
        endpoint = self.operation.endpoint
        if match is None or match[1].rstrip("/") != f"/v1/images/{endpoint}" or not self._plugin(match[0]).enabled:
            raise GatewayError(404, f"No route serves {endpoint} at {self.host}{request.path}.", code="route_not_found")
        self.route = match[0]
        self.draft.route_id = self.route.route.id
        if request.method != "POST":
            raise GatewayError(
                405,
                f"{request.method} is not allowed here; use POST.",
                code="method_not_allowed",
                headers={"Allow": "POST"},
            )
        self.key = authenticate(request, self.route)
        self.draft.api_key_id = self.key.id if self.key else ""

    def _plugin(self, route: RouteInfo) -> PluginConfig:
        return route.plugin(self.operation)

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
        self, request: HttpRequest, images_request: ImagesRequest, fingerprint: Callable[[], str]
    ) -> HttpResponseBase:
        """Runs the service once, or replays the first answer for a repeated Idempotency-Key."""
        assert self.route is not None
        route = self.route.route
        # From META: request.headers builds a mapping of every header (20 us) for this one.
        idempotency_key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if idempotency_key is None:
            served = self._call(request, images_request)
            return _image_response(served.body) if served.decode else JSONAnswer(served.body)

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
        return JSONAnswer(answer.body, status=answer.status, headers=answer.headers)

    def _call(self, request: HttpRequest, images_request: ImagesRequest) -> services.Served:
        assert self.route is not None
        use_case = services.image_edit if self.operation is Operation.EDIT else services.image_generate
        return use_case(
            route=self.route,
            request=images_request,
            public_base=f"{request.scheme}://{self.host}",  # what build_absolute_uri("/") starts with
            started=self.started,
            draft=self.draft,
            key=self.key,
        )


class JSONAnswer(HttpResponse):
    """A JSON answer as DRF's JSONRenderer wrote it (compact UTF-8), keeping its body for the ledger."""

    def __init__(self, data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> None:
        super().__init__(wire.answer_json(data), content_type="application/json", status=status, headers=headers)
        self.data = data


def _answered(draft: ledger.Draft, response: HttpResponseBase) -> None:
    """What the ledger row needs from the answer: status, error code and size."""
    body = response.data if isinstance(response, JSONAnswer) else None
    error = body.get("error") if isinstance(body, dict) else None
    draft.status = response.status_code
    draft.error_code = str(error.get("code") or "") if isinstance(error, dict) else ""
    if isinstance(response, HttpResponse):
        draft.response_bytes = len(response.content)


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
    def post(self, request: HttpRequest) -> HttpResponseBase:
        assert self.route is not None
        limit = self._plugin(self.route).max_size_upload or DEFAULT_MAX_SIZE_UPLOAD
        with multipart_upload(request, limit=limit) as upload:
            images_request = wire.edit_request(upload.fields, upload.files)
            return self._serve(request, images_request, lambda: idempotency.fingerprint(upload.fields, upload.files))


class GenerationsView(ImagesEndpoint):
    operation = Operation.GENERATION

    @extend_schema(
        operation_id="createImage",
        summary="Generate images",
        description=GENERATION_DESCRIPTION,
        tags=["Images"],
        request={"application/json": ImageGenerationSerializer},
        responses=IMAGES_RESPONSES,
    )
    def post(self, request: HttpRequest) -> HttpResponseBase:
        body = json_body(request)
        images_request = wire.generation_request(body)
        canonical = json.dumps(body, sort_keys=True)
        return self._serve(request, images_request, lambda: idempotency.fingerprint({"json": [canonical]}, {}))
