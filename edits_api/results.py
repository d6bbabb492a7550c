"""Turning a provider's result into the OpenAI answer, in the response format the client asked for.

Bytes become a signed, expiring URL on the gateway itself (response_format=url); a provider URL
becomes inline base64 (response_format=b64_json).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.urls import reverse

from edits_api import turns
from edits_api.errors import GatewayError
from edits_api.providers import http
from edits_api.providers.base import Connection, ImageItem, ImageResult

logger = logging.getLogger(__name__)
_SALT = "gateway-image-url"
IMAGE_FOLDER = "images/"
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/svg+xml": "svg",
}
_TYPES = {extension: content_type for content_type, extension in _EXTENSIONS.items()}


def store_image(data: bytes, content_type: str) -> str:
    """Saves the image in the configured storage and returns its storage name; a failed write
    (disk full, storage down) leaves no partial file behind and raises OSError."""
    name = f"{IMAGE_FOLDER}{uuid.uuid4().hex}.{_EXTENSIONS.get(content_type, 'png')}"
    try:
        with turns.waiting():  # a remote storage (S3) is a network call
            return default_storage.save(name, ContentFile(data))
    except Exception as exc:  # storages raise OSError locally, their own errors remotely (S3)
        with contextlib.suppress(Exception):
            default_storage.delete(name)
        raise OSError(f"the image storage refused the write: {exc}") from exc


def signed_url(public_base: str, name: str) -> str:
    """An absolute link on the gateway (`public_base`: scheme and host the request came in on)."""
    token = signing.TimestampSigner(salt=_SALT).sign(name.removeprefix(IMAGE_FOLDER))
    return public_base + reverse("signed-image", args=[token])


def serve_signed_image(request: HttpRequest, token: str) -> FileResponse:
    """GET /images/<token>: the stored image while the signature is valid; no key needed."""
    try:
        name = IMAGE_FOLDER + signing.TimestampSigner(salt=_SALT).unsign(token, max_age=settings.SIGNED_URL_MAX_AGE)
    except signing.SignatureExpired:
        raise Http404("This image link has expired.") from None
    except signing.BadSignature:
        raise Http404("This image link is not valid.") from None
    with turns.waiting():  # a remote storage (S3) is a network call: others run meanwhile
        if "/" in name.removeprefix(IMAGE_FOLDER) or not default_storage.exists(name):
            raise Http404("This image is gone.")
        stored = default_storage.open(name, "rb")
        stored.seek(0)  # S3 downloads the object on first access: here, not while the answer is written
    extension = name.rsplit(".", 1)[-1]
    response = FileResponse(stored, content_type=_TYPES.get(extension, "image/png"))
    response["Cache-Control"] = f"private, max-age={settings.SIGNED_URL_MAX_AGE}"
    # An SVG answered by a provider must not run scripts on the gateway's origin.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"<svg", "image/svg+xml"),
    (b"<?xml", "image/svg+xml"),
)


def content_type_of(data: bytes) -> str:
    """An image's media type from its first bytes (what `decode` answers with)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), "application/octet-stream")


def decoded_image(body: dict[str, Any]) -> tuple[bytes, str]:
    """The single inline image of an answer, as bytes and media type."""
    data = base64.b64decode(body["data"][0]["b64_json"])
    return data, content_type_of(data)


def _decode(item: ImageItem, provider_name: str) -> bytes:
    try:
        return base64.b64decode(item.b64_json or "", validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(
            502, f"{provider_name} returned an image that is not valid base64.", type="upstream_error",
            code="upstream_bad_response",
        ) from None  # fmt: skip


# Said in a header when the images could not be stored and come inline instead of as links.
STORAGE_NOTICE = "storage_unavailable: the images are inline as b64_json instead of links"


def answer(
    result: ImageResult,
    *,
    response_format: str | None,
    public_base: str,
    connection: Connection,
    notices: list[str],
) -> dict[str, Any]:
    """OpenAI's ImagesResponse: created, data (url, b64_json, revised_prompt all present), the
    provider's top-level background/output_format/quality/size when it answered them, and usage.

    The provider was paid by now, so an image storage that fails does not lose the images: they are
    answered inline, and `notices` says so."""
    data = []
    items = http.inline_urls(connection, result.items) if response_format == "b64_json" else result.items
    for item in items:
        url, b64 = item.url, item.b64_json
        if response_format == "url" and b64 is not None:
            image = _decode(item, connection.provider_name)
            try:
                name = store_image(image, item.content_type or "image/png")
            except OSError as exc:
                logger.error("answering images inline: %s", exc)
                if STORAGE_NOTICE not in notices:
                    notices.append(STORAGE_NOTICE)
            else:
                url, b64 = signed_url(public_base, name), None
        data.append({"url": url, "b64_json": b64, "revised_prompt": item.revised_prompt})
    body: dict[str, Any] = {"created": result.created or int(time.time()), "data": data}
    for name in ("background", "output_format", "quality", "size"):
        if getattr(result, name) is not None:
            body[name] = getattr(result, name)
    if result.usage is not None:
        body["usage"] = result.usage
    return body
