"""Reading a multipart upload under the route's size limit, spooling files to disk.

The limit covers the whole body: a declared Content-Length above it is refused before reading,
and a chunked or lying body is counted while it streams and cut off at the limit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, UnreadablePostError
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from edits_api.errors import GatewayError

logger = logging.getLogger(__name__)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than this route's limit of {limit} bytes.",
        param="image",
        code="file_too_large",
    )


def body_stalled() -> GatewayError:
    return GatewayError(
        408,
        "The request body stopped arriving; send it without long pauses.",
        code="request_timeout",
    )


class CappedStream:
    """Reads from the request body and raises 413 once more than `limit` bytes came."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        # Never ask for more than one byte past the limit, so an endless body stops early.
        allowed = self._limit + 1 - self.count
        try:
            chunk = self._stream.read(allowed if size is None or size < 0 else min(size, allowed))
        except (TimeoutError, UnreadablePostError) as exc:
            # Django wraps socket errors in UnreadablePostError; a TimeoutError is the server's
            # body-read timeout (gateway_project/gworker.py), anything else a broken connection.
            if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
                raise body_stalled() from None
            raise GatewayError(
                400, "The request body could not be read to its end.", code="invalid_request_body"
            ) from None
        self.count += len(chunk)
        if self.count > self._limit:
            raise too_large(self._limit)
        return chunk


def declared_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise GatewayError(400, "Content-Length is not a number.", code="invalid_request_body") from None
    if length < 0:
        raise GatewayError(400, "Content-Length is negative.", code="invalid_request_body")
    return length


def check_declared_length(request: HttpRequest, limit: int) -> None:
    length = declared_length(request)
    if length is not None and length > limit:
        raise too_large(limit)


def capped_body(request: HttpRequest, limit: int) -> CappedStream:
    """The body stream, counted. Chunked bodies are read from the server's decoded input."""
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and declared_length(request) is None:
        # Django reads nothing when there is no Content-Length; gunicorn has decoded the chunks.
        return CappedStream(request.META["wsgi.input"], limit)
    return CappedStream(request, limit)


@dataclass
class Upload:
    fields: dict[str, list[str]]
    files: dict[str, list[UploadedFile]]


@contextmanager
def multipart_upload(request: HttpRequest, *, limit: int) -> Iterator[Upload]:
    """Parses the multipart body; every spooled temporary file is closed (deleted) on exit."""
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise GatewayError(
            415,
            f"Send the edit as multipart/form-data, not {content_type.split(';')[0] or 'an empty body'}.",
            code="unsupported_media_type",
        )
    check_declared_length(request, limit)
    meta = dict(request.META)
    # Media types are case-insensitive; Django's parser only knows the lower-case spelling.
    meta["CONTENT_TYPE"] = "multipart/form-data" + content_type[len("multipart/form-data") :]
    if declared_length(request) is None:
        meta["CONTENT_LENGTH"] = str(limit)  # the parser skips bodies it believes empty
    stream = capped_body(request, limit)
    try:  # the parser refuses a missing or invalid boundary as soon as it is made
        parser = MultiPartParser(meta, stream, request.upload_handlers, request.encoding)  # type: ignore[arg-type]
    except MultiPartParserError as exc:
        raise GatewayError(400, f"The multipart body is malformed: {exc}", code="invalid_request_body") from None
    try:
        data, files = parser.parse()
    except GatewayError:
        parser._close_files()  # type: ignore[attr-defined]
        raise
    except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent) as exc:
        parser._close_files()  # type: ignore[attr-defined]
        raise GatewayError(
            413 if isinstance(exc, RequestDataTooBig) else 400, str(exc), code="invalid_request_body"
        ) from None
    except (MultiPartParserError, ValueError, UnicodeDecodeError) as exc:
        parser._close_files()  # type: ignore[attr-defined]
        raise GatewayError(400, f"The multipart body is malformed: {exc}", code="invalid_request_body") from None
    except OSError as exc:  # the spool folder is full or not writable
        parser._close_files()  # type: ignore[attr-defined]
        _close_partial_files(request)
        logger.error("upload not spooled: %s", exc)
        raise GatewayError(
            503,
            "The gateway cannot store this upload right now; retry shortly.",
            type="server_error",
            code="storage_unavailable",
            headers={"Retry-After": "30"},
        ) from None
    upload = Upload(
        fields={key: data.getlist(key) for key in data},
        files={key: files.getlist(key) for key in files},
    )
    try:
        _check_text(upload.fields, request.encoding or "utf-8")
        yield upload
    finally:
        for file_list in upload.files.values():
            for file in file_list:
                file.close()


def _close_partial_files(request: HttpRequest) -> None:
    """The file being written when the disk filled up: closing a spooled temporary file deletes it."""
    for handler in request.upload_handlers:
        partial = getattr(handler, "file", None)
        if partial is not None:
            with contextlib.suppress(OSError):
                partial.close()


def _check_text(fields: dict[str, list[str]], encoding: str) -> None:
    """The parser turns undecodable bytes into U+FFFD; refuse them, and NUL, instead of passing them on."""
    for key, values in fields.items():
        if any("\ufffd" in value or "\x00" in value for value in values):
            raise GatewayError(
                400,
                f"'{key}' is not valid text: it holds bytes that are not {encoding}, or a NUL character.",
                param=key,
                code="invalid_value",
            )
