"""xAI (Grok) image generation: `POST {base}/images/generations` with xAI's own fields.

Checked against xAI's OpenAPI description shipped in xai-org/xai-sdk-ts (`spec/openapi.json`:
GenerateImageRequest, ImageAspectRatio, ImageResolution, GeneratedImageResponse, MediaUsage,
`/v1/image-generation-models`) and its `src/types.ts` (quality low|medium|auto on
grok-imagine-image-2.0). xAI has no `size`, `style`, `background`, `output_format` or
`output_compression`: OpenAI's `size` becomes `aspect_ratio` plus `resolution`, the rest is
refused with a 400 naming the field unless it asks for what xAI does anyway.
"""

from __future__ import annotations

import math
import time
from typing import Any

from edits_api.errors import GatewayError, invalid
from edits_api.providers import http, shape, sizes
from edits_api.providers.base import Connection, ImageItem, ImageRequest, ImageResult, ProbeTarget
from edits_api.providers.refusal import GenerationOnlyAdapter, refuse_what_cannot_be_carried

ASPECT_RATIOS = (
    "1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9", "1:2", "2:1",
    "21:9", "5:2",
)  # fmt: skip
# ImageResolution, by the long side it renders at.
RESOLUTIONS = (("1k", 1024), ("1.5k", 1536), ("2k", 2048))
# xAI's quality tiers (ImagePricingTier); the seed page's values mapped as for GPT image models.
QUALITIES = {"low": "low", "medium": "medium", "high": "high", "standard": "medium", "hd": "high"}


def size_fields(size: str | None, provider_name: str) -> dict[str, str]:
    """OpenAI's size as xAI's aspect_ratio and resolution (nearest by the long side, at most 2k)."""
    parsed = sizes.parse_size(size)
    if parsed is None:
        return {}
    width, height = parsed
    aspect = sizes.matching_ratio(width, height, ASPECT_RATIOS, provider_name)
    long_side = max(width, height)
    if long_side > RESOLUTIONS[-1][1] * 1.25:
        raise invalid(f"{provider_name} renders at most 2k (about 2048 px on the long side); {size} is larger.", "size")
    resolution = min(RESOLUTIONS, key=lambda item: abs(math.log(item[1] / long_side)))[0]
    return {"aspect_ratio": aspect, "resolution": resolution}


class XAIAdapter(GenerationOnlyAdapter):
    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        self.body(connection, request)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        body = self.body(connection, request)
        payload = http.send_json(
            connection,
            "POST",
            f"{connection.base_url}/images/generations",
            headers=_auth(connection),
            json_body=body,
        )
        return _result(connection, payload)

    def body(self, connection: Connection, request: ImageRequest) -> dict[str, Any]:
        """xAI's request for ours; what xAI cannot carry is a 400 naming our field."""
        name = connection.provider_name
        refuse_what_cannot_be_carried(name, request, quality_setting=True)
        if request.output_format not in (None, "jpeg"):
            raise invalid(f"{name} answers JPEG images, not {request.output_format!r}.", "output_format")
        if request.output_compression is not None:
            raise invalid(f"{name} has no output_compression setting.", "output_compression")
        body: dict[str, Any] = {"model": request.model, "prompt": request.prompt, "n": request.n}
        body.update(size_fields(request.size, name))
        if request.quality not in (None, "auto"):
            quality = QUALITIES.get(str(request.quality))
            if quality is None:
                raise invalid(f"{name} takes quality low, medium, high or auto, not {request.quality!r}.", "quality")
            body["quality"] = quality
        # Ask for what the client wants; without a wish, bytes (the gateway's default answer).
        body["response_format"] = request.response_format or "b64_json"
        if request.user:
            body["user"] = request.user
        return body

    def probe_target(self, connection: Connection) -> ProbeTarget:
        return ProbeTarget(f"{connection.base_url}/image-generation-models", _auth(connection), "its image model list")


def _auth(connection: Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {connection.token}", "Accept": "application/json"}


def _result(connection: Connection, payload: dict[str, Any]) -> ImageResult:
    block_reason = payload.get("block_reason")
    if isinstance(block_reason, str) and block_reason:
        raise GatewayError(
            400,
            f"{connection.provider_name}'s moderation refused this request: {block_reason}.",
            code="moderation_blocked",
        )
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise http.bad_response(connection, "no `data` list of images")
    items = []
    for entry in data:
        if not isinstance(entry, dict):
            raise http.bad_response(connection, "an image entry is not an object")
        if entry.get("respect_moderation") is False:  # xAI's flag on media its moderation withheld
            raise GatewayError(
                400, f"{connection.provider_name}'s moderation withheld the image.", code="moderation_blocked"
            )
        url, b64_json = _text(entry.get("url")), _text(entry.get("b64_json"))
        if url is None and b64_json is None:
            raise http.bad_response(connection, "an image entry has neither `url` nor `b64_json`")
        mime_type = _text(entry.get("mime_type"))
        items.append(
            ImageItem(
                url=url,
                b64_json=b64_json,
                # Grok 2 rewrites prompts and says so; grok-imagine answers "".
                revised_prompt=_text(entry.get("revised_prompt")),
                content_type=mime_type if mime_type and mime_type.startswith("image/") else "image/jpeg",
            )
        )
    # MediaUsage carries OpenAI's token fields only for token-billed models; per-image billing
    # (cost_in_usd_ticks alone) has no tokens to report.
    usage = shape.normalized_usage(payload.get("usage"), text_only_input=True)
    return ImageResult(created=int(time.time()), items=items, usage=usage)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
