"""The built-in demo provider: edits and generates with Pillow inside the gateway, no network, no key.

It exists so that a fresh install answers an edit at once. Edits apply the operations the prompt
names, in the order it names them: grayscale (greyscale, black and white), invert (negative),
blur, sharpen, sepia, rotate [N degrees, clockwise, default 90], mirror / flip (left-right;
"flip vertically" or "upside down": top-bottom), resize [to WxH]. A prompt that names none is
written onto the image. With a mask, only the pixels where the mask is fully transparent change
(OpenAI's rule). Several images: the others are laid as thumbnails along the bottom of the first,
so every upload visibly arrives. `size` (or "resize to WxH") sets the output's dimensions;
`output_format`, `output_compression`, `background` and `n` are honoured. Generations draw a
gradient whose colours come from a hash of the prompt (the same prompt, the same image), with the
prompt written on it.

CPU and memory are bounded: inputs up to 16 megapixels, outputs up to 2048 px a side, and at most
two renders at a time per process (the rest wait their turn within the entity's timeout).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

from edits_api.errors import GatewayError, invalid
from edits_api.providers.base import (
    Connection,
    ImageFile,
    ImageItem,
    ImageRequest,
    ImageResult,
    ProbeResult,
    ProviderAdapter,
)

MAX_INPUT_PIXELS = 4096 * 4096
MAX_OUTPUT_SIDE = 2048
DEFAULT_GENERATION_SIZE = (1024, 1024)
_RENDER_SLOTS = threading.BoundedSemaphore(2)
_SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
_TEXT_MAX_CHARS = 300

Transform = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class Step:
    """One operation named in the prompt, applied to the whole (RGBA) image."""

    label: str
    apply: Transform


def _grayscale(image: Image.Image) -> Image.Image:
    gray = ImageOps.grayscale(image.convert("RGB")).convert("RGBA")
    gray.putalpha(image.getchannel("A"))
    return gray


def _invert(image: Image.Image) -> Image.Image:
    inverted = ImageOps.invert(image.convert("RGB")).convert("RGBA")
    inverted.putalpha(image.getchannel("A"))
    return inverted


def _sepia(image: Image.Image) -> Image.Image:
    toned = ImageOps.colorize(ImageOps.grayscale(image.convert("RGB")), "#2e1d0c", "#f5e6c8", mid="#a3794a")
    toned = toned.convert("RGBA")
    toned.putalpha(image.getchannel("A"))
    return toned


def _blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=max(2, min(image.size) // 100)))


def _sharpen(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.UnsharpMask(radius=2, percent=200, threshold=2))


def _rotate(degrees: int, keep_size: bool) -> Transform:
    # Pillow turns counter-clockwise; people mean clockwise. With a mask the size must stay put.
    return lambda image: image.rotate(-degrees, resample=Image.Resampling.BICUBIC, expand=not keep_size)


def _mirror(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def _flip(image: Image.Image) -> Image.Image:
    return ImageOps.flip(image)


_ROTATE = re.compile(r"\brotat\w*(?:\s+(?:it\s+|the\s+image\s+)?(?:by\s+)?(-?\d{1,3})\s*(?:°|deg\w*)?)?")
_RESIZE_TO = re.compile(r"\b(?:resize|scale)\w*(?:\s+(?:it\s+)?(?:to\s+)?([1-9][0-9]{0,4})\s*x\s*([1-9][0-9]{0,4}))?")
_SIMPLE: list[tuple[re.Pattern[str], str, Transform]] = [
    (re.compile(r"\b(?:gr[ae]y\s*-?\s*scale|black\s+and\s+white|black\s*&\s*white|monochrome)\b"), "grayscale",
     _grayscale),
    (re.compile(r"\b(?:invert\w*|negative)\b"), "invert", _invert),
    (re.compile(r"\bblur\w*"), "blur", _blur),
    (re.compile(r"\bsharpen\w*"), "sharpen", _sharpen),
    (re.compile(r"\bsepia\b"), "sepia", _sepia),
    (re.compile(r"\b(?:flip\w*\s+vertical\w*|upside[\s-]+down)"), "flip vertically", _flip),
    (re.compile(r"\b(?:mirror\w*|flip\w*)\b(?!\s+vertical)"), "mirror", _mirror),
]  # fmt: skip


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    resize: bool  # the prompt says resize/scale: done last, to `size` or the prompt's WxH
    resize_to: tuple[int, int] | None  # from "resize to WxH" in the prompt

    @property
    def empty(self) -> bool:
        return not self.steps and not self.resize


def plan_edit(prompt: str, *, keep_size: bool) -> Plan:
    """The operations the prompt names, in the order it names them."""
    text = prompt.lower()
    found: list[tuple[int, Step]] = []
    for pattern, label, transform in _SIMPLE:
        for match in pattern.finditer(text):
            found.append((match.start(), Step(label, transform)))
    for match in _ROTATE.finditer(text):
        degrees = int(match.group(1)) if match.group(1) else 90
        found.append((match.start(), Step(f"rotate {degrees}°", _rotate(degrees, keep_size))))
    resize_to = None
    resizes = list(_RESIZE_TO.finditer(text))
    for match in resizes:
        if match.group(1):
            resize_to = (int(match.group(1)), int(match.group(2)))
    found.sort(key=lambda item: item[0])
    steps: list[Step] = []
    for _, step in found:
        if not steps or steps[-1].label != step.label:  # "blur, more blur" is one blur
            steps.append(step)
    return Plan(steps, bool(resizes), resize_to)


def _output_size(size: str | None, fallback: tuple[int, int] | None) -> tuple[int, int] | None:
    if size and size != "auto":
        match = _SIZE.match(size)
        if match:
            return int(match.group(1)), int(match.group(2))
    return fallback


def _check_output_size(size: tuple[int, int] | None, param: str) -> None:
    if size is not None and max(size) > MAX_OUTPUT_SIDE:
        raise invalid(
            f"The local demo provider makes images of at most {MAX_OUTPUT_SIDE} px a side; "
            f"{size[0]}x{size[1]} is larger.",
            param,
        )


def _check_format(request: ImageRequest) -> None:
    if request.output_format is not None and request.output_format not in _FORMATS:
        raise invalid(
            f"The local demo provider writes png, jpeg or webp, not {request.output_format!r}.", "output_format"
        )


def _font(image_width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(12, image_width // 28))


def write_text(image: Image.Image, text: str, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The text on a translucent band at the bottom of `box` (default: the whole image), wrapped."""
    left, top, right, bottom = box or (0, 0, image.width, image.height)
    width, height = right - left, bottom - top
    if len(text) > _TEXT_MAX_CHARS:
        text = text[: _TEXT_MAX_CHARS - 1] + "…"
    font = _font(width)
    margin = max(4, width // 40)
    char_width = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    line_height = int((font.size if isinstance(font, ImageFont.FreeTypeFont) else 11) * 1.25)
    fits = max(1, min(8, (height - 2 * margin) // line_height))
    lines = textwrap.wrap(text, width=max(8, int((width - 2 * margin) / char_width)))[:fits] or [""]
    band_height = min(height, line_height * len(lines) + 2 * margin)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((left, bottom - band_height, right, bottom), fill=(0, 0, 0, 150))
    for index, line in enumerate(lines):
        draw.text((left + margin, bottom - band_height + margin + index * line_height), line, font=font, fill="white")
    return Image.alpha_composite(image, overlay)


def _load(image_file: ImageFile) -> Image.Image:
    """Decodes one upload (check_edit bounded its pixels), scaled to fit the output cap."""
    with image_file.open() as handle, Image.open(handle) as opened:
        opened.draft("RGB", (MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE))  # JPEG only: decodes at a reduced scale
        image = opened.convert("RGBA")
    image.thumbnail((MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE))
    return image


def _with_thumbnails(base: Image.Image, others: list[Image.Image]) -> Image.Image:
    """The other images side by side along the bottom right of the first."""
    if not others:
        return base
    side = max(16, min(base.width // max(4, len(others) + 1), base.height // 4))
    result = base.copy()
    x = base.width - side
    for other in others:
        thumb = ImageOps.contain(other, (side, side))
        result.alpha_composite(thumb, (max(0, x), base.height - thumb.height))
        x -= side
    return result


def _edit_region(mask_file: ImageFile, size: tuple[int, int]) -> Image.Image:
    """An L image, 255 where the mask is fully transparent (the region to edit), else 0."""
    with mask_file.open() as handle, Image.open(handle) as opened:
        alpha = opened.convert("RGBA").getchannel("A")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.NEAREST)
    return alpha.point(lambda value: 255 if value == 0 else 0)


def _encode(image: Image.Image, request: ImageRequest) -> tuple[str, str]:
    """base64 of the image in the asked format, and its content type."""
    pil_format, content_type = _FORMATS[request.output_format or "png"]
    keep_alpha = pil_format != "JPEG" and request.background != "opaque"
    if not keep_alpha:
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    buffer = io.BytesIO()
    if pil_format == "PNG":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        quality = request.output_compression if request.output_compression is not None else 90
        image.save(buffer, format=pil_format, quality=max(1, quality))
    return base64.b64encode(buffer.getvalue()).decode("ascii"), content_type


def _result(images: list[Image.Image], request: ImageRequest, revised: str) -> ImageResult:
    items = []
    encoded: dict[int, tuple[str, str]] = {}
    for image in images:
        key = id(image)
        if key not in encoded:  # an edit's n copies are one image, encoded once
            encoded[key] = _encode(image, request)
        b64, content_type = encoded[key]
        items.append(ImageItem(b64_json=b64, content_type=content_type, revised_prompt=revised))
    first = images[0]
    fully_opaque = first.getchannel("A").getextrema()[0] == 255
    opaque = request.output_format == "jpeg" or request.background == "opaque" or fully_opaque
    return ImageResult(
        created=int(time.time()),
        items=items,
        background="opaque" if opaque else "transparent",
        output_format=request.output_format or "png",
        size=f"{first.width}x{first.height}",
    )


class _RenderSlot:
    """At most two renders at a time per process: Pillow holds the CPU, and the machine is shared."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        if not _RENDER_SLOTS.acquire(timeout=self.connection.timeout_s):
            raise GatewayError(
                504,
                f"{self.connection.provider_name} was busy with other images for longer than the timeout.",
                type="server_error",
                code="upstream_timeout",
            )

    def __exit__(self, *exc_info: object) -> None:
        _RENDER_SLOTS.release()


class LocalAdapter(ProviderAdapter):
    """Pillow in the gateway process; the connection carries nothing it needs but the timeout."""

    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        _check_format(request)
        _check_output_size(_output_size(request.size, None), "size")
        _check_output_size(plan_edit(request.prompt, keep_size=False).resize_to, "prompt")
        for index, image in enumerate(request.images):
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise invalid(
                    f"Image {index + 1} is {image.width}x{image.height}; the local demo provider edits images "
                    f"of at most {MAX_INPUT_PIXELS // 1_000_000} megapixels.",
                    "image",
                    "invalid_image",
                )

    def probe(self, connection: Connection) -> ProbeResult:
        """Nothing to connect to: the admin's Test connection says so, and it is never a failure."""
        return ProbeResult(
            ok=True, detail=f"{connection.provider_name} is built into the gateway: nothing to call.", called=""
        )

    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        _check_format(request)
        _check_output_size(_output_size(request.size, None), "size")

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_edit(connection, request)
        if not request.images:
            raise invalid("'image' is required: send at least one image file.", "image", "missing_required_parameter")
        plan = plan_edit(request.prompt, keep_size=request.mask is not None)
        with _RenderSlot(connection):
            original = _load(request.images[0])
            edited = _with_thumbnails(original, [_load(image) for image in request.images[1:]])
            done = [step.label for step in plan.steps]
            for step in plan.steps:
                edited = step.apply(edited)
            target = _output_size(request.size, plan.resize_to)
            if target is not None and target != edited.size:
                # Resized before the text is written and the mask applied, so both stay sharp.
                edited = edited.resize(target, Image.Resampling.LANCZOS)
                done.append(f"resized to {target[0]}x{target[1]}")
            region = _edit_region(request.mask, edited.size) if request.mask is not None else None
            if plan.empty:
                # Inside the masked region when there is one, or the text would be masked away.
                edited = write_text(edited, request.prompt, region.getbbox() if region else None)
                done.append("prompt written on the image")
            if region is not None:
                kept = original if original.size == edited.size else original.resize(edited.size)
                edited = Image.composite(edited, kept, region)
            return _result([edited] * request.n, request, "local demo: " + (", ".join(done) or "unchanged"))

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_generate(connection, request)
        size = _output_size(request.size, DEFAULT_GENERATION_SIZE) or DEFAULT_GENERATION_SIZE
        with _RenderSlot(connection):
            images = [draw_prompt(request.prompt, size, index) for index in range(request.n)]
            return _result(images, request, "local demo: a gradient from the prompt's hash, with the prompt on it")


def draw_prompt(prompt: str, size: tuple[int, int], index: int = 0) -> Image.Image:
    """A deterministic picture of the prompt: its hash picks the gradient's colours and some discs."""
    digest = hashlib.sha256(f"{prompt}\0{index}".encode()).digest()
    start, end = tuple(digest[0:3]), tuple(digest[3:6])
    vertical = Image.linear_gradient("L")
    diagonal = ImageChops.add(vertical, vertical.transpose(Image.Transpose.ROTATE_90), scale=2)
    gradient = diagonal.resize(size, Image.Resampling.BILINEAR)
    image = ImageOps.colorize(gradient, start, end).convert("RGBA")  # type: ignore[arg-type]
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = size
    for disc in range(4):
        seed = digest[6 + disc * 6 : 12 + disc * 6]
        x, y = seed[0] * width // 255, seed[1] * height // 255
        radius = (seed[2] % 64 + 16) * min(width, height) // 256
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(seed[3], seed[4], seed[5], 110))
    return write_text(Image.alpha_composite(image, overlay), prompt)
