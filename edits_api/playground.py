"""The admin playground: an operator runs one edit or generation on a route through the same
service as the API (same checks, retries, fallback, breaker and ledger) and gets back what
the page shows: the inputs and the results as images, who served, how long it took, the raw answer.

Each run is a ledger row of channel "playground". The playground speaks for the operator, not for
a client: no API key is checked or charged, so a key's rate limits and budgets do not apply. A
disabled route, or a route without the plugin, is refused as clients would be, saying why.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from PIL import Image, UnidentifiedImageError

from edits_api import services, wire
from edits_api.accounting import ledger
from edits_api.errors import GatewayError
from edits_api.observability import current_request_id
from edits_api.routing import RouteInfo
from edits_api.uploads import too_large
from entities.catalog import Operation
from entities.models import DEFAULT_MAX_SIZE_UPLOAD, Route, RouteRef

logger = logging.getLogger(__name__)

CHANNEL = "playground"  # the ledger's channel of these runs (the API's is "api")
THUMBNAIL_SIDE = 384  # uploads are shown downscaled, so the page stays light whatever was sent
B64_KEPT = 48  # characters of each base64 image the raw JSON keeps; the images are shown anyway
_IMAGE_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"<svg", "image/svg+xml"),
    (b"<?xml", "image/svg+xml"),
)


@dataclass(frozen=True)
class PlaygroundInput:
    """What the operator filled in; text values as typed, checked by the gateway like a client's."""

    route_id: str
    operation: Operation
    prompt: str
    ref: str = ""  # one of the route's image model ids; '' keeps the route's order
    model: str = ""
    n: str = ""
    size: str = ""
    quality: str = ""
    response_format: str = "b64_json"
    images: tuple[UploadedFile, ...] = ()
    mask: UploadedFile | None = None


@dataclass(frozen=True)
class Picture:
    """One image on the page: a data: URL or a URL on the gateway (or the provider)."""

    src: str  # '' when the upload could not be shown
    caption: str


@dataclass(frozen=True)
class PlaygroundRun:
    status: int
    latency_ms: int
    request_id: str  # the ledger row's
    originals: list[Picture]
    results: list[Picture]
    raw_json: str  # the answer as a client gets it, base64 images shortened
    error: dict[str, Any] | None = None  # the envelope's "error" object
    image_model_id: str = ""
    provider: str = ""
    model: str = ""
    attempts: int = 0
    notices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def playground_run(*, run: PlaygroundInput, public_base: str, user: str) -> PlaygroundRun:
    """Serves the request as the route would, in a ledger row of the playground's channel; a
    GatewayError becomes the run's error."""
    use_case = services.image_edit if run.operation is Operation.EDIT else services.image_generate
    request_id = current_request_id()  # the admin request's: its log lines and its ledger row agree
    try:
        with ledger.recording(
            request_id=request_id, channel=CHANNEL, endpoint=run.operation.endpoint, route_id=run.route_id
        ) as draft:
            draft.request_bytes = sum(upload.size or 0 for upload in (*run.images, run.mask) if upload is not None)
            route = route_info(run.route_id, run.operation)
            served = use_case(
                route=route,
                request=_images_request(run, route),
                public_base=public_base,
                started=draft.started,
                draft=draft,
            )
            status, body = 200, served.body
    except GatewayError as error:
        status, body = error.status, error.body()
    outcome = draft.outcome
    latency_ms = int((time.monotonic() - draft.started) * 1000)
    logger.info("playground %s on route %s by %s: %d in %d ms", run.operation.endpoint, run.route_id, user,
                status, latency_ms)  # fmt: skip
    return PlaygroundRun(
        status=status,
        latency_ms=latency_ms,
        request_id=request_id,
        originals=_originals(run) if run.operation is Operation.EDIT else [],
        results=[_result_picture(item, index) for index, item in enumerate(body.get("data") or [], 1)],
        raw_json=json.dumps(_shortened(body), indent=2, ensure_ascii=False),
        error=body.get("error"),
        image_model_id=outcome.image_model.id if outcome.image_model else "",
        provider=outcome.image_model.provider if outcome.image_model else "",
        model=outcome.model,
        attempts=outcome.attempts,
        notices=list(outcome.notices),
    )


def route_info(route_id: str, operation: Operation) -> RouteInfo:
    """The route as the request path sees it, read now (not from the per-worker snapshot), or the
    404 a client would get from it."""
    route = Route.objects.filter(pk=route_id).first()
    if route is None:
        raise GatewayError(404, f"No route '{route_id}'.", param="route", code="route_not_found")
    if not route.enabled:
        raise GatewayError(
            404, f"Route '{route_id}' is disabled: clients get 404 route_not_found from it.", param="route",
            code="route_not_found",
        )  # fmt: skip
    if not route.plugin(operation).enabled:
        raise GatewayError(
            404, f"Route '{route_id}' has no images {operation.value} plugin switched on, so it does not serve "
            f"{operation.endpoint}.", param="route", code="route_not_found",
        )  # fmt: skip
    refs: dict[str, list[Any]] = {RouteRef.EDIT: [], RouteRef.GENERATION: []}
    for ref in RouteRef.objects.filter(route=route).select_related("image_model").order_by("position", "id"):
        refs[ref.plugin].append(ref.image_model)
    return RouteInfo(route=route, prefix="", edit_refs=refs[RouteRef.EDIT], generation_refs=refs[RouteRef.GENERATION])


def _images_request(run: PlaygroundInput, route: RouteInfo) -> wire.ImagesRequest:
    """The request a client sending these values would make, through the same wire checks."""
    values = {
        "prompt": run.prompt,
        "model": run.model.strip(),
        "provider": run.ref,
        "n": run.n.strip(),
        "size": run.size.strip(),
        "quality": run.quality,
        "response_format": run.response_format,
    }
    if run.operation is Operation.GENERATION:
        body: dict[str, Any] = {k: v for k, v in values.items() if v or k == "prompt"}
        if isinstance(body.get("n"), str) and body["n"].isdigit():
            body["n"] = int(body["n"])  # a form sends text; JSON clients send a number
        return wire.generation_request(body)
    limit = route.plugin(Operation.EDIT).max_size_upload or DEFAULT_MAX_SIZE_UPLOAD
    if sum(upload.size or 0 for upload in (*run.images, run.mask) if upload is not None) > limit:
        raise too_large(limit)
    files: dict[str, list[UploadedFile]] = {"image": list(run.images)} if run.images else {}
    if run.mask is not None:
        files["mask"] = [run.mask]
    return wire.edit_request({k: [v] for k, v in values.items() if v or k == "prompt"}, files)


def _originals(run: PlaygroundInput) -> list[Picture]:
    pictures = [_thumbnail(upload, f"image {index}") for index, upload in enumerate(run.images, 1)]
    if run.mask is not None:
        pictures.append(_thumbnail(run.mask, "mask"))
    return pictures


def _thumbnail(upload: UploadedFile, label: str) -> Picture:
    """A downscaled PNG of an upload, or an empty picture saying it is not an image."""
    caption = f"{label}: {upload.name} ({_kilobytes(upload.size or 0)})"
    try:
        upload.seek(0)
        with Image.open(upload) as image:
            width, height = image.size
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.convert("RGBA").save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return Picture(src="", caption=f"{caption}, not an image that can be shown")
    finally:
        upload.seek(0)
    return Picture(src=_data_url(buffer.getvalue(), "image/png"), caption=f"{caption}, {width}×{height}")


def _result_picture(item: dict[str, Any], index: int) -> Picture:
    if item.get("b64_json"):
        try:
            data = base64.b64decode(item["b64_json"])
        except ValueError:
            return Picture(src="", caption=f"result {index}: base64 that does not decode")
        content_type = _sniff(data)
        return Picture(
            src=_data_url(data, content_type), caption=f"result {index}: {content_type}, {_kilobytes(len(data))}"
        )
    url = str(item.get("url") or "")
    if url.startswith(("https://", "http://")):
        return Picture(src=url, caption=f"result {index}: by URL")
    return Picture(src="", caption=f"result {index}: no image")


def _sniff(data: bytes) -> str:
    head = data[:16]
    for magic, content_type in _IMAGE_MAGIC:
        if head.startswith(magic) and (magic != b"RIFF" or data[8:12] == b"WEBP"):
            return content_type
    return "image/png"


def _data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _shortened(body: dict[str, Any]) -> dict[str, Any]:
    """The answer with each base64 image cut to its first characters and its length."""
    shown = copy.deepcopy(body)
    for item in shown.get("data") or []:
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if isinstance(encoded, str) and len(encoded) > B64_KEPT:
            item["b64_json"] = f"{encoded[:B64_KEPT]}… ({len(encoded)} characters)"
    return shown
