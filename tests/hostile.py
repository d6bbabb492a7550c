"""A hostile stand-in provider: a real HTTP server on 127.0.0.1 that speaks just enough of OpenAI's
images protocol and Gemini's generateContent to be called, and misbehaves on purpose.

    def test_x(hostile):                       # fixture: a fresh server per test
        model = make_image_model("img-h", "openai", standin, base_url=hostile.openai_url)
        ... prompt "echo-token" ...            # the fault word in the prompt picks the behaviour
        hostile.api_calls                      # how many image calls it received

Fault words (in the prompt; a request without one gets a normal answer):
    echo-token          400 whose message, type, param and code carry the credential it received,
                        in clear, in other cases, percent-encoded and base64 (of it, of "Bearer <it>"
                        and of "user:<it>"); Gemini: 200 with promptFeedback.blockReason = the token
    echo-token-500      the same as a 500 (Gemini: 500)
    echo-token-success  200 whose revised_prompt, size, quality and usage carry the credential
    unknown-code        400 with a code no provider documents
    azure-filter        400 with Azure's code "contentFilter"
    policy-violation    400 with DALL·E's code "content_policy_violation"
    fail-500            500, as a provider does when this one prompt makes it fail
    bad-value           400 invalid_value (the client's fault)
    hang-after-body     reads the whole request, then never answers
    drop-after-body     reads the whole request, then closes the connection
    rate-limited        429 with Retry-After: 1
    retry-after-huge    429 with Retry-After: 1e9
    busy-huge           503 with Retry-After: 1e9
    image-urls          200 whose images are `hostile.image_urls` (set by the test)
    gzip-answer         200, the JSON gzip-compressed (Content-Encoding: gzip)
    short-answer        200 that declares 100 bytes more than it sends, then closes the connection
    chunked-answer      200, the JSON sent in chunks (Transfer-Encoding: chunked), kept alive
    unsized-answer      200, the JSON with no length: it ends when the connection closes
    close-when-idle     200, then closes the kept-alive connection 0.2 s later (no Connection: close)
A path that starts with /stall/ (give the entity base_url {url}/stall/v1) is never read: the
upload stalls in the socket buffers, so the gateway cannot send the whole request.

It also serves what image-URL tests point at:
    /img/png                 a small PNG
    /img/big?mb=N            a PNG signature then N MB
    /img/slow?seconds=S      a small PNG trickled over S seconds
    /internal                an internal service's 404 whose body holds INTERNAL_SECRET
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

INTERNAL_SECRET = "internal-service-secret-4417"
FAULT_WORDS = (
    "echo-token-success",
    "echo-token-500",
    "echo-token",
    "unknown-code",
    "azure-filter",
    "policy-violation",
    "fail-500",
    "bad-value",
    "hang-after-body",
    "drop-after-body",
    "rate-limited",
    "retry-after-huge",
    "busy-huge",
    "image-urls",
    "gzip-answer",
    "short-answer",
    "chunked-answer",
    "unsized-answer",
    "close-when-idle",
)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def token_spellings(token: str) -> list[str]:
    """The credential as a careless or hostile provider might echo it."""
    raw = token.encode()
    return [
        token,
        token.upper(),
        token.lower(),
        token.swapcase(),
        quote(token, safe=""),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(b"Bearer " + raw).decode(),
        base64.b64encode(b"user:" + raw).decode(),
        base64.b64encode(token.upper().encode()).decode(),
    ]


class Hostile:
    """The server; use as a context manager or through the `hostile` fixture."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hostile = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.openai_url = f"{self.url}/v1"
        self.gemini_url = f"{self.url}/v1beta"
        self.image_urls: list[str] = []
        self.paths: list[str] = []  # every request's path, in order
        self.api_calls = 0  # image calls (edits, generations, generateContent) received

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def hits(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for path in self.paths if path.startswith(prefix))

    def _count(self, path: str, api: bool) -> None:
        with self._lock:
            self.paths.append(path)
            self.api_calls += api

    # -- the server side ------------------------------------------------------------------------

    def handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        gemini = ":generateContent" in url.path
        api = gemini or url.path.endswith(("/images/edits", "/images/generations"))
        self._count(url.path, api)
        if url.path.startswith("/stall/"):
            self._release.wait(30)  # the body stays unread; the client gives up first
            handler.drop()
            return
        if url.path.startswith("/img/"):
            self._serve_image(handler, url.path, query)
            return
        if url.path == "/internal":
            body = json.dumps({"error": {"message": f"internal only: {INTERNAL_SECRET}"}}).encode()
            handler.reply(404, body, "application/json")
            return
        body = handler.read_body()
        if not api:
            handler.reply(404, b"{}", "application/json")
            return
        token = _credential(handler)
        prompt = _prompt(handler, body, gemini)
        fault = next((word for word in FAULT_WORDS if word in prompt), "")
        self._answer(handler, fault, token, gemini)

    def _answer(self, handler: _Handler, fault: str, token: str, gemini: bool) -> None:
        spellings = token_spellings(token)
        if fault == "hang-after-body":
            self._release.wait(30)
            handler.drop()
        elif fault == "drop-after-body":
            handler.drop()
        elif fault == "echo-token" and gemini:
            handler.reply_json(200, {"promptFeedback": {"blockReason": f"{token} {spellings[5]}"}})
        elif fault in ("echo-token", "echo-token-500"):
            status = 500 if fault == "echo-token-500" else 400
            error = {
                "message": "Incorrect API key provided: " + " ".join(spellings),
                "type": spellings[1],
                "param": spellings[5],
                "code": spellings[7],
                "status": spellings[2],
            }
            handler.reply_json(status, {"error": error})
        elif fault == "echo-token-success":
            revised = f"as you asked, {token} / {spellings[5]}"
            handler.reply_json(200, _openai_success([PNG], revised=revised, token=token))
        elif fault == "unknown-code":
            handler.reply_json(400, _openai_error("Something odd.", "frobnicated_widget", "invalid_request_error"))
        elif fault == "azure-filter":
            handler.reply_json(400, _openai_error("The prompt was filtered.", "contentFilter", None))
        elif fault == "policy-violation":
            handler.reply_json(400, _openai_error("Your prompt may violate our policy.", "content_policy_violation"))
        elif fault == "fail-500":
            handler.reply_json(500, _openai_error("The server had an error.", None, "server_error"))
        elif fault == "bad-value":
            handler.reply_json(400, _openai_error("Invalid value for size.", "invalid_value", param="size"))
        elif fault == "rate-limited":
            handler.reply_json(429, _openai_error("Slow down.", "rate_limit_exceeded"), {"Retry-After": "1"})
        elif fault == "retry-after-huge":
            handler.reply_json(429, _openai_error("Slow down.", "rate_limit_exceeded"), {"Retry-After": "1e9"})
        elif fault == "busy-huge":
            handler.reply_json(503, _openai_error("Overloaded.", None, "server_error"), {"Retry-After": "1e9"})
        elif fault == "gzip-answer":
            body = gzip.compress(json.dumps(_openai_success([PNG])).encode())
            handler.reply(200, body, "application/json", {"Content-Encoding": "gzip"})
        elif fault == "short-answer":
            body = json.dumps(_openai_success([PNG])).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body) + 100))
            handler.end_headers()
            handler.wfile.write(body)
            handler.drop()
        elif fault in ("chunked-answer", "unsized-answer"):
            body = json.dumps(_openai_success([PNG])).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            if fault == "chunked-answer":
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
                for start in range(0, len(body), 100):
                    piece = body[start : start + 100]
                    handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                handler.wfile.write(b"0\r\n\r\n")
            else:
                handler.send_header("Connection", "close")
                handler.end_headers()
                handler.wfile.write(body)
                handler.close_connection = True
        elif fault == "close-when-idle":
            handler.reply_json(200, _openai_success([PNG]))
            time.sleep(0.2)
            handler.drop()
        elif fault == "image-urls":
            handler.reply_json(200, {"created": int(time.time()), "data": [{"url": url} for url in self.image_urls]})
        elif gemini:
            png = base64.b64encode(PNG).decode()
            part = {"inlineData": {"mimeType": "image/png", "data": png}}
            handler.reply_json(200, {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]})
        else:
            handler.reply_json(200, _openai_success([PNG]))

    def _serve_image(self, handler: _Handler, path: str, query: dict[str, str]) -> None:
        if path == "/img/png":
            handler.reply(200, PNG, "image/png")
        elif path == "/img/big":
            size = int(float(query.get("mb", "1")) * 1024 * 1024)
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            sent, block = 0, PNG[:8] + b"\0" * (1024 * 1024 - 8)
            with contextlib.suppress(OSError):  # the gateway may stop reading at its budget
                while sent < size:
                    piece = block[: size - sent]
                    handler.wfile.write(piece)
                    sent += len(piece)
                    block = b"\0" * len(block)
        elif path == "/img/slow":
            seconds = float(query.get("seconds", "1"))
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", str(len(PNG)))
            handler.end_headers()
            with contextlib.suppress(OSError):
                for index in range(10):
                    handler.wfile.write(PNG[index * len(PNG) // 10 : (index + 1) * len(PNG) // 10])
                    handler.wfile.flush()
                    time.sleep(seconds / 10)
        else:
            handler.reply(404, b"", "image/png")


def _openai_error(message: str, code: str | None, type: str | None = "invalid_request_error", param: str | None = None):
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _openai_success(images: list[bytes], *, revised: str | None = None, token: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(image).decode(), "revised_prompt": revised} for image in images],
    }
    if token:
        answer.update(size=token, quality=token.upper(), usage={"input_tokens": 1, "note": token})
    return answer


def _credential(handler: _Handler) -> str:
    return (
        handler.headers.get("x-goog-api-key")
        or handler.headers.get("api-key")
        or handler.headers.get("Authorization", "").removeprefix("Bearer ")
    )


def _prompt(handler: _Handler, body: bytes, gemini: bool) -> str:
    """The prompt, found well enough for fault words (multipart field, JSON field or Gemini text)."""
    content_type = handler.headers.get("Content-Type", "")
    if content_type.startswith("multipart/form-data"):
        match = re.search(rb'name="prompt"\r\n\r\n(.*?)\r\n--', body, re.S)
        return match.group(1).decode(errors="replace") if match else ""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return ""
    if gemini:
        parts = payload.get("contents", [{}])[0].get("parts", [])
        return " ".join(str(part.get("text", "")) for part in parts if isinstance(part, dict))
    return str(payload.get("prompt", ""))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    hostile: Hostile

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up close their end; that is the point here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self.server.hostile.handle(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def reply_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(payload).encode(), "application/json", headers)

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    with Hostile() as server:
        yield server
