"""Luma (Dream Machine, Photon models): asynchronous image generation.

`POST {base}/dream-machine/v1/generations/image` creates one generation per image, then
`GET .../generations/{id}` is polled, with a growing but bounded interval and never past the
connection's timeout, until its state is `completed` (the image URL is `assets.image`) or `failed`
(`failure_reason`). Checked against lumalabs/lumaai-python (`types/generations/image_create_params.py`,
`types/generation.py`, `resources/generations/image.py`, `_client.py`: base URL
`https://api.lumalabs.ai/dream-machine/v1`, `Authorization: Bearer`, `resources/credits.py`).
Luma takes no size, only an aspect ratio: a `size` is carried as its ratio and Luma picks the pixels.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from edits_api import turns
from edits_api.errors import GatewayError, invalid
from edits_api.providers import http, sizes
from edits_api.providers.base import Connection, ImageItem, ImageRequest, ImageResult, ProbeTarget
from edits_api.providers.billing import partly_billed
from edits_api.providers.refusal import GenerationOnlyAdapter, refuse_what_cannot_be_carried

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
FORMATS = {"jpeg": "jpg", "png": "png"}  # ours -> Luma's `format`
_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}
_API_PATH = "/dream-machine/v1"
PENDING_STATES = frozenset({"queued", "dreaming"})


class LumaAdapter(GenerationOnlyAdapter):
    # Seconds between polls: the first soon (Photon often takes a few seconds), then doubling up
    # to the cap, so a long generation costs few calls and a short one little waiting.
    first_poll_s = 0.25
    max_poll_s = 2.0

    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        self.body(connection, request)

    def body(self, connection: Connection, request: ImageRequest) -> dict[str, Any]:
        name = connection.provider_name
        refuse_what_cannot_be_carried(name, request, quality_setting=False)
        if request.output_format is not None and request.output_format not in FORMATS:
            raise invalid(f"{name} answers jpeg or png, not {request.output_format!r}.", "output_format")
        if request.output_compression is not None:
            raise invalid(f"{name} has no output_compression setting.", "output_compression")
        body: dict[str, Any] = {"prompt": request.prompt, "model": request.model}
        parsed = sizes.parse_size(request.size)
        if parsed is not None:
            body["aspect_ratio"] = sizes.matching_ratio(*parsed, ASPECT_RATIOS, name)
        if request.output_format is not None:
            body["format"] = FORMATS[request.output_format]
        return body

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        body = self.body(connection, request)
        deadline = time.monotonic() + connection.timeout_s
        api = _api(connection)
        headers = _auth(connection)
        # One generation per image: Luma's image endpoint makes one image per request.
        created: list[dict[str, Any]] = []
        try:
            for _ in range(max(request.n, 1)):
                answer = http.send_json(
                    connection, "POST", f"{api}/generations/image", headers=headers, json_body=body, deadline=deadline
                )
                created.append(_generation(connection, answer))
            finished = self.wait(connection, created, deadline)
        except GatewayError as error:
            if created:  # a created generation runs (and is billed) whatever happens to this call
                raise partly_billed(error, connection) from error
            raise
        content_type = _CONTENT_TYPES.get(body.get("format", "jpg"))
        items = [ImageItem(url=_image_url(connection, done), content_type=content_type) for done in finished]
        return ImageResult(created=int(time.time()), items=items)

    def wait(self, connection: Connection, generations: list[dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
        """Poll each generation until it completes; the first failure ends the wait."""
        api, headers = _api(connection), _auth(connection)
        done: dict[str, dict[str, Any]] = {}
        interval = self.first_poll_s
        while True:
            for generation in generations:
                if generation["id"] not in done and _settled(connection, generation):
                    done[generation["id"]] = generation
            if len(done) == len(generations):
                return [done[generation["id"]] for generation in generations]
            remaining = deadline - time.monotonic()
            if remaining <= interval:
                raise http.timeout_error(connection)  # the next look would come too late anyway
            with turns.waiting_long():
                time.sleep(interval)
            interval = min(interval * 2, self.max_poll_s)
            for index, generation in enumerate(generations):
                if generation["id"] not in done:
                    url = f"{api}/generations/{quote(generation['id'], safe='')}"
                    generations[index] = _generation(
                        connection, http.send_json(connection, "GET", url, headers=headers, deadline=deadline)
                    )

    def probe_target(self, connection: Connection) -> ProbeTarget:
        return ProbeTarget(f"{_api(connection)}/credits", _auth(connection), "its credit balance")


def _api(connection: Connection) -> str:
    """The API root: the catalog's base is the host; an operator may also give the full root."""
    base = connection.base_url.rstrip("/")
    return base if base.endswith(_API_PATH) else f"{base}{_API_PATH}"


def _auth(connection: Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {connection.token}", "Accept": "application/json"}


def _generation(connection: Connection, payload: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(payload.get("id"), str) or not payload["id"]:
        raise http.bad_response(connection, "a generation without an `id`")
    return payload


def _settled(connection: Connection, generation: dict[str, Any]) -> bool:
    """True once completed; a failure raises; anything else is still pending."""
    state = generation.get("state")
    if state == "completed":
        return True
    if state == "failed":
        raise _failure(connection, str(generation.get("failure_reason") or "no reason given"))
    return False


def _failure(connection: Connection, reason: str) -> GatewayError:
    reason = reason.replace(connection.token, "[redacted]") if connection.token else reason
    # Luma reports its safety refusals as failed generations ("Advanced moderation failed",
    # "400: failed to moderate image": lumalabs/ComfyUI-LumaAI-API issues 7 and 14).
    if "moderat" in reason.lower():
        return GatewayError(
            400, f"{connection.provider_name}'s moderation refused this request: {reason}", code="moderation_blocked"
        )
    return GatewayError(
        502,
        f"{connection.provider_name}'s generation failed: {reason}",
        type="upstream_error",
        code="upstream_error",
    )


def _image_url(connection: Connection, generation: dict[str, Any]) -> str:
    assets = generation.get("assets")
    url = assets.get("image") if isinstance(assets, dict) else None
    if not isinstance(url, str) or not url:
        raise http.bad_response(connection, "a completed generation without `assets.image`")
    return url
