"""Checks on a request's fields and images before any provider is called.

Rules follow OpenAI's API per model family (gpt-image, dall-e-2, dall-e-3) and Gemini's native API;
every failure is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from edits_api.errors import GatewayError, invalid
from edits_api.providers.base import ImageFile

MAX_IMAGES = 16
MAX_SIDE = 16_384  # pixels; larger declared sizes are refused from the header (image bombs)
MAX_PIXELS = 64_000_000
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")

# Everything a client may send, per operation; anything else is refused as unknown.
EDIT_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "background", "response_format", "output_format",
        "output_compression", "input_fidelity", "user", "provider", "stream", "partial_images",
    }
)  # fmt: skip
GENERATION_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "style", "background", "output_format",
        "output_compression", "moderation", "response_format", "user", "provider", "stream",
        "partial_images",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Family:
    name: str
    max_prompt: int
    sizes: tuple[str, ...] | None  # None: any WxH (checked loosely)
    qualities: tuple[str, ...]
    max_images: int
    max_image_bytes: int
    backgrounds: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()
    input_fidelity: bool = False
    styles: tuple[str, ...] = ()
    max_n: int = 10


_GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_GPT_QUALITIES = ("auto", "low", "medium", "high")
_FORMATS = ("png", "jpeg", "webp")


def family_for(*, provider: str, model: str, operation: str) -> Family:
    """The rules that apply to this model at this provider."""
    if provider == "gemini":
        # Gemini takes any aspect ratio (mapped from WxH); quality is accepted and has no effect.
        return Family("gemini", 32_000, None, _GPT_QUALITIES, 14, 20 * 2**20, ("auto", "opaque"), ("png",))
    if model == "dall-e-2":
        sizes = ("256x256", "512x512", "1024x1024")
        return Family("dall-e-2", 1_000, sizes, ("standard", "auto"), 1, 4 * 2**20)
    if model == "dall-e-3" and operation == "generation":
        sizes = ("1024x1024", "1792x1024", "1024x1792")
        return Family("dall-e-3", 4_000, sizes, ("standard", "hd", "auto"), 0, 0, styles=("vivid", "natural"), max_n=1)
    if provider != "openai" and not model.startswith(("gpt-image", "chatgpt-image", "dall-e")):
        # Another OpenAI-compatible provider's own model: OpenAI's value sets, but no OpenAI size caps
        # (the route's max_size_upload bounds the upload; the provider judges the rest).
        return Family(
            "openai-compatible",
            32_000,
            None,
            (*_GPT_QUALITIES, "standard"),
            MAX_IMAGES,
            2**40,
            ("transparent", "opaque", "auto"),
            _FORMATS,
            input_fidelity=True,
        )
    fidelity = not model.startswith("gpt-image-1-mini")
    flexible = model.startswith("gpt-image-2")
    qualities = (*_GPT_QUALITIES, "standard") if operation == "edition" else _GPT_QUALITIES
    return Family(
        "gpt-image",
        32_000,
        None if flexible else _GPT_SIZES,
        qualities,
        MAX_IMAGES,
        50 * 2**20,
        ("transparent", "opaque", "auto"),
        _FORMATS,
        input_fidelity=fidelity,
    )


def _int(value: Any, param: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise invalid(f"'{param}' must be a whole number between {low} and {high}.", param) from None
    if not low <= number <= high:
        raise invalid(f"'{param}' must be between {low} and {high}, not {number}.", param)
    return number


def _one_of(value: str | None, allowed: tuple[str, ...], param: str, family: Family) -> None:
    if value is None:
        return
    if not allowed:
        raise invalid(f"'{param}' is not supported by {family.name} models.", param, "unsupported_parameter")
    if value not in allowed:
        raise invalid(
            f"Invalid value for '{param}': {value!r}. Supported by {family.name}: {', '.join(allowed)}.",
            param,
        )


def _check_size(size: str | None, family: Family) -> None:
    if size is None or (size == "auto" and family.sizes is None):
        return
    if family.sizes is not None:
        _one_of(size, family.sizes, "size", family)
        return
    match = _SIZE.match(size)
    if not match:
        raise invalid(f"Invalid value for 'size': {size!r}. Use WIDTHxHEIGHT (e.g. 1024x1024) or auto.", "size")
    width, height = int(match[1]), int(match[2])
    if family.name == "gpt-image":  # gpt-image-2's flexible sizes
        if width % 16 or height % 16 or max(width, height) > 3840 or min(width, height) > 2160:
            raise invalid("gpt-image-2 sizes need sides divisible by 16, at most 3840x2160.", "size")
        if max(width, height) > 3 * min(width, height):
            raise invalid("gpt-image-2 sizes need an aspect ratio between 1:3 and 3:1.", "size")
    elif max(width, height) > 8192:
        raise invalid(f"'size' {size} is larger than 8192 pixels on a side.", "size")


def check_fields(fields: dict[str, Any], *, family: Family, operation: str) -> tuple[str, int, int | None]:
    """Checks every field; returns the prompt, n and output_compression as parsed values."""
    prompt = fields.get("prompt")
    if prompt is None or not str(prompt).strip():
        raise GatewayError(400, "'prompt' is required.", param="prompt", code="missing_required_parameter")
    prompt = str(prompt)
    if len(prompt) > family.max_prompt:
        raise invalid(
            f"'prompt' is {len(prompt)} characters; {family.name} takes at most {family.max_prompt}.",
            "prompt",
        )
    n = _int(fields.get("n", 1), "n", 1, family.max_n)
    _check_size(fields.get("size"), family)
    _one_of(fields.get("quality"), family.qualities, "quality", family)
    _one_of(fields.get("background"), family.backgrounds, "background", family)
    _one_of(fields.get("output_format"), family.output_formats, "output_format", family)
    _one_of(fields.get("response_format"), ("url", "b64_json"), "response_format", family)
    if fields.get("background") == "transparent" and fields.get("output_format") == "jpeg":
        raise invalid("A transparent background needs output_format png or webp.", "background")
    compression = None
    if fields.get("output_compression") is not None:
        if fields.get("output_format") not in ("jpeg", "webp"):
            raise invalid("'output_compression' applies only to output_format jpeg or webp.", "output_compression")
        compression = _int(fields["output_compression"], "output_compression", 0, 100)
    if operation == "edition":
        fidelity = ("high", "low") if family.input_fidelity else ()
        _one_of(fields.get("input_fidelity"), fidelity, "input_fidelity", family)
    else:
        _one_of(fields.get("style"), family.styles, "style", family)
        _one_of(
            fields.get("moderation"),
            ("low", "auto") if family.name == "gpt-image" else (),
            "moderation",
            family,
        )
    if str(fields.get("stream", "false")).lower() not in ("false", "0"):
        raise invalid("Streaming is not supported by this gateway; leave 'stream' unset.", "stream")
    if fields.get("partial_images") not in (None, "0", 0):
        raise invalid("'partial_images' needs streaming, which this gateway does not support.", "partial_images")
    if fields.get("user") is not None and len(str(fields["user"])) > 256:
        raise invalid("'user' is longer than 256 characters.", "user")
    return prompt, n, compression


def inspect_image(upload: Any, param: str) -> ImageFile:
    """Reads the header of an uploaded file (never its pixels): format, size, mode."""
    upload.seek(0)
    try:
        with Image.open(upload, formats=list(_MIME)) as image:
            fmt, (width, height), mode = image.format, image.size, image.mode
            has_alpha = "A" in mode or "transparency" in image.info
    except Image.DecompressionBombError:
        raise invalid(f"'{param}' declares too many pixels to be a real image.", param, "invalid_image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise invalid(f"'{param}' is not a PNG, JPEG or WebP image.", param, "invalid_image") from None
    finally:
        upload.seek(0)
    if width < 1 or height < 1 or max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise invalid(
            f"'{param}' is {width}x{height}; images may be at most {MAX_SIDE} px a side.",
            param,
            "invalid_image",
        )
    path = upload.temporary_file_path() if hasattr(upload, "temporary_file_path") else None
    return ImageFile(
        filename=_safe_filename(upload.name, fmt or "PNG"),
        content_type=_MIME[fmt or "PNG"],
        size=upload.size,
        width=width,
        height=height,
        path=path,
        data=None if path else upload.read(),
        has_alpha=has_alpha,
    )


def _safe_filename(name: str | None, fmt: str) -> str:
    """A filename with no path or control characters, and the extension its bytes deserve."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", (name or "image").rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    stem = stem.rsplit(".", 1)[0].strip("._")[:100] or "image"
    return f"{stem}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"


def check_images(images: list[ImageFile], mask: ImageFile | None, family: Family) -> None:
    if not images:
        raise GatewayError(400, "'image' is required: send at least one image file.", param="image",
                           code="missing_required_parameter")  # fmt: skip
    if len(images) > family.max_images:
        raise invalid(f"{family.name} takes at most {family.max_images} image(s); got {len(images)}.", "image")
    for index, image in enumerate(images):
        if image.size > family.max_image_bytes:
            limit = family.max_image_bytes // 2**20
            raise invalid(f"Image {index + 1} is larger than {limit} MB, the {family.name} limit.", "image")
        if family.name == "dall-e-2" and (image.content_type != "image/png" or image.width != image.height):
            raise invalid("dall-e-2 edits take one square PNG image.", "image", "invalid_image")
    if mask is None:
        return
    if mask.content_type != "image/png":
        raise invalid("'mask' must be a PNG image.", "mask", "invalid_image")
    if not mask.has_alpha:
        raise invalid("'mask' must have an alpha channel: transparent pixels mark what to edit.", "mask",
                      "invalid_image")  # fmt: skip
    first = images[0]
    if (mask.width, mask.height) != (first.width, first.height):
        raise invalid(
            f"'mask' is {mask.width}x{mask.height} but the image is {first.width}x{first.height}; "
            "they must have the same size.",
            "mask",
            "invalid_image",
        )
    if mask.size > 4 * 2**20:
        raise invalid("'mask' is larger than 4 MB.", "mask")
