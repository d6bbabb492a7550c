"""The OpenAI images protocol, spoken by OpenAI and Cloud Temple: multipart edits, JSON generations."""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import quote

from requests_toolbelt import MultipartEncoder

from edits_api.providers import http
from edits_api.providers.base import Connection, ImageItem, ImageRequest, ImageResult, ProviderAdapter

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


class OpenAIAdapter(ProviderAdapter):
    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        """POST {base}/images/edits as multipart, files streamed from disk with a Content-Length."""
        fields: list[tuple[str, Any]] = [
            (name, str(value)) for name, value in self.fields(connection, request, edit=True).items()
        ]
        # Named as openai-python sends them: `image` for one file, `image[]` for each of several.
        image_field = "image" if len(request.images) == 1 else "image[]"
        with contextlib.ExitStack() as files:
            for image in request.images:
                fields.append((image_field, (image.filename, files.enter_context(image.open()), image.content_type)))
            if request.mask is not None:
                mask = request.mask
                fields.append(("mask", (mask.filename, files.enter_context(mask.open()), mask.content_type)))
            body = MultipartEncoder(fields=fields)
            payload = http.send_json(
                connection,
                "POST",
                self.url(connection, "edits"),
                headers={**self.auth(connection), "Content-Type": body.content_type},
                data=body,
            )
        return _result(connection, payload, request)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        """POST {base}/images/generations as JSON."""
        payload = http.send_json(
            connection,
            "POST",
            self.url(connection, "generations"),
            headers=self.auth(connection),
            json_body=self.fields(connection, request, edit=False),
        )
        return _result(connection, payload, request)

    def url(self, connection: Connection, endpoint: str) -> str:
        return f"{connection.base_url}/images/{endpoint}"

    def auth(self, connection: Connection) -> dict[str, str]:
        return {"Authorization": f"Bearer {connection.token}", "Accept": "application/json"}

    def fields(self, connection: Connection, request: ImageRequest, *, edit: bool) -> dict[str, Any]:
        return _fields(request, edit=edit)


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: OpenAI's images protocol on a deployment, an `api-key` header and an api-version.

    With api_version `v1` the URL is `{base}/v1/images/<endpoint>` and the deployment goes in `model`.
    """

    def url(self, connection: Connection, endpoint: str) -> str:
        version = connection.extra.get("api_version", "")
        if version == "v1":
            return f"{connection.base_url}/v1/images/{endpoint}?api-version=preview"
        deployment = quote(connection.extra.get("deployment_id", ""), safe="")
        return f"{connection.base_url}/deployments/{deployment}/images/{endpoint}?api-version={quote(version, safe='')}"

    def auth(self, connection: Connection) -> dict[str, str]:
        return {"api-key": connection.token, "Accept": "application/json"}

    def fields(self, connection: Connection, request: ImageRequest, *, edit: bool) -> dict[str, Any]:
        fields = _fields(request, edit=edit)
        if connection.extra.get("api_version") == "v1":
            fields["model"] = connection.extra.get("deployment_id") or request.model
        else:
            fields.pop("model", None)  # the deployment names the model
        return fields


def _fields(request: ImageRequest, *, edit: bool) -> dict[str, Any]:
    """The request's parameters that are set, as this protocol names them."""
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.model or None,
        "n": request.n,
        "size": request.size,
        "quality": request.quality,
        "background": request.background,
        "output_format": request.output_format,
        "output_compression": request.output_compression,
        "complexity": request.complexity,
        "frame_count": request.frame_count,
        "frame_duration_ms": request.frame_duration_ms,
        "safety_identifier": request.safety_identifier,
        "user": request.user,
    }
    if edit:
        fields["input_fidelity"] = request.input_fidelity
    else:
        # Generation-only parameters: OpenAI's edits endpoint has no style or moderation.
        fields["style"] = request.style
        fields["moderation"] = request.moderation
    # GPT image models answer 400 "Unknown parameter: 'response_format'"; only DALL·E takes it.
    if request.model.startswith("dall-e"):
        fields["response_format"] = request.response_format
    return {name: value for name, value in fields.items() if value is not None}


def _result(connection: Connection, payload: dict[str, Any], request: ImageRequest) -> ImageResult:
    """An ImagesResponse as an ImageResult; no `data` list, or no image in it, is a bad response."""
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise http.bad_response(connection, "no `data` list of images")
    output_format = payload.get("output_format") or request.output_format or "png"
    content_type = _CONTENT_TYPES.get(str(output_format).lower(), "image/png")
    items = []
    for entry in data:
        if not isinstance(entry, dict):
            raise http.bad_response(connection, "an image entry is not an object")
        url, b64_json = _text(entry.get("url")), _text(entry.get("b64_json"))
        if url is None and b64_json is None:
            raise http.bad_response(connection, "an image entry has neither `url` nor `b64_json`")
        items.append(
            ImageItem(
                url=url,
                b64_json=b64_json,
                revised_prompt=_text(entry.get("revised_prompt")),
                content_type=content_type if b64_json is not None else None,
            )
        )
    created = payload.get("created")
    usage = payload.get("usage")
    return ImageResult(
        created=created if isinstance(created, int) else int(time.time()),
        items=items,
        usage=usage if isinstance(usage, dict) else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
