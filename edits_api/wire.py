"""From the wire to a typed request: multipart forms for edits, JSON bodies for generations; and
the JSON that goes back on the wire (answers) or comes in from a provider.

Only the wire's own rules live here (known fields, one value each, types); what a model family
accepts is checked later, per image model, against entities.vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder

from edits_api.errors import GatewayError, invalid
from entities import vocabulary
from entities.catalog import Operation

_IMAGE_KEYS = ("image", "image[]")
# What orjson does not write itself (Decimal, lazy text) and datetimes (passed through, so that
# they read as Django's encoder writes them: milliseconds, "Z") go to Django's encoder.
_ANSWER_DEFAULT = DjangoJSONEncoder().default
_ANSWER_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def read_json(raw: bytes | bytearray | str) -> Any:
    """JSON read with orjson (an image's b64_json is megabytes: half json's time); what orjson
    refuses is read again as Python's json reads it (NaN, Infinity, "\ud800" alone). ValueError
    when neither reads it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def answer_json(data: Any) -> bytes:
    """An answer's body as compact UTF-8 JSON, as DRF's JSONRenderer writes it. orjson, not json:
    json escapes a string one character at a time, and an image's b64_json is megabytes (a 2 MB
    image: 9.2 ms with json, 0.3 ms with orjson)."""
    try:
        return orjson.dumps(data, default=_ANSWER_DEFAULT, option=_ANSWER_OPTIONS)
    except orjson.JSONEncodeError:
        # What UTF-8 cannot carry (a lone surrogate a provider sent as "\ud800") or orjson cannot
        # write (an integer past 64 bits): json writes them, the first as the same \u escape.
        return json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False, separators=(",", ":")).encode()


# The request's own fields, not options of the image model.
_ROUTING_FIELDS = ("prompt", "model", "provider", "stream", "partial_images")


@dataclass(frozen=True)
class ImagesRequest:
    """One client request for an image operation, as typed values.

    `options` holds the client's values of the family-checked fields (n, size, quality, ...): ints
    for the integer fields, strings otherwise; a field the client did not send is absent.
    """

    operation: Operation
    prompt: str
    model: str | None = None
    provider: str | None = None  # a ref id of the route
    options: dict[str, Any] = field(default_factory=dict)
    images: tuple[UploadedFile, ...] = ()
    mask: UploadedFile | None = None


def _missing_prompt() -> GatewayError:
    return GatewayError(400, "'prompt' is required.", param="prompt", code="missing_required_parameter")


def _int(value: str, param: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise invalid(f"'{param}' must be a whole number.", param) from None


def _no_streaming(stream: Any, partial_images: Any) -> None:
    if stream not in (None, False, "false", "False", "0", ""):
        raise invalid("Streaming is not supported by this gateway; leave 'stream' unset.", "stream")
    if partial_images not in (None, 0, "0", ""):
        raise invalid("'partial_images' needs streaming, which this gateway does not support.", "partial_images")


def _request(operation: Operation, values: dict[str, Any], **files: Any) -> ImagesRequest:
    prompt = values.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        if prompt is not None and not isinstance(prompt, str):
            raise invalid("'prompt' must be a string.", "prompt", "invalid_type")
        raise _missing_prompt()
    _no_streaming(values.pop("stream", None), values.pop("partial_images", None))
    model, provider = values.pop("model", None), values.pop("provider", None)
    if len(str(values.get("user") or "")) > 256:
        raise invalid("'user' is longer than 256 characters.", "user")
    return ImagesRequest(
        operation=operation,
        prompt=prompt,
        model=model or None,
        provider=provider or None,
        options={k: v for k, v in values.items() if v is not None},
        **files,
    )


def edit_request(fields: dict[str, list[str]], files: dict[str, list[UploadedFile]]) -> ImagesRequest:
    """A multipart edit: one value per known field, image files as `image`, `image[]` or `image[N]`."""
    values: dict[str, Any] = {}
    for key, sent in fields.items():
        if key not in vocabulary.EDIT_FIELDS:
            if key in (*_IMAGE_KEYS, "mask"):
                raise invalid(f"'{key}' must be a file part, not a text field.", key, "invalid_type")
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        if len(sent) != 1:
            raise invalid(f"'{key}' was sent {len(sent)} times; send it once.", key)
        value = sent[0]
        if value == "" and key not in ("prompt",):
            continue  # an empty form field is an absent one
        values[key] = _int(value, key) if key in vocabulary.INTEGER_FIELDS else value
    images: list[UploadedFile] = []
    mask: UploadedFile | None = None
    for key, uploads in files.items():
        if key in _IMAGE_KEYS or (key.startswith("image[") and key[6:-1].isdigit() and key.endswith("]")):
            images.extend(uploads)
        elif key in ("mask", "mask[]"):
            if len(uploads) != 1 or mask is not None:
                raise invalid("Send at most one 'mask'.", "mask")
            mask = uploads[0]
        else:
            raise invalid(f"Unknown file parameter: '{key}'.", key, "unknown_parameter")
    request = _request(Operation.EDIT, values, images=tuple(images), mask=mask)
    if not images:
        raise GatewayError(
            400, "'image' is required: send at least one image file.", param="image",
            code="missing_required_parameter",
        )  # fmt: skip
    if len(images) > vocabulary.MAX_IMAGES:
        raise invalid(f"At most {vocabulary.MAX_IMAGES} images; got {len(images)}.", "image")
    return request


def generation_request(body: Any) -> ImagesRequest:
    """A JSON generation: an object of known fields, each of its JSON type (null: absent)."""
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.", None, "invalid_request_body")
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key not in vocabulary.GENERATION_FIELDS:
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        if value is None or key == "stream":
            values[key] = value
        elif key in vocabulary.INTEGER_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid(f"'{key}' must be a whole number.", key, "invalid_type")
            values[key] = value
        elif not isinstance(value, str):
            raise invalid(f"'{key}' must be a string.", key, "invalid_type")
        else:
            values[key] = value
    return _request(Operation.GENERATION, values)
