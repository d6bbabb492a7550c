"""A stand-in image provider for tests and benchmarks: a real HTTP server on 127.0.0.1 that speaks
OpenAI's images protocol and Gemini's generateContent, records every request it receives and
fails on demand.

    def test_x(standin):                    # fixture: a fresh server per test
        standin.fail_next("503")            # or fail_always("slow", seconds=1); reset()
        conn = standin.connection("gemini")  # a Connection to it (or standin.openai_url/gemini_url)
        ...
        standin.last.fields / .files / .json / .inline_images; standin.received (all)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.message
import email.utils
import hashlib
import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from requests_toolbelt.multipart.decoder import MultipartDecoder

from edits_api.providers.base import Connection, ImageFile
from entities.catalog import PROVIDERS

# Fault modes; "slow" and "trickle" take `seconds`, and "503"/"429" use it as their Retry-After.
MODES = frozenset(
    {
        "500",  # server_error / INTERNAL
        "503",  # overloaded, with Retry-After (Gemini: UNAVAILABLE)
        "429",  # rate limited: OpenAI with Retry-After, Gemini with RetryInfo.retryDelay
        "400",  # OpenAI "Invalid value for size" / Gemini API_KEY_INVALID
        "401",  # a rejected key, echoed back in the message as careless upstreams do
        "moderation",  # OpenAI 400 moderation_blocked / Gemini 200 promptFeedback.blockReason=SAFETY
        "gemini_output_blocked",  # Gemini 200, candidate finishReason=IMAGE_SAFETY and no content
        "gemini_no_image",  # Gemini 200 with text only (OpenAI: an empty `data` list)
        "gemini_snake_case",  # a normal Gemini answer spelled inline_data/mime_type, as some proxies do
        "shapeless",  # 200 JSON without data/candidates
        "garbage",  # 200 HTML
        "hang",  # never answers (until the client gives up or the stand-in stops)
        "drop",  # closes the connection without answering
        "slow",  # answers normally after `seconds`
        "trickle",  # answers normally, the body spread over `seconds`
    }
)

_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):generateContent$")
_OPENAI_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})


def image_bytes(
    fmt: str = "png", size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    """A real image in `fmt` (png, jpeg or webp)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper())
    return buffer.getvalue()


def mask_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    """An RGBA PNG mask whose left half is fully transparent (the region to edit)."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def image_file(
    directory: Path,
    fmt: str = "png",
    size: tuple[int, int] = (64, 64),
    *,
    filename: str | None = None,
    data: bytes | None = None,
    in_memory: bool = False,
) -> ImageFile:
    """An ImageFile as the gateway hands it to adapters: on disk (default) or in memory."""
    content = data if data is not None else image_bytes(fmt, size)
    kind = "jpeg" if fmt in ("jpg", "jpeg") else fmt
    filename = filename or f"image-{uuid.uuid4().hex[:8]}.{'jpg' if kind == 'jpeg' else kind}"
    path = None
    if not in_memory:
        path = directory / filename
        path.write_bytes(content)
    return ImageFile(
        filename=filename,
        content_type=f"image/{kind}",
        size=len(content),
        width=size[0],
        height=size[1],
        path=str(path) if path else None,
        data=content if in_memory else None,
    )


def mask_file(directory: Path, size: tuple[int, int] = (64, 64)) -> ImageFile:
    return image_file(directory, "png", size, filename="mask.png", data=mask_bytes(size))


@dataclass(frozen=True)
class FilePart:
    name: str  # the form field, e.g. "image" or "image[]"
    filename: str | None
    content_type: str | None
    size: int
    sha256: str


@dataclass(frozen=True)
class InlineImage:
    mime_type: str
    size: int  # decoded bytes
    sha256: str


@dataclass
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body_size: int  # bytes actually received
    chunked: bool
    client_port: int  # the same port across requests means the client kept the connection alive
    fields: dict[str, str] = field(default_factory=dict)  # multipart form fields
    files: list[FilePart] = field(default_factory=list)  # multipart file parts, in order
    json: Any = None
    inline_images: list[InlineImage] = field(default_factory=list)  # Gemini inlineData, decoded

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None


class StandIn:
    """The server. Use as a context manager, or through the `standin` fixture."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._lock = threading.Lock()
        self._received: list[Recorded] = []
        self._queued: list[tuple[str, float]] = []
        self._always: tuple[str, float] | None = None
        self._release = threading.Event()
        self._files: dict[str, bytes] = {}
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.openai_url = f"{self.url}/v1"
        self.gemini_url = f"{self.url}/v1beta"

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    # -- what tests use -------------------------------------------------------------------------

    @property
    def received(self) -> list[Recorded]:
        with self._lock:
            return list(self._received)

    @property
    def last(self) -> Recorded:
        with self._lock:
            return self._received[-1]

    def fail_next(self, mode: str, *, seconds: float = 0.0) -> None:
        """Answer the next API call (queued in order) in this mode."""
        _check_mode(mode)
        with self._lock:
            self._queued.append((mode, seconds))

    def fail_always(self, mode: str, *, seconds: float = 0.0) -> None:
        """Answer every API call in this mode (after any queued ones) until `reset`."""
        _check_mode(mode)
        with self._lock:
            self._always = (mode, seconds)

    def reset(self) -> None:
        """Forget recorded requests and fault modes; let hanging requests go."""
        with self._lock:
            self._received.clear()
            self._queued.clear()
            self._always = None
            self._release.set()
            self._release = threading.Event()

    def connection(
        self, provider: str = "openai", *, token: str = "sk-standin-0000", timeout_s: float = 10.0
    ) -> Connection:
        """A Connection to this stand-in for a catalog provider (Gemini's base ends in /v1beta)."""
        return Connection(
            provider=provider,
            provider_name=PROVIDERS[provider].name,
            base_url=self.gemini_url if provider == "gemini" else self.openai_url,
            token=token,
            timeout_s=timeout_s,
            extra=dict(PROVIDERS[provider].demo_connection),
        )

    # -- the server side ------------------------------------------------------------------------

    def _take_fault(self) -> tuple[str, float] | None:
        with self._lock:
            return self._queued.pop(0) if self._queued else self._always

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self._received.append(recorded)

    def _handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        body, chunked = handler.read_body()
        recorded = _parse(handler, url.path, parse_qs(url.query), body, chunked)
        self._record(recorded)
        if handler.command == "GET" and url.path.startswith("/files/"):
            content = self._files.get(url.path.removeprefix("/files/"))
            if content is None:
                handler.reply(404, b"not found", "text/plain")
            else:
                handler.reply(200, content, "image/png")
            return
        gemini = _GEMINI_PATH.search(url.path)
        protocol = "gemini" if gemini else "openai"
        if handler.command != "POST" or not (gemini or url.path.endswith(("/images/edits", "/images/generations"))):
            handler.reply_json(404, _error(protocol, 404, f"No route for {handler.command} {url.path}", "not_found"))
            return
        fault = self._take_fault()
        mode, seconds = fault if fault else ("", 0.0)
        if mode == "hang":
            self._release.wait(60)
            handler.drop()
            return
        if mode == "drop":
            handler.drop()
            return
        if mode == "slow":
            time.sleep(seconds)
        if mode and mode not in ("slow", "trickle", "gemini_snake_case"):
            handler.reply_fault(protocol, mode, recorded, seconds)
            return
        if gemini:
            status, answer = self._gemini_answer(recorded, gemini["model"], snake_case=mode == "gemini_snake_case")
        else:
            status, answer = self._openai_answer(recorded, edit=url.path.endswith("/images/edits"))
        handler.reply_json(status, answer, spread_over=seconds if mode == "trickle" else 0.0)

    def _openai_answer(self, recorded: Recorded, *, edit: bool) -> tuple[int, dict[str, Any]]:
        """What OpenAI answers, including its 400s for the mistakes an adapter could make."""
        auth = recorded.headers.get("authorization", "")
        azure = "/deployments/" in recorded.path or "api-version" in recorded.query
        if azure and not recorded.headers.get("api-key"):
            return 401, _error("openai", 401, "Access denied due to missing subscription key.", None)
        if not azure and (not auth.startswith("Bearer ") or len(auth) <= len("Bearer ")):
            return 401, _error("openai", 401, "You didn't provide an API key.", None)
        if edit:
            if not recorded.headers.get("content-type", "").startswith("multipart/form-data"):
                return 400, _error("openai", 400, "Invalid Content-Type header, expected multipart/form-data.", None)
            params: dict[str, Any] = dict(recorded.fields)
        elif isinstance(recorded.json, dict):
            params = recorded.json
        else:
            return 400, _error("openai", 400, "We could not parse the JSON body of your request.", None)
        model = str(params.get("model") or "gpt-image-1.5")
        if not params.get("prompt"):
            return 400, _error(
                "openai", 400, "Missing required parameter: 'prompt'.", "missing_required_parameter", "prompt"
            )
        if "response_format" in params and not model.startswith("dall-e"):
            return 400, _error(
                "openai", 400, "Unknown parameter: 'response_format'.", "unknown_parameter", "response_format"
            )
        if edit:
            images = [part for part in recorded.files if part.name in ("image", "image[]")]
            if not images:
                return 400, _error(
                    "openai",
                    400,
                    "Missing required parameter: 'image'.",
                    "missing_required_parameter",
                    "image",
                )
            if model == "dall-e-2" and any(part.name == "image[]" for part in images):
                message = "Invalid type for 'image': expected a file, but got an array instead."
                return 400, _error("openai", 400, message, "invalid_type", "image")
            for part in recorded.files:
                if part.content_type not in _OPENAI_IMAGE_TYPES:
                    message = (
                        f"Invalid file '{part.name}': unsupported mimetype ('{part.content_type}'). "
                        "Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."
                    )
                    return 400, _error("openai", 400, message, "invalid_value", part.name)
        n = int(params.get("n") or 1)
        output_format = str(params.get("output_format") or "png")
        answer: dict[str, Any] = {"created": int(time.time())}
        if model.startswith("dall-e") and (params.get("response_format") or "url") == "url":
            answer["data"] = [{"url": self._store(_PNG)} for _ in range(n)]
            return 200, answer
        encoded = base64.b64encode(_IMAGES.get(output_format, _PNG)).decode()
        answer["data"] = [{"b64_json": encoded} for _ in range(n)]
        if not model.startswith("dall-e"):
            answer.update(
                background=params.get("background") or "opaque",
                output_format=output_format,
                size=params.get("size") or "1024x1024",
                quality=params.get("quality") or "medium",
                usage={
                    "input_tokens": 50,
                    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                    "output_tokens": 50 * n,
                    "total_tokens": 50 + 50 * n,
                },
            )
        return 200, answer

    def _gemini_answer(self, recorded: Recorded, model: str, *, snake_case: bool) -> tuple[int, dict[str, Any]]:
        """What generateContent answers; gemini-3 models also emit "thought" parts first."""
        if not recorded.headers.get("x-goog-api-key"):
            message = "Method doesn't allow unregistered callers. Please use API Key or other form of identity."
            return 403, _error("gemini", 403, message, "PERMISSION_DENIED")
        contents = recorded.json.get("contents") if isinstance(recorded.json, dict) else None
        if not isinstance(contents, list) or not contents:
            return 400, _error(
                "gemini",
                400,
                "* GenerateContentRequest.contents: contents is not specified",
                "INVALID_ARGUMENT",
            )
        png = base64.b64encode(_PNG).decode()
        parts: list[dict[str, Any]] = []
        if model.startswith("gemini-3"):
            parts += [
                {"text": "**Planning the edit**", "thought": True},
                {"inlineData": {"mimeType": "image/png", "data": png}, "thought": True},
            ]
        parts += [
            {"text": "Here is the edited image."},
            {"inlineData": {"mimeType": "image/png", "data": png}},
        ]
        answer: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
            "modelVersion": model,
            "responseId": uuid.uuid4().hex,
        }
        return 200, _snake(answer) if snake_case else answer

    def _store(self, content: bytes) -> str:
        name = f"{uuid.uuid4().hex}.png"
        self._files[name] = content
        return f"{self.url}/files/{name}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    standin: StandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts, hang mode) close their end; that is expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall between headers and body
    wbufsize = 256 * 1024  # headers and body leave together, flushed once per response
    server: _Server

    def do_POST(self) -> None:
        self.server.standin._handle(self)

    do_GET = do_POST
    do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> tuple[bytes, bool]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks), True
        return self.rfile.read(int(self.headers.get("Content-Length") or 0)), False

    def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, *, spread_over: float = 0.0
    ) -> None:
        body = json.dumps(payload).encode()
        if not spread_over:
            self.reply(status, body, "application/json", headers)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        pieces = 20
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            self.wfile.write(body[start : start + step])
            self.wfile.flush()
            time.sleep(spread_over / pieces)

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def reply_fault(self, protocol: str, mode: str, recorded: Recorded, seconds: float = 0.0) -> None:
        """For 503 and 429, `seconds` (when set) is the Retry-After the answer carries."""
        gemini = protocol == "gemini"
        if mode == "500":
            self.reply_json(
                500,
                _error(protocol, 500, "The server had an error while processing your request.", "INTERNAL"),
            )
        elif mode == "503":
            message = "The model is overloaded. Please try again later."
            self.reply_json(
                503, _error(protocol, 503, message, "UNAVAILABLE"), {"Retry-After": f"{seconds:g}" if seconds else "7"}
            )
        elif mode == "429" and gemini:
            error = _error(protocol, 429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
            error["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]
            self.reply_json(429, error)
        elif mode == "429":
            message = "Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1."
            self.reply_json(
                429,
                _error(protocol, 429, message, "rate_limit_exceeded"),
                {"Retry-After": f"{seconds:g}" if seconds else "20"},
            )
        elif mode == "400" and gemini:
            error = _error(protocol, 400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
            error["error"]["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ]
            self.reply_json(400, error)
        elif mode == "400":
            self.reply_json(400, _error(protocol, 400, "Invalid value for size", "invalid_value", "size"))
        elif mode == "401":
            key = recorded.headers.get("x-goog-api-key") or recorded.headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            self.reply_json(401, _error(protocol, 401, f"Incorrect API key provided: {key}.", "invalid_api_key"))
        elif mode == "moderation" and gemini:
            self.reply_json(200, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}})
        elif mode == "moderation":
            message = "Your request was rejected by the safety system. If you believe this is an error, contact us."
            error = _error(protocol, 400, message, "moderation_blocked")
            error["error"]["type"] = "image_generation_user_error"
            error["error"]["moderation_details"] = {"moderation_stage": "input", "categories": ["violence"]}
            self.reply_json(400, error)
        elif mode == "gemini_output_blocked":
            self.reply_json(200, {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]})
        elif mode == "gemini_no_image" and gemini:
            parts = [{"text": "I can describe the image, but I will not draw it."}]
            self.reply_json(
                200, {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}
            )
        elif mode == "gemini_no_image":
            self.reply_json(200, {"created": int(time.time()), "data": []})
        elif mode == "shapeless":
            self.reply_json(200, {"object": "list", "model": "x"})
        elif mode == "garbage":
            self.reply(200, b"<html><body>upstream proxy error</body></html>", "text/html")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown stand-in mode {mode!r}; known: {', '.join(sorted(MODES))}")


def _error(protocol: str, status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """An error body in the protocol's own shape (`code` is Gemini's `status` there)."""
    if protocol == "gemini":
        return {"error": {"code": status, "message": message, "status": code or "UNKNOWN"}}
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _parse(handler: _Handler, path: str, query: dict[str, list[str]], body: bytes, chunked: bool) -> Recorded:
    headers = {name.lower(): value for name, value in handler.headers.items()}
    recorded = Recorded(handler.command, path, query, headers, len(body), chunked, handler.client_address[1])
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data") and body:
        for part in MultipartDecoder(body, content_type).parts:
            disposition = email.message.Message()
            disposition["content-disposition"] = part.headers.get(b"Content-Disposition", b"").decode()
            name = email.utils.collapse_rfc2231_value(disposition.get_param("name", "", "content-disposition"))
            filename = disposition.get_filename()
            if filename is None:
                recorded.fields[name] = part.content.decode()
            else:
                part_type = part.headers.get(b"Content-Type")
                recorded.files.append(
                    FilePart(
                        name=name,
                        filename=filename,
                        content_type=part_type.decode() if part_type else None,
                        size=len(part.content),
                        sha256=hashlib.sha256(part.content).hexdigest(),
                    )
                )
    elif content_type.startswith("application/json") and body:
        try:
            recorded.json = json.loads(body)
        except ValueError:
            recorded.json = None
        recorded.inline_images = _inline_images(recorded.json)
    return recorded


def _inline_images(document: Any) -> list[InlineImage]:
    """The images inside a generateContent body, decoded (camelCase or snake_case)."""
    found = []
    contents = document.get("contents") if isinstance(document, dict) else None
    for content in contents if isinstance(contents, list) else []:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            inline = part.get("inlineData") or part.get("inline_data") if isinstance(part, dict) else None
            if not isinstance(inline, dict):
                continue
            try:
                data = base64.b64decode(inline.get("data", ""), validate=True)
            except (binascii.Error, TypeError):
                data = b""
            mime_type = inline.get("mimeType") or inline.get("mime_type") or ""
            found.append(InlineImage(mime_type, len(data), hashlib.sha256(data).hexdigest()))
    return found


def _snake(value: Any) -> Any:
    """camelCase keys as snake_case, all the way down."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): _snake(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_snake(item) for item in value]
    return value


_PNG = image_bytes("png", (8, 8), (30, 120, 200))
_IMAGES = {"png": _PNG, "jpeg": image_bytes("jpeg", (8, 8)), "webp": image_bytes("webp", (8, 8))}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A fresh stand-in provider per test."""
    with StandIn() as server:
        yield server
