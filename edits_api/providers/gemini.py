"""Google Gemini's native generateContent protocol, with images sent inline as base64."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from edits_api.errors import GatewayError, invalid
from edits_api.providers import http
from edits_api.providers.base import (
    Connection,
    ImageFile,
    ImageItem,
    ImageRequest,
    ImageResult,
    ProviderAdapter,
)

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_ASPECT_LOGS = {name: math.log(int(name.split(":")[0]) / int(name.split(":")[1])) for name in ASPECT_RATIOS}

# finishReason values meaning the output was withheld (the rest: STOP, MAX_TOKENS, tool-call noise).
BLOCKED_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "OTHER",
        "LANGUAGE",
        "NO_IMAGE",
    }
)

_RAW_CHUNK = 3 * 64 * 1024  # a multiple of 3, so chunks encode to base64 without padding mid-stream


class GeminiAdapter(ProviderAdapter):
    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        if request.mask is not None:
            raise invalid(
                f"{connection.provider_name} has no mask support: leave out `mask` and describe "
                "the region to change in the prompt.",
                "mask",
            )

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_edit(connection, request)
        return _generate_content(connection, request, request.images)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        return _generate_content(connection, request, [])


def image_config(size: str | None) -> dict[str, str]:
    """OpenAI's "WxH" as Gemini's nearest aspectRatio and an imageSize by the long side."""
    if size is None or size == "auto":
        return {}
    try:
        width, height = (int(side) for side in size.lower().split("x"))
    except ValueError:
        raise invalid(f"size must be WIDTHxHEIGHT or auto, not {size!r}.", "size") from None
    if width <= 0 or height <= 0:
        raise invalid(f"size must be WIDTHxHEIGHT or auto, not {size!r}.", "size")
    # Nearest on a log scale, so 2:1 is as far from 1:1 as 1:2 is.
    ratio = math.log(width / height)
    aspect = min(_ASPECT_LOGS, key=lambda name: abs(_ASPECT_LOGS[name] - ratio))
    long_side = max(width, height)
    image_size = "1K" if long_side <= 1024 else "2K" if long_side <= 2048 else "4K"
    return {"aspectRatio": aspect, "imageSize": image_size}


def _generate_content(connection: Connection, request: ImageRequest, images: list[ImageFile]) -> ImageResult:
    """One generateContent call per requested image (Gemini has no `n`), within one time budget."""
    config = image_config(request.size)
    model = quote(request.model.removeprefix("models/"), safe="")
    url = f"{connection.base_url}/models/{model}:generateContent"
    headers = {"x-goog-api-key": connection.token, "Content-Type": "application/json"}
    deadline = time.monotonic() + connection.timeout_s
    items: list[ImageItem] = []
    usage: dict[str, int] | None = None
    for _ in range(max(request.n, 1)):
        with GenerateContentBody(request.prompt, images, config) as body:
            payload = http.send_json(connection, "POST", url, headers=headers, data=body, deadline=deadline)
        items.extend(_items(connection, payload))
        usage = _add_usage(usage, payload)
    return ImageResult(created=int(time.time()), items=items[: max(request.n, 1)], usage=usage)


class GenerateContentBody:
    """The generateContent JSON as a stream: each image is base64-encoded from its file as it is
    sent, so neither the file nor the JSON is ever whole in memory. ``len()`` is exact, so the
    request carries a Content-Length instead of being chunked."""

    def __init__(self, prompt: str, images: list[ImageFile], config: dict[str, str]) -> None:
        self._images = images
        self._files: contextlib.ExitStack = contextlib.ExitStack()
        # The JSON is rendered with a random marker where each image's base64 goes, then split.
        marker = uuid.uuid4().hex
        parts: list[dict[str, Any]] = [{"text": prompt}]
        parts += [{"inlineData": {"mimeType": image.content_type, "data": marker}} for image in images]
        generation_config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        if config:
            generation_config["imageConfig"] = config
        document = {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation_config}
        self._pieces = [piece.encode() for piece in json.dumps(document).split(marker)]
        self._length = 0
        self._chunks: Iterator[bytes] = iter(())
        self._current = b""
        self._offset = 0

    def __enter__(self) -> GenerateContentBody:
        opened = [self._files.enter_context(image.open()) for image in self._images]
        sizes = [f.seek(0, os.SEEK_END) for f in opened]
        for f in opened:
            f.seek(0)
        self._length = sum(len(piece) for piece in self._pieces) + sum(4 * ((n + 2) // 3) for n in sizes)
        self._chunks = self._generate(opened)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._files.close()

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self._offset >= len(self._current):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._current, self._offset = chunk, 0
            available = len(self._current) - self._offset
            take = available if size < 0 else min(size - len(out), available)
            out += self._current[self._offset : self._offset + take]
            self._offset += take
        return bytes(out)

    def _generate(self, files: list[Any]) -> Iterator[bytes]:
        yield self._pieces[0]
        for file, piece in zip(files, self._pieces[1:], strict=True):
            while raw := _read_exactly(file, _RAW_CHUNK):
                yield base64.b64encode(raw)
            yield piece


def _read_exactly(file: Any, size: int) -> bytes:
    """`size` bytes unless the file ends first: a short read mid-file would misplace base64 padding."""
    data = file.read(size)
    while data and len(data) < size:
        more = file.read(size - len(data))
        if not more:
            break
        data += more
    return bytes(data)


def _get(mapping: Any, camel: str, snake: str) -> Any:
    """A field in the camelCase or snake_case spelling (proxies answer in either)."""
    if not isinstance(mapping, dict):
        return None
    return mapping.get(camel, mapping.get(snake))


def _items(connection: Connection, payload: dict[str, Any]) -> list[ImageItem]:
    """The images of one answer; a block is moderation_blocked, an answer without image a 502."""
    candidates = payload.get("candidates")
    if not candidates:
        reason = _get(_get(payload, "promptFeedback", "prompt_feedback"), "blockReason", "block_reason")
        if reason:
            raise _blocked(connection, f"the prompt was blocked ({reason})")
        raise http.bad_response(connection, "no candidates")
    if not isinstance(candidates, list):
        raise http.bad_response(connection, "`candidates` is not a list")
    images: list[tuple[str, str]] = []
    texts: list[str] = []
    finish_reasons: list[str] = []
    for candidate in candidates:
        finish_reasons.append(str(_get(candidate, "finishReason", "finish_reason") or ""))
        content = candidate.get("content") if isinstance(candidate, dict) else None
        for part in (content.get("parts") if isinstance(content, dict) else None) or []:
            if not isinstance(part, dict) or part.get("thought"):  # interim "thinking" output
                continue
            inline = _get(part, "inlineData", "inline_data")
            mime_type = _get(inline, "mimeType", "mime_type") or "image/png"
            if isinstance(inline, dict) and isinstance(inline.get("data"), str) and mime_type.startswith("image/"):
                images.append((mime_type, inline["data"]))
            elif isinstance(part.get("text"), str) and part["text"].strip():
                texts.append(part["text"].strip())
    if not images:
        blocked = [reason for reason in finish_reasons if reason in BLOCKED_FINISH_REASONS]
        if blocked:
            raise _blocked(connection, f"the answer was withheld ({blocked[0]})")
        raise http.bad_response(connection, "no image in the answer")
    revised_prompt = "\n".join(texts) or None
    return [ImageItem(b64_json=data, content_type=mime, revised_prompt=revised_prompt) for mime, data in images]


def _blocked(connection: Connection, why: str) -> GatewayError:
    return GatewayError(
        400,
        f"{connection.provider_name}'s safety system refused this request: {why}.",
        type="invalid_request_error",
        code="moderation_blocked",
    )


def _add_usage(total: dict[str, int] | None, payload: dict[str, Any]) -> dict[str, int] | None:
    """usageMetadata in OpenAI's names, summed over the calls made for n images."""
    metadata = _get(payload, "usageMetadata", "usage_metadata")
    if not isinstance(metadata, dict):
        return total
    total = total or {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for name, camel, snake in (
        ("input_tokens", "promptTokenCount", "prompt_token_count"),
        ("output_tokens", "candidatesTokenCount", "candidates_token_count"),
        ("total_tokens", "totalTokenCount", "total_token_count"),
    ):
        count = _get(metadata, camel, snake)
        total[name] += count if isinstance(count, int) else 0
    return total
