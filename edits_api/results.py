"""Turning a provider's result into the OpenAI answer, in the response format the client asked for.

Bytes become a signed, expiring URL on the gateway itself (response_format=url); a provider URL
becomes inline base64 (response_format=b64_json).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.urls import reverse

from edits_api.errors import GatewayError
from edits_api.providers import http
from edits_api.providers.base import Connection, ImageItem, ImageResult

_SALT = "gateway-image-url"
IMAGE_FOLDER = "images/"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_TYPES = {extension: content_type for content_type, extension in _EXTENSIONS.items()}


def store_image(data: bytes, content_type: str) -> str:
    """Saves the image in the configured storage and returns its storage name."""
    extension = _EXTENSIONS.get(content_type, "png")
    return default_storage.save(f"{IMAGE_FOLDER}{uuid.uuid4().hex}.{extension}", ContentFile(data))


def signed_url(request: HttpRequest, name: str) -> str:
    token = signing.TimestampSigner(salt=_SALT).sign(name.removeprefix(IMAGE_FOLDER))
    return request.build_absolute_uri(reverse("signed-image", args=[token]))


def serve_signed_image(request: HttpRequest, token: str) -> FileResponse:
    """GET /images/<token>: the stored image while the signature is valid; no key needed."""
    try:
        name = IMAGE_FOLDER + signing.TimestampSigner(salt=_SALT).unsign(token, max_age=settings.SIGNED_URL_MAX_AGE)
    except signing.SignatureExpired:
        raise Http404("This image link has expired.") from None
    except signing.BadSignature:
        raise Http404("This image link is not valid.") from None
    if "/" in name.removeprefix(IMAGE_FOLDER) or not default_storage.exists(name):
        raise Http404("This image is gone.")
    extension = name.rsplit(".", 1)[-1]
    response = FileResponse(default_storage.open(name, "rb"), content_type=_TYPES.get(extension, "image/png"))
    response["Cache-Control"] = f"private, max-age={settings.SIGNED_URL_MAX_AGE}"
    return response


def _decode(item: ImageItem, provider_name: str) -> bytes:
    try:
        return base64.b64decode(item.b64_json or "", validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(
            502, f"{provider_name} returned an image that is not valid base64.", type="upstream_error",
            code="upstream_bad_response",
        ) from None  # fmt: skip


def answer(
    result: ImageResult,
    *,
    response_format: str | None,
    request: HttpRequest,
    connection: Connection,
) -> dict[str, Any]:
    """The OpenAI-shaped body: created, data (url, b64_json, revised_prompt all present), usage."""
    data = []
    for item in result.items:
        url, b64 = item.url, item.b64_json
        if response_format == "url" and b64 is not None:
            name = store_image(_decode(item, connection.provider_name), item.content_type or "image/png")
            url, b64 = signed_url(request, name), None
        elif response_format == "b64_json" and b64 is None and url:
            fetched, _content_type = http.fetch_image(connection, url)
            b64, url = base64.b64encode(fetched).decode(), None
        data.append({"url": url, "b64_json": b64, "revised_prompt": item.revised_prompt})
    body: dict[str, Any] = {"created": result.created or int(time.time()), "data": data}
    if result.usage is not None:
        body["usage"] = result.usage
    return body
