"""Hive image generation, v3 API: `POST {base}/{vendor}/{model}` with `Authorization: Bearer`,
the request under `input` (`prompt`, `num_images`, `image_size: {width, height}`,
`output_format`, `output_quality`), image URLs back under `output[].url`.

Hive's docs (docs.thehive.ai "Image Generation APIs") name the v3 API, its models and its rules:
at most six images per prompt, the prompt moderated before and the images after, a flagged
prompt or image failing the whole call. The v3 field names are not in a public spec or SDK; they
follow the request bodies of independent v3 clients and are marked unverified in the README.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from edits_api.errors import GatewayError, invalid
from edits_api.providers import http, sizes
from edits_api.providers.base import Connection, ImageItem, ImageRequest, ImageResult
from edits_api.providers.refusal import GenerationOnlyAdapter, refuse_what_cannot_be_carried

MAX_IMAGES = 6
FORMATS = {"jpeg": "jpeg", "png": "png"}
_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
# Words in Hive's error message when its moderation failed the call.
_MODERATION_WORDS = ("moderat", "flagged", "nsfw", "unsafe")


class HiveAdapter(GenerationOnlyAdapter):
    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        self.body(connection, request)

    def body(self, connection: Connection, request: ImageRequest) -> dict[str, Any]:
        name = connection.provider_name
        refuse_what_cannot_be_carried(name, request, quality_setting=False)
        if request.n > MAX_IMAGES:
            raise invalid(f"{name} makes at most {MAX_IMAGES} images per request; ask for fewer.", "n")
        if request.output_format is not None and request.output_format not in FORMATS:
            raise invalid(f"{name} answers jpeg or png, not {request.output_format!r}.", "output_format")
        fields: dict[str, Any] = {"prompt": request.prompt, "num_images": request.n}
        parsed = sizes.parse_size(request.size)
        if parsed is not None:
            fields["image_size"] = {"width": parsed[0], "height": parsed[1]}
        if request.output_format is not None:
            fields["output_format"] = FORMATS[request.output_format]
        if request.output_compression is not None:
            fields["output_quality"] = request.output_compression
        return {"input": fields}

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        body = self.body(connection, request)
        url = f"{connection.base_url}/{quote(request.model, safe='/')}"
        headers = {"Authorization": f"Bearer {connection.token}", "Accept": "application/json"}
        try:
            payload = http.send_json(connection, "POST", url, headers=headers, json_body=body)
        except GatewayError as error:
            if error.status == 400 and any(word in error.message.lower() for word in _MODERATION_WORDS):
                raise GatewayError(400, error.message, code="moderation_blocked") from error
            raise
        content_type = _CONTENT_TYPES.get(body["input"].get("output_format", ""))
        return ImageResult(created=int(time.time()), items=_items(connection, payload, content_type))


def _items(connection: Connection, payload: dict[str, Any], content_type: str | None) -> list[ImageItem]:
    output = payload.get("output")
    if not isinstance(output, list) or not output:
        raise http.bad_response(connection, "no `output` list of images")
    items = []
    for entry in output:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url:
            raise http.bad_response(connection, "an output entry without `url`")
        items.append(ImageItem(url=url, content_type=content_type))
    return items
