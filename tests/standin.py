"""A stand-in image provider for tests and benchmarks: a real HTTP server on 127.0.0.1 that speaks
each provider's own protocol, records every request it receives and fails on demand.

Protocols, chosen by the path (use `standin.base_url_for(provider)` or `standin.connection(...)`):

    /v1/...                              OpenAI and Cloud Temple: images/edits (multipart),
                                         images/generations (JSON), GET models
    /openai/deployments/{d}/images/...   Azure OpenAI (api-key, ?api-version=; edits from
    /openai/v1/images/...                2025-04-01-preview on), GET /openai/models, /openai/v1/models
    /v1beta/models/{m}:generateContent   Gemini (x-goog-api-key, usageMetadata with modality split),
                                         GET /v1beta/models
    /xai/v1/images/generations           xAI (aspect_ratio, resolution, response_format; refuses
                                         size/style), GET /xai/v1/image-generation-models
    /luma/dream-machine/v1/generations/  Luma: create (state queued), then each GET moves it on:
                                         dreaming ... completed (assets.image) or failed;
                                         GET .../credits
    /hive/api/v3/{vendor}/{model}        Hive v3 (`input`: prompt, num_images, image_size)

    def test_x(standin):                    # fixture: a fresh server per test
        standin.fail_next("503")            # or fail_always("slow", seconds=1); reset()
        conn = standin.connection("gemini")  # a Connection to it for a catalog provider
        ...
        standin.last.fields / .files / .json / .inline_images; standin.received (all)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import io
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import multipart
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from edits_api.providers.base import Connection, ImageFile
from entities.catalog import PROVIDERS

# Fault modes; "slow" and "trickle" take `seconds`, and "503"/"429" use it as their Retry-After.
MODES = frozenset(
    {
        "500",  # server_error / INTERNAL, in the protocol's own error shape
        "503",  # overloaded, with Retry-After (Gemini: UNAVAILABLE)
        "429",  # rate limited: OpenAI with Retry-After, Gemini with RetryInfo.retryDelay
        "400",  # OpenAI "Invalid value for size" / Gemini API_KEY_INVALID / others' bad request
        "401",  # a rejected key, echoed back in the message as careless upstreams do
        # Each protocol's safety refusal: OpenAI 400 moderation_blocked, Azure 400 contentFilter,
        # Gemini 200 promptFeedback.blockReason=SAFETY, xAI 200 block_reason, Luma a failed
        # generation ("moderation failed"), Hive 400 "flagged by moderation".
        "moderation",
        "gemini_output_blocked",  # Gemini 200, candidate finishReason=IMAGE_SAFETY and no content
        "gemini_no_image",  # Gemini 200 with text only (OpenAI: an empty `data` list)
        "gemini_snake_case",  # a normal Gemini answer spelled inline_data/mime_type, as some proxies do
        "gemini_no_usage",  # a normal Gemini answer without usageMetadata
        "gemini_usage_without_details",  # usageMetadata without the modality split
        "openai_usage_without_details",  # an OpenAI-wire answer whose usage lacks input_tokens_details
        "luma_failed",  # the Luma generation is created, then fails (not a moderation failure)
        "shapeless",  # 200 JSON without data/candidates
        "garbage",  # 200 HTML
        "nan",  # 200 JSON with NaN in `usage`: Python's json reads it, RFC 8259 does not allow it
        "lone_surrogate",  # 200 JSON whose revised_prompt holds "\ud800", which no UTF-8 can carry
        "hang",  # never answers (until the client gives up or the stand-in stops)
        "drop",  # closes the connection without answering
        "slow",  # answers normally after `seconds`
        "trickle",  # answers normally, the body spread over `seconds`
    }
)
# Modes that still answer normally, only differently.
_NORMAL_VARIANTS = frozenset(
    {
        "slow",
        "trickle",
        "gemini_snake_case",
        "gemini_no_usage",
        "gemini_usage_without_details",
        "openai_usage_without_details",
    }
)

_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):generateContent$")
_LUMA_GENERATION = re.compile(r"/dream-machine/v1/generations/(?P<id>[^/]+)$")
_HIVE_MODEL = re.compile(r"^/hive/api/v3/(?P<model>.+)$")
_OPENAI_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
AZURE_EDIT_SINCE = "2025-04-01-preview"
XAI_ASPECT_RATIOS = frozenset(
    {"1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9", "1:2", "2:1", "21:9",
     "5:2", "auto"}
)  # fmt: skip
LUMA_ASPECT_RATIOS = frozenset({"1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"})
# Gemini token counts the stand-in reports: per prompt, per input image, per output image.
GEMINI_PROMPT_TOKENS = 12
GEMINI_INPUT_IMAGE_TOKENS = 258
GEMINI_OUTPUT_IMAGE_TOKENS = 1290
GEMINI_OUTPUT_TEXT_TOKENS = 6
GEMINI_THOUGHT_TOKENS = 40  # gemini-3 models think first


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


def tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files: a client trusts it with
    SSL_CERT_FILE set to the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass(frozen=True)
class FilePart:
    name: str  # the form field, e.g. "image" or "image[]"
    filename: str | None  # decoded as a server does ("%22" is '"')
    content_type: str | None
    size: int
    sha256: str
    disposition: str = ""  # the Content-Disposition header as it came


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


@dataclass
class LumaGeneration:
    """A Luma generation as the stand-in keeps it between polls."""

    id: str
    request: dict[str, Any]
    fails_with: str | None  # the failure_reason it will end with, or None to complete
    polls: int = 0
    state: str = "queued"
    image_url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "generation_type": "image",
            "state": self.state,
            "failure_reason": self.fails_with if self.state == "failed" else None,
            "created_at": "2026-11-29T10:00:00.000000Z",
            "model": self.request.get("model"),
            "assets": {"image": self.image_url} if self.image_url else None,
            "request": self.request,
        }


@dataclass(frozen=True)
class Route:
    """What a request is, by its path: which protocol, and which of its calls."""

    protocol: str  # openai, azure, gemini, xai, luma, hive
    call: str  # edit, generate, list, create, poll, credits
    param: str = ""  # the Gemini/Hive model or the Luma generation id


class StandIn:
    """The server. Use as a context manager, or through the `standin` fixture. With a
    `certificate` (see `tls_certificate`) it speaks HTTPS."""

    def __init__(self, certificate: tuple[Path, Path] | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        scheme = "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self._server.standin = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._lock = threading.Lock()
        self._received: list[Recorded] = []
        self._queued: list[tuple[str, float]] = []
        self._always: tuple[str, float] | None = None
        self._release = threading.Event()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._luma: dict[str, LumaGeneration] = {}
        # How many polls a Luma generation takes to finish (0: it never does).
        self.luma_polls_until_done = 1
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self.openai_url = f"{self.url}/v1"
        self.gemini_url = f"{self.url}/v1beta"
        self.azure_url = f"{self.url}/openai"
        self.xai_url = f"{self.url}/xai/v1"
        self.luma_url = f"{self.url}/luma"
        self.hive_url = f"{self.url}/hive/api/v3"

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

    def base_url_for(self, provider: str) -> str:
        """The base URL an entity of this catalog provider uses to reach the stand-in."""
        return {
            "gemini": self.gemini_url,
            "azure-openai": self.azure_url,
            "x-ai": self.xai_url,
            "luma": self.luma_url,
            "hive": self.hive_url,
        }.get(provider, self.openai_url)

    def connection(
        self,
        provider: str = "openai",
        *,
        token: str = "sk-standin-0000",
        timeout_s: float = 10.0,
        **extra: str,
    ) -> Connection:
        """A Connection to this stand-in for a catalog provider; `extra` overrides the demo values
        (e.g. api_version="v1" for Azure)."""
        # The stand-in is on 127.0.0.1: the image URLs it answers may be fetched only by a
        # connection that allows the private network (the HTTP seam's guard, where it has one).
        private = {"allow_private_network": True} if "allow_private_network" in Connection.__dataclass_fields__ else {}
        return Connection(
            provider=provider,
            provider_name=PROVIDERS[provider].name,
            base_url=self.base_url_for(provider),
            token=token,
            timeout_s=timeout_s,
            extra={**dict(PROVIDERS[provider].demo_connection), **extra},
            **private,
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
        recorded = _receive(handler, url.path, parse_qs(url.query))
        self._record(recorded)
        if handler.command == "GET" and url.path.startswith("/files/"):
            stored = self._files.get(url.path.removeprefix("/files/"))
            if stored is None:
                handler.reply(404, b"not found", "text/plain")
            else:
                handler.reply(200, stored[0], stored[1])
            return
        route = _route(handler.command, url.path, recorded.query)
        if route is None:
            protocol = _protocol(url.path, recorded.query)
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
        luma_outcome = route.protocol == "luma" and route.call == "create" and mode in ("moderation", "luma_failed")
        if mode and mode not in _NORMAL_VARIANTS and not luma_outcome:
            handler.reply_fault(route.protocol, mode, recorded, seconds)
            return
        status, answer = self._answer(route, recorded, mode)
        handler.reply_json(status, answer, spread_over=seconds if mode == "trickle" else 0.0)

    def _answer(self, route: Route, recorded: Recorded, mode: str) -> tuple[int, dict[str, Any]]:
        denied = _check_auth(route.protocol, recorded)
        if denied is not None:
            return denied
        if route.call == "list":
            return 200, _model_list(route.protocol)
        if route.protocol == "gemini":
            return self._gemini_answer(recorded, route.param, mode)
        if route.protocol == "xai":
            return self._xai_answer(recorded)
        if route.protocol == "luma":
            return self._luma_answer(route, recorded, mode)
        if route.protocol == "hive":
            return self._hive_answer(recorded, route.param)
        return self._openai_answer(recorded, edit=route.call == "edit", azure=route.protocol == "azure", mode=mode)

    def _openai_answer(
        self, recorded: Recorded, *, edit: bool, azure: bool, mode: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """What OpenAI (or Azure OpenAI) answers, including its 400s for the mistakes an adapter
        could make."""
        if azure:
            refused = _azure_refusal(recorded, edit=edit)
            if refused is not None:
                return refused
        if edit:
            if not recorded.headers.get("content-type", "").startswith("multipart/form-data"):
                return 400, _error("openai", 400, "Invalid Content-Type header, expected multipart/form-data.", None)
            params: dict[str, Any] = dict(recorded.fields)
        elif isinstance(recorded.json, dict):
            params = recorded.json
        else:
            return 400, _error("openai", 400, "We could not parse the JSON body of your request.", None)
        deployment = _azure_deployment(recorded.path) if azure else None
        model = str(deployment or params.get("model") or "gpt-image-1.5")
        if not params.get("prompt"):
            return 400, _error(
                "openai", 400, "Missing required parameter: 'prompt'.", "missing_required_parameter", "prompt"
            )
        gpt_image = not model.startswith("dall-e")
        for name in ("response_format", "style") if gpt_image else ("background", "output_format", "moderation"):
            if name in params:
                message = f"Unknown parameter: '{name}'."
                return 400, _error("openai", 400, message, "unknown_parameter", name)
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
        if not gpt_image and (params.get("response_format") or "url") == "url":
            answer["data"] = [{"url": self._store(_PNG, "image/png")} for _ in range(n)]
        else:
            encoded = base64.b64encode(_IMAGES.get(output_format, _PNG)).decode()
            answer["data"] = [{"b64_json": encoded} for _ in range(n)]
        if model.startswith("dall-e-3"):
            for item in answer["data"]:
                item["revised_prompt"] = f"A detailed rendering of: {params['prompt']}"
        if azure:  # Azure adds its content filter's verdicts to every answer
            answer["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
            for item in answer["data"]:
                item["content_filter_results"] = {"sexual": {"filtered": False, "severity": "safe"}}
        if not gpt_image:
            return 200, answer
        image_inputs = len(recorded.files) - (1 if any(part.name == "mask" for part in recorded.files) else 0)
        answer.update(
            background=params.get("background") or "opaque",
            output_format=output_format,
            size=params.get("size") or "1024x1024",
            quality=params.get("quality") or "medium",
            usage={
                "input_tokens": 10 + 40 * image_inputs,
                "input_tokens_details": {"image_tokens": 40 * image_inputs, "text_tokens": 10},
                "output_tokens": 50 * n,
                "output_tokens_details": {"image_tokens": 50 * n, "text_tokens": 0},
                "total_tokens": 10 + 40 * image_inputs + 50 * n,
            },
        )
        if mode == "openai_usage_without_details":  # as some OpenAI-compatible servers answer
            answer["usage"] = {"input_tokens": 10, "output_tokens": 50 * n, "total_tokens": 10 + 50 * n}
        return 200, answer

    def _gemini_answer(self, recorded: Recorded, model: str, mode: str) -> tuple[int, dict[str, Any]]:
        """What generateContent answers; gemini-3 models also emit "thought" parts first."""
        contents = recorded.json.get("contents") if isinstance(recorded.json, dict) else None
        if not isinstance(contents, list) or not contents:
            return 400, _error(
                "gemini",
                400,
                "* GenerateContentRequest.contents: contents is not specified",
                "INVALID_ARGUMENT",
            )
        png = base64.b64encode(_PNG).decode()
        thinking = model.startswith("gemini-3")
        parts: list[dict[str, Any]] = []
        if thinking:
            parts += [
                {"text": "**Planning the edit**", "thought": True},
                {"inlineData": {"mimeType": "image/png", "data": png}, "thought": True},
            ]
        parts += [
            {"text": "Here is the edited image."},
            {"inlineData": {"mimeType": "image/png", "data": png}},
        ]
        image_tokens = GEMINI_INPUT_IMAGE_TOKENS * len(recorded.inline_images)
        prompt_details = [{"modality": "TEXT", "tokenCount": GEMINI_PROMPT_TOKENS}]
        if image_tokens:
            prompt_details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        candidates = GEMINI_OUTPUT_IMAGE_TOKENS + GEMINI_OUTPUT_TEXT_TOKENS
        thoughts = GEMINI_THOUGHT_TOKENS if thinking else 0
        usage: dict[str, Any] = {
            "promptTokenCount": GEMINI_PROMPT_TOKENS + image_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": GEMINI_PROMPT_TOKENS + image_tokens + candidates + thoughts,
            "promptTokensDetails": prompt_details,
            "candidatesTokensDetails": [
                {"modality": "IMAGE", "tokenCount": GEMINI_OUTPUT_IMAGE_TOKENS},
                {"modality": "TEXT", "tokenCount": GEMINI_OUTPUT_TEXT_TOKENS},
            ],
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if mode == "gemini_usage_without_details":
            del usage["promptTokensDetails"], usage["candidatesTokensDetails"]
        answer: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": uuid.uuid4().hex,
        }
        if mode == "gemini_no_usage":
            del answer["usageMetadata"]
        return 200, _snake(answer) if mode == "gemini_snake_case" else answer

    def _xai_answer(self, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        """xAI's GenerateImageRequest -> GeneratedImageResponse (xai-sdk-ts spec/openapi.json)."""
        params = recorded.json if isinstance(recorded.json, dict) else None
        if params is None or not params.get("prompt"):
            return 422, _error("xai", 422, "Failed to deserialize the JSON body: missing field `prompt`", None)
        for name in ("size", "style"):  # "(Not supported)" in xAI's API
            if name in params:
                return 400, _error("xai", 400, f"Argument not supported: {name}", None)
        checks = (
            ("aspect_ratio", XAI_ASPECT_RATIOS),
            ("resolution", {"1k", "1.5k", "2k"}),
            ("response_format", {"url", "b64_json"}),
            ("quality", {"low", "medium", "high"}),
        )
        for name, allowed in checks:
            if name in params and params[name] not in allowed:
                return 400, _error("xai", 400, f"Invalid value for {name}: {params[name]!r}", None)
        n = int(params.get("n") or 1)
        if not 1 <= n <= 10:
            return 400, _error("xai", 400, "n must be between 1 and 10", None)
        jpeg = _IMAGES["jpeg"]
        revised = f"A vivid illustration of {params['prompt']}" if str(params.get("model")).startswith("grok-2") else ""
        data = []
        for _ in range(n):
            item: dict[str, Any] = {"mime_type": "image/jpeg", "revised_prompt": revised}
            if params.get("response_format", "url") == "b64_json":
                item.update(b64_json=base64.b64encode(jpeg).decode(), url=None)
            else:
                item.update(url=self._store(jpeg, "image/jpeg"), b64_json=None)
            data.append(item)
        return 200, {"data": data, "usage": {"cost_in_usd_ticks": 200_000_000 * n}}

    def _luma_answer(self, route: Route, recorded: Recorded, mode: str) -> tuple[int, dict[str, Any]]:
        """Luma's create-then-poll (lumaai-python types/generation.py)."""
        if route.call == "credits":
            return 200, {"credit_balance": 1000.0}
        if route.call == "poll":
            with self._lock:
                generation = self._luma.get(route.param)
                if generation is None:
                    return 404, _error("luma", 404, "Generation not found", None)
                self._advance(generation)
                return 200, generation.as_json()
        params = recorded.json if isinstance(recorded.json, dict) else None
        if params is None or not params.get("prompt"):
            return 400, _error("luma", 400, "prompt is required", None)
        if params.get("model") not in ("photon-1", "photon-flash-1"):
            return 400, _error("luma", 400, f"Invalid model: {params.get('model')!r}", None)
        if "aspect_ratio" in params and params["aspect_ratio"] not in LUMA_ASPECT_RATIOS:
            return 400, _error("luma", 400, f"Invalid aspect_ratio: {params['aspect_ratio']!r}", None)
        if params.get("format", "jpg") not in ("jpg", "png"):
            return 400, _error("luma", 400, f"Invalid format: {params['format']!r}", None)
        fails_with = {
            "moderation": "400: prompt not allowed because advanced moderation failed",
            "luma_failed": "Generation failed: internal error",
        }.get(mode)
        generation = LumaGeneration(id=str(uuid.uuid4()), request=params, fails_with=fails_with)
        with self._lock:
            self._luma[generation.id] = generation
        return 201, generation.as_json()

    def _advance(self, generation: LumaGeneration) -> None:
        """One poll: queued -> dreaming -> ... -> completed (or failed)."""
        if generation.state in ("completed", "failed"):
            return
        generation.polls += 1
        done = self.luma_polls_until_done and generation.polls >= self.luma_polls_until_done
        if not done:
            generation.state = "dreaming"
        elif generation.fails_with:
            generation.state = "failed"
        else:
            generation.state = "completed"
            png = generation.request.get("format") == "png"
            content, kind = (_PNG, "image/png") if png else (_IMAGES["jpeg"], "image/jpeg")
            generation.image_url = self._store(content, kind)

    def _hive_answer(self, recorded: Recorded, model: str) -> tuple[int, dict[str, Any]]:
        """Hive v3: {"input": {...}} -> {"output": [{"url"}, ...]}."""
        document = recorded.json if isinstance(recorded.json, dict) else {}
        fields = document.get("input")
        if not isinstance(fields, dict) or not fields.get("prompt"):
            return 400, _error("hive", 400, "input.prompt is required", None)
        n = fields.get("num_images", 1)
        if not isinstance(n, int) or not 1 <= n <= 6:
            return 400, _error("hive", 400, "num_images must be between 1 and 6", None)
        size = fields.get("image_size")
        if size is not None and not (
            isinstance(size, dict) and all(isinstance(size.get(side), int) for side in ("width", "height"))
        ):
            return 400, _error("hive", 400, "image_size must be {width, height}", None)
        output_format = fields.get("output_format", "jpeg")
        if output_format not in ("jpeg", "png"):
            return 400, _error("hive", 400, f"Invalid output_format: {output_format!r}", None)
        content, kind = (_PNG, "image/png") if output_format == "png" else (_IMAGES["jpeg"], "image/jpeg")
        output = [{"url": self._store(content, kind)} for _ in range(n)]
        return 200, {"id": str(uuid.uuid4()), "model": model, "input": fields, "output": output}

    def _store(self, content: bytes, content_type: str) -> str:
        name = f"{uuid.uuid4().hex}.{content_type.split('/')[1]}"
        self._files[name] = (content, content_type)
        return f"{self.url}/files/{name}"


def _protocol(path: str, query: dict[str, list[str]]) -> str:
    if path.startswith("/xai/"):
        return "xai"
    if "/dream-machine/v1/" in path:
        return "luma"
    if path.startswith("/hive/"):
        return "hive"
    if path.startswith("/openai/") or "/deployments/" in path or "api-version" in query:
        return "azure"
    if path.startswith("/v1beta/") or _GEMINI_PATH.search(path):
        return "gemini"
    return "openai"


def _route(method: str, path: str, query: dict[str, list[str]]) -> Route | None:
    """Which call of which protocol this is; None for a path no provider serves."""
    protocol = _protocol(path, query)
    if protocol == "luma":
        if method == "POST" and path.endswith("/generations/image"):
            return Route("luma", "create")
        if method == "GET" and path.endswith("/dream-machine/v1/credits"):
            return Route("luma", "credits")
        poll = _LUMA_GENERATION.search(path)
        return Route("luma", "poll", unquote(poll["id"])) if method == "GET" and poll else None
    if protocol == "hive":
        model = _HIVE_MODEL.match(path)
        return Route("hive", "generate", unquote(model["model"])) if method == "POST" and model else None
    if protocol == "gemini":
        gemini = _GEMINI_PATH.search(path)
        if method == "POST" and gemini:
            return Route("gemini", "generate", gemini["model"])
        return Route("gemini", "list") if method == "GET" and path.endswith("/models") else None
    if method == "GET":
        listing = path.endswith("/image-generation-models") if protocol == "xai" else path.endswith("/models")
        return Route(protocol, "list") if listing else None
    if method == "POST" and path.endswith("/images/edits") and protocol != "xai":
        return Route(protocol, "edit")
    if method == "POST" and path.endswith("/images/generations"):
        return Route(protocol, "generate")
    return None


def _check_auth(protocol: str, recorded: Recorded) -> tuple[int, dict[str, Any]] | None:
    """Each provider's answer to a call without its credential."""
    headers = recorded.headers
    if protocol == "gemini":
        if not headers.get("x-goog-api-key"):
            message = "Method doesn't allow unregistered callers. Please use API Key or other form of identity."
            return 403, _error("gemini", 403, message, "PERMISSION_DENIED")
        return None
    if protocol == "azure":
        if not headers.get("api-key"):
            return 401, _error("azure", 401, "Access denied due to missing subscription key.", "401")
        return None
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
        return 401, _error(protocol, 401, "You didn't provide an API key.", None)
    return None


def _azure_deployment(path: str) -> str | None:
    match = re.search(r"/deployments/([^/]+)/", path)
    return unquote(match[1]) if match else None


def _azure_refusal(recorded: Recorded, *, edit: bool) -> tuple[int, dict[str, Any]] | None:
    """Azure's own 4xx for a wrong URL: a missing api-version, edits on an old one, v1 without model."""
    version = (recorded.query.get("api-version") or [""])[0]
    if "/deployments/" in recorded.path:
        if not version:
            message = "Missing required query parameter: api-version"
            return 400, _error("azure", 400, message, "MissingApiVersionParameter")
        if edit and not (version[:4].isdigit() and version[:10] >= AZURE_EDIT_SINCE[:10]):
            return 404, _error("azure", 404, "Resource not found", "404")
        return None
    if not recorded.path.startswith("/openai/v1/"):
        return 404, _error("azure", 404, "Resource not found", "404")
    params = recorded.fields if edit else (recorded.json if isinstance(recorded.json, dict) else {})
    if not params.get("model"):
        return 400, _error("azure", 400, "The v1 API needs the deployment name in `model`.", "BadRequest", "model")
    return None


def _model_list(protocol: str) -> dict[str, Any]:
    if protocol == "gemini":
        models = ["gemini-3.1-flash-image", "gemini-3-pro-image"]
        return {"models": [{"name": f"models/{m}", "supportedGenerationMethods": ["generateContent"]} for m in models]}
    if protocol == "xai":
        return {"models": [{"id": "grok-imagine-image", "object": "model", "owned_by": "xai", "aliases": []}]}
    return {"object": "list", "data": [{"id": "gpt-image-1", "object": "model", "owned_by": "openai"}]}


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

    def read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

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
        """A fault in the protocol's own shape. For 503 and 429, `seconds` (when set) is the
        Retry-After the answer carries."""
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
            key = (
                recorded.headers.get("x-goog-api-key")
                or recorded.headers.get("api-key")
                or recorded.headers.get("authorization", "").removeprefix("Bearer ")
            )
            self.reply_json(401, _error(protocol, 401, f"Incorrect API key provided: {key}.", "invalid_api_key"))
        elif mode == "moderation":
            self.reply_moderation(protocol)
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
        elif mode in ("nan", "lone_surrogate"):
            png = base64.b64encode(image_bytes("png", (8, 8))).decode()
            if mode == "nan":
                answer = f'{{"created": 1, "data": [{{"b64_json": "{png}"}}], "usage": {{"input_tokens": NaN}}}}'
            else:  # JSON's escape of a lone surrogate: json.loads makes it part of the str
                answer = f'{{"created": 1, "data": [{{"b64_json": "{png}", "revised_prompt": "a hat \\ud800"}}]}}'
            self.reply(200, answer.encode(), "application/json")
        else:  # luma_failed on a call other than a Luma create: nothing to fail
            self.reply_json(500, _error(protocol, 500, f"mode {mode} does not apply here", None))

    def reply_moderation(self, protocol: str) -> None:
        """Each provider's safety refusal (Luma's comes as a failed generation, see _luma_answer)."""
        if protocol == "gemini":
            self.reply_json(200, {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}})
        elif protocol == "azure":  # MicrosoftDocs azure-ai-docs, how-to/dall-e.md
            message = "Your task failed as a result of our safety system."
            self.reply_json(400, _error("azure", 400, message, "contentFilter", "prompt"))
        elif protocol == "xai":  # GeneratedImageResponse with block_reason (input moderation)
            self.reply_json(200, {"data": [], "block_reason": "The prompt was flagged by input moderation."})
        elif protocol == "hive":
            self.reply_json(400, _error("hive", 400, "Prompt was flagged by Hive's text moderation.", None))
        else:
            message = "Your request was rejected by the safety system. If you believe this is an error, contact us."
            error = _error(protocol, 400, message, "moderation_blocked")
            error["error"]["type"] = "image_generation_user_error"
            error["error"]["moderation_details"] = {"moderation_stage": "input", "categories": ["violence"]}
            self.reply_json(400, error)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown stand-in mode {mode!r}; known: {', '.join(sorted(MODES))}")


def _error(protocol: str, status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """An error body in the protocol's own shape (`code` is Gemini's `status` there).

    xAI answers {"code", "error"} (xai-sdk-ts errors); Luma, a FastAPI service, {"detail"}; Hive's
    v3 error body is not documented anywhere we could read: {"error", "status_code"} here.
    """
    if protocol == "gemini":
        return {"error": {"code": status, "message": message, "status": code or "UNKNOWN"}}
    if protocol == "xai":
        return {"code": code or "Client specified an invalid argument", "error": message}
    if protocol == "luma":
        return {"detail": message}
    if protocol == "hive":
        return {"error": message, "status_code": status}
    if protocol == "azure":
        return {"error": {"code": code or str(status), "message": message, "param": param, "type": None}}
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _receive(handler: _Handler, path: str, query: dict[str, list[str]]) -> Recorded:
    """The request as it came. A multipart body is parsed as it arrives and its files hashed, never
    held whole, so a large upload costs the stand-in (in a test's own process) no memory."""
    headers = {name.lower(): value for name, value in handler.headers.items()}
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    stream: io.BufferedIOBase = handler.rfile
    size = int(headers.get("content-length") or 0)
    if chunked:
        body = handler.read_chunked()
        stream, size = io.BytesIO(body), len(body)
    recorded = Recorded(handler.command, path, query, headers, 0, chunked, handler.client_address[1])
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data") and size:
        recorded.body_size = _read_form(recorded, stream, size, content_type)
        return recorded
    body = stream.read(size)
    recorded.body_size = len(body)
    if content_type.startswith("application/json") and body:
        try:
            recorded.json = json.loads(body)
        except ValueError:
            recorded.json = None
        recorded.inline_images = _inline_images(recorded.json)
    return recorded


def _read_form(recorded: Recorded, stream: io.BufferedIOBase, size: int, content_type: str) -> int:
    """The fields and files of a multipart body of `size` bytes, into `recorded`; the bytes read."""
    taken = 0

    def read(wanted: int) -> bytes:
        nonlocal taken
        chunk = stream.read(min(wanted, size - taken))
        taken += len(chunk)
        return chunk

    boundary = multipart.parse_options_header(content_type)[1].get("boundary", "")
    parser = multipart.PushMultipartParser(boundary, content_length=size)
    segment: Any = None
    value, digest = bytearray(), hashlib.sha256()
    for event in parser.parse_blocking(read, chunk_size=1024 * 1024):
        if isinstance(event, multipart.MultipartSegment):  # a part starts: its headers
            segment, value, digest = event, bytearray(), hashlib.sha256()
        elif event is not None:  # a piece of its content
            if segment.filename is None:
                value += event
            else:
                digest.update(event)
        elif segment.filename is None:  # the end of a field
            recorded.fields[segment.name] = value.decode()
        else:  # the end of a file
            disposition = segment.header("Content-Disposition", "")
            content_type = segment.header("Content-Type")
            recorded.files.append(
                FilePart(segment.name, segment.filename, content_type, segment.size, digest.hexdigest(), disposition)
            )
    while read(1024 * 1024):  # anything after the closing boundary
        pass
    return taken


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
