"""Google Gemini's native generateContent protocol, with images sent inline as base64.

Checked against googleapis/python-genai (`types.py`: Part, FinishReason, BlockedReason,
GenerateContentResponseUsageMetadata, MediaModality; `models.py`: the `models` list path).
The model's chat text ("Here is the edited image.") is not a revised prompt and is dropped;
`usageMetadata` becomes OpenAI's `usage` (see `call_usage`).
"""

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
from edits_api.providers import http, shape
from edits_api.providers.base import (
    Connection,
    ImageFile,
    ImageItem,
    ImageRequest,
    ImageResult,
    ProbeTarget,
    ProviderAdapter,
)
from edits_api.providers.billing import partly_billed

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
        image_config(request.size)

    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        image_config(request.size)

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_edit(connection, request)
        return _generate_content(connection, request, request.images)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_generate(connection, request)
        return _generate_content(connection, request, [])

    def probe_target(self, connection: Connection) -> ProbeTarget:
        headers = {"x-goog-api-key": connection.token, "Accept": "application/json"}
        return ProbeTarget(f"{connection.base_url}/models", headers, "its model list")


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
    usages: list[dict[str, Any] | None] = []
    for _ in range(max(request.n, 1)):
        try:
            with GenerateContentBody(request.prompt, images, config) as body:
                payload = http.send_json(connection, "POST", url, headers=headers, data=body, deadline=deadline)
            items.extend(_items(connection, payload))
        except GatewayError as error:
            if items:  # the images made so far were billed: a retry would pay for them again
                raise partly_billed(error, connection) from error
            raise
        usages.append(call_usage(payload, text_only_input=not images))
    return ImageResult(created=int(time.time()), items=items[: max(request.n, 1)], usage=sum_usage(usages))


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
        said = " ".join(texts)
        # The model's own words often say why it drew nothing; they are not a revised prompt.
        raise http.bad_response(
            connection, f"no image in the answer (it said: {said[:200]!r})" if said else "no image in the answer"
        )
    return [ImageItem(b64_json=data, content_type=mime) for mime, data in images]


def _blocked(connection: Connection, why: str) -> GatewayError:
    return GatewayError(
        400,
        f"{connection.provider_name}'s safety system refused this request: {why}.",
        type="invalid_request_error",
        code="moderation_blocked",
    )


# MediaModality values counted as text: MODALITY_UNSPECIFIED "is treated as TEXT" (python-genai).
_TEXT_MODALITIES = frozenset({"TEXT", "MODALITY_UNSPECIFIED"})


def call_usage(payload: dict[str, Any], *, text_only_input: bool) -> dict[str, Any] | None:
    """One answer's usageMetadata in OpenAI's shape, or None when it cannot be mapped.

    input_tokens = promptTokenCount, split by promptTokensDetails' modalities (without them, only a
    text-only request has a known split); output_tokens = candidatesTokenCount + thoughtsTokenCount
    (Gemini bills thinking as output, and totalTokenCount counts it); output_tokens_details from
    candidatesTokensDetails when given, thinking counted as text.
    """
    metadata = _get(payload, "usageMetadata", "usage_metadata")
    prompt = _count(_get(metadata, "promptTokenCount", "prompt_token_count"))
    candidates = _count(_get(metadata, "candidatesTokenCount", "candidates_token_count"))
    if prompt is None or candidates is None:
        return None
    thoughts = _count(_get(metadata, "thoughtsTokenCount", "thoughts_token_count")) or 0
    input_split = _modality_split(_get(metadata, "promptTokensDetails", "prompt_tokens_details"))
    if input_split is None:
        if not text_only_input:
            return None
        input_split = (prompt, 0)
    output_split = _modality_split(_get(metadata, "candidatesTokensDetails", "candidates_tokens_details"))
    return shape.openai_usage(
        input_tokens=prompt,
        output_tokens=candidates + thoughts,
        total_tokens=_count(_get(metadata, "totalTokenCount", "total_token_count")),
        text_tokens=input_split[0],
        image_tokens=input_split[1],
        output_text_tokens=output_split[0] + thoughts if output_split else None,
        output_image_tokens=output_split[1] if output_split else None,
    )


def sum_usage(usages: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The usage of the n calls made for n images; None when any call's usage is unknown."""
    if not usages or any(usage is None for usage in usages):
        return None
    known = [usage for usage in usages if usage is not None]
    with_output_details = all("output_tokens_details" in usage for usage in known)
    return shape.openai_usage(
        input_tokens=sum(u["input_tokens"] for u in known),
        output_tokens=sum(u["output_tokens"] for u in known),
        total_tokens=sum(u["total_tokens"] for u in known),
        text_tokens=sum(u["input_tokens_details"]["text_tokens"] for u in known),
        image_tokens=sum(u["input_tokens_details"]["image_tokens"] for u in known),
        output_text_tokens=sum(u["output_tokens_details"]["text_tokens"] for u in known)
        if with_output_details
        else None,
        output_image_tokens=sum(u["output_tokens_details"]["image_tokens"] for u in known)
        if with_output_details
        else None,
    )


def _modality_split(details: Any) -> tuple[int, int] | None:
    """(text, image) token counts from a list of ModalityTokenCount, or None when not a list."""
    if not isinstance(details, list):
        return None
    text = image = 0
    for entry in details:
        modality = str(_get(entry, "modality", "modality") or "MODALITY_UNSPECIFIED").upper()
        count = _count(_get(entry, "tokenCount", "token_count")) or 0
        if modality == "IMAGE":
            image += count
        elif modality in _TEXT_MODALITIES:
            text += count
    return text, image


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
