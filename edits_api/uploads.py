"""Reading a multipart upload under the route's size limit, spooling large files to disk.

The limit covers the whole body: a declared Content-Length above it is refused before reading,
and a chunked or lying body is counted while it streams and cut off at the limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile, UploadedFile
from django.http import HttpRequest, UnreadablePostError
from django.utils.http import parse_header_parameters
from multipart import MultipartError, MultipartSegment, PushMultipartParser

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


def json_body(request: HttpRequest) -> Any:
    """A JSON body (a generation), read within DATA_UPLOAD_MAX_MEMORY_SIZE: it holds no file."""
    content_type = request.META.get("CONTENT_TYPE", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise GatewayError(
            415,
            f"Send the request as application/json, not {content_type.split(';')[0] or 'an empty body'}.",
            code="unsupported_media_type",
        )
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if (declared_length(request) or 0) > limit:
        raise _json_too_large(limit)
    stream, raw = capped_body(request, limit), bytearray()
    try:
        while chunk := stream.read(READ_SIZE):
            raw += chunk
    except GatewayError as exc:
        raise (_json_too_large(limit) if exc.status == 413 else exc) from None
    if not raw:
        return {}  # no body: the missing fields are named, as for an empty form
    try:
        # NaN and Infinity are not JSON (RFC 8259), whatever Python's parser accepts.
        return json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise GatewayError(400, f"The body is not valid JSON: {exc}.", code="invalid_request_body") from None


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def _json_too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The JSON body is larger than {limit} bytes.", code="invalid_request_body")


@dataclass
class Upload:
    fields: dict[str, list[str]]
    files: dict[str, list[UploadedFile]]


# Body reads of up to 1 MiB: a 100 KB edit is one read, a 100 MB one a hundred (64 KiB reads cost
# Python work per read that showed in the upload's time).
READ_SIZE = 1024 * 1024


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
    declared = declared_length(request)
    in_memory = (declared or limit) <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    form = _Form(request.encoding or settings.DEFAULT_CHARSET, in_memory=in_memory)
    try:
        _parse(capped_body(request, limit), _boundary(request), declared, form)
    except BaseException:
        form.close()
        raise
    upload = Upload(fields=form.fields, files=form.files)
    try:
        _check_text(upload.fields, form.encoding)
        yield upload
    finally:
        form.close()


def _boundary(request: HttpRequest) -> bytes:
    # Django parsed the Content-Type's parameters when it made the request: not parsed twice.
    params = request.content_params
    if params is None:  # a bare HttpRequest, which nothing parsed
        _, params = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200 or not boundary.isascii() or not boundary.isprintable():
        raise malformed("its boundary is missing or invalid")
    return boundary.encode("ascii")


def malformed(why: str) -> GatewayError:
    return GatewayError(400, f"The multipart body is malformed: {why}.", code="invalid_request_body")


def _parse(stream: CappedStream, boundary: bytes, declared: int | None, form: _Form) -> None:
    """Feeds the body to the `multipart` package's push parser (its boundary search is bytes.find,
    so a large file costs a few Python steps per megabyte, not per 64 KiB as Django's did)."""
    parser = PushMultipartParser(boundary, content_length=-1 if declared is None else declared)
    try:
        while True:
            chunk = stream.read(READ_SIZE)
            if not chunk:
                break
            for event in parser.parse(chunk):
                form.take(event)
        if form.segments:
            parser.close()  # raises when the closing boundary never came
    except MultipartError as exc:  # malformed, or past one of the parser's own limits
        raise malformed(str(exc.args[0] if exc.args else exc).rstrip(".").lower()) from None
    except OSError as exc:  # the spool folder is full or not writable
        logger.error("upload not spooled: %s", exc)
        raise GatewayError(
            503,
            "The gateway cannot store this upload right now; retry shortly.",
            type="server_error",
            code="storage_unavailable",
            headers={"Retry-After": "30"},
        ) from None
    # A body with no part at all (garbage, or empty) is an empty form: the missing fields are named.


class _Form:
    """The fields and files of one body, built as the parser's events arrive, within Django's caps
    (DATA_UPLOAD_MAX_NUMBER_FIELDS, DATA_UPLOAD_MAX_NUMBER_FILES, DATA_UPLOAD_MAX_MEMORY_SIZE).
    Files stay in memory when the whole body fits FILE_UPLOAD_MAX_MEMORY_SIZE, else spool to disk."""

    def __init__(self, encoding: str, *, in_memory: bool) -> None:
        self.encoding = encoding
        self.in_memory = in_memory
        self.fields: dict[str, list[str]] = {}
        self.files: dict[str, list[UploadedFile]] = {}
        self.segments = 0
        self._file_count = 0
        self._field_count = 0
        self._field_bytes = 0
        self._name = ""
        self._text: list[bytes] | None = None  # the field being read
        self._file: UploadedFile | None = None  # the file being read, and where its bytes go
        self._sink: IO[bytes] | None = None

    def take(self, event: MultipartSegment | bytes | None) -> None:
        if isinstance(event, MultipartSegment):
            self._start(event)
        elif event is None:
            self._end()
        elif self._sink is not None:
            self._sink.write(event)
        elif self._text is not None:
            self._field_bytes += len(event)
            if self._field_bytes > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                raise GatewayError(
                    413,
                    f"The text fields are larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes in all.",
                    code="invalid_request_body",
                )
            self._text.append(event)

    def _start(self, segment: MultipartSegment) -> None:
        self.segments += 1
        self._name = segment.name or ""
        if not self._name:  # a part without a name is no field (as Django read it): skipped
            return
        filename = segment.filename
        if filename is None and "filename*" in (disposition := segment.header("Content-Disposition", "")):
            # RFC 2231's filename*=UTF-8''..., which some clients send (multipart reads only filename).
            filename = parse_header_parameters(disposition)[1].get("filename")
        # An empty filename is a text field (as browsers and Django read it). A file's name keeps no
        # path (UploadedFile) and is sanitized again before it goes to a provider (validation.py).
        if filename:
            self._file_count += 1
            if self._file_count > settings.DATA_UPLOAD_MAX_NUMBER_FILES:
                raise malformed(f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files")
            self._file = self._new_file(filename, segment.content_type or "")
        else:
            self._field_count += 1
            if self._field_count > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:
                raise malformed(f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields")
            self._text = []

    def _new_file(self, name: str, content_type: str) -> UploadedFile:
        if self.in_memory:
            file: UploadedFile = InMemoryUploadedFile(io.BytesIO(), self._name, name, content_type, 0, None)
        else:
            file = TemporaryUploadedFile(name, content_type, 0, None)
        self.files.setdefault(self._name, []).append(file)  # listed now, so close() always finds it
        self._sink = file.file
        return file

    def _end(self) -> None:
        if self._file is not None and self._sink is not None:
            self._sink.flush()
            self._file.size = self._sink.tell()
            self._file.seek(0)
        elif self._text is not None:
            value = b"".join(self._text).decode(self.encoding, errors="replace")
            self.fields.setdefault(self._name, []).append(value)
        self._file, self._sink, self._text = None, None, None

    def close(self) -> None:
        for file_list in self.files.values():
            for file in file_list:
                with contextlib.suppress(OSError):
                    file.close()


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
