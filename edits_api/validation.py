"""Checks on a request's images and values before any provider is called, against the model
family's rules (entities.vocabulary); every failure is a 400 naming the parameter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from edits_api.errors import GatewayError, invalid
from edits_api.providers.base import ImageFile
from entities import vocabulary
from entities.catalog import Operation
from entities.vocabulary import Family

MAX_SIDE = 16_384  # pixels; larger declared sizes are refused from the header (image bombs)
MAX_PIXELS = 64_000_000
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def check_values(prompt: str, options: Mapping[str, Any], *, family: Family, operation: Operation) -> dict[str, Any]:
    """The prompt's length and every option for this family; returns the options as the family says them."""
    if len(prompt) > family.max_prompt:
        raise invalid(
            f"'prompt' is {len(prompt)} characters; {family.name} takes at most {family.max_prompt}.", "prompt"
        )
    try:
        return vocabulary.check_options(options, family=family, operation=operation)
    except vocabulary.OptionError as exc:
        raise invalid(exc.message, exc.param, exc.code) from None


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
        if family.max_image_mb is not None and image.size > family.max_image_mb * 2**20:
            limit = family.max_image_mb
            raise invalid(f"Image {index + 1} is larger than {limit} MB, the {family.name} limit.", "image")
        if family.square_png_only and (image.content_type != "image/png" or image.width != image.height):
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
    if mask.size > family.max_mask_mb * 2**20:
        raise invalid(f"'mask' is larger than {family.max_mask_mb} MB.", "mask")
