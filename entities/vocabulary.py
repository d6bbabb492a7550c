"""What a client (or an entity's defaults) may ask of an image model: fields and value sets per model
family, as data.

Taken from the official openai SDK's own types (the pinned openai 3.57.0: `types/image_edit_params.py`,
`types/image_generate_params.py`, `types/image_model.py`) and, for Gemini, Google's image docs. The
request checks, the OpenAPI description, entity validation and the admin's choices all read these
tables. It sits in `entities`, beside the catalog, because entity validation needs it and imports run
one way (edits_api uses entities).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from entities.catalog import Operation

# Wire fields per operation (files apart: `image`/`image[]` and `mask` on edits).
EDIT_FIELDS: tuple[str, ...] = (
    "prompt", "model", "n", "size", "quality", "background", "response_format", "output_format",
    "output_compression", "input_fidelity", "complexity", "frame_count", "frame_duration_ms",
    "safety_identifier", "user", "provider", "stream", "partial_images",
)  # fmt: skip
GENERATION_FIELDS: tuple[str, ...] = (
    "prompt", "model", "n", "size", "quality", "style", "background", "output_format", "output_compression",
    "moderation", "response_format", "complexity", "frame_count", "frame_duration_ms", "safety_identifier",
    "user", "provider", "stream", "partial_images",
)  # fmt: skip
FIELDS = {Operation.EDIT: EDIT_FIELDS, Operation.GENERATION: GENERATION_FIELDS}
INTEGER_FIELDS = frozenset({"n", "output_compression", "frame_count", "frame_duration_ms", "partial_images"})
# What an entity's options may set as defaults (config.options.edition / .generation), besides `enabled`.
_NOT_DEFAULTS = frozenset({"prompt", "provider", "stream", "partial_images", "user", "safety_identifier"})
DEFAULT_FIELDS = {
    operation: tuple(name for name in fields if name not in _NOT_DEFAULTS)
    for operation, fields in {Operation.EDIT: EDIT_FIELDS, Operation.GENERATION: GENERATION_FIELDS}.items()
}

# The value sets the SDK's Literal types name (the union over all models).
QUALITIES = ("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd")
BACKGROUNDS = ("transparent", "opaque", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp", "gif", "svg")
RESPONSE_FORMATS = ("url", "b64_json")
INPUT_FIDELITIES = ("high", "low")
STYLES = ("vivid", "natural")
MODERATIONS = ("low", "auto")
COMPLEXITIES = ("low", "medium", "high")
# Every fixed value set by field name, for forms and the API description (a family accepts a subset).
CHOICES: dict[str, tuple[str, ...]] = {
    "quality": QUALITIES,
    "background": BACKGROUNDS,
    "output_format": OUTPUT_FORMATS,
    "response_format": RESPONSE_FORMATS,
    "input_fidelity": INPUT_FIDELITIES,
    "style": STYLES,
    "moderation": MODERATIONS,
    "complexity": COMPLEXITIES,
}
# The seed page's values (DALL·E's), accepted for every family and translated (contract §1).
SEED_QUALITIES = ("standard", "hd")

MAX_IMAGES = 16
MAX_N = 10
MAX_PROMPT = 32_000
_SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")


@dataclass(frozen=True)
class Family:
    """The rules one kind of model follows. An empty value set means the field is not accepted."""

    name: str
    operations: tuple[Operation, ...] = (Operation.EDIT, Operation.GENERATION)
    max_prompt: int = MAX_PROMPT
    max_n: int = MAX_N
    sizes: tuple[str, ...] | None = None  # fixed sizes, or None: WIDTHxHEIGHT by `size_rule`, or auto
    size_rule: str = "any"  # "any" (8192 a side at most) or "flexible" (gpt-image-2: /16, <=3840x2160, <=3:1)
    qualities: tuple[str, ...] = ()
    # standard/hd as this family's own value; None: dropped (the family has no such setting).
    quality_aliases: Mapping[str, str | None] = field(default_factory=dict)
    backgrounds: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()
    input_fidelities: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    moderations: tuple[str, ...] = ()
    complexities: tuple[str, ...] = ()
    animated: bool = False  # frame_count / frame_duration_ms with output_format gif
    forwards_response_format: bool = False  # gpt-image models refuse `response_format`
    max_images: int = MAX_IMAGES
    max_image_mb: int | None = 50
    max_mask_mb: int = 4
    square_png_only: bool = False  # dall-e-2 edits
    generic: bool = False  # a model in no table: generic checks only, values pass through


_GPT = Family(
    "gpt-image",
    qualities=("auto", "low", "medium", "high"),
    quality_aliases={"standard": "medium", "hd": "high"},
    backgrounds=BACKGROUNDS,
    output_formats=("png", "jpeg", "webp"),
    moderations=MODERATIONS,
    complexities=COMPLEXITIES,
)
_FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
GPT_IMAGE_1 = replace(_GPT, name="gpt-image-1", sizes=_FIXED_SIZES, input_fidelities=INPUT_FIDELITIES)
GPT_IMAGE_1_MINI = replace(_GPT, name="gpt-image-1-mini", sizes=_FIXED_SIZES, input_fidelities=("low",))
GPT_IMAGE_2 = replace(_GPT, name="gpt-image-2", size_rule="flexible")
GPT_IMAGE_25 = replace(GPT_IMAGE_2, name="gpt-image-2.5", qualities=("auto", "low", "medium", "high", "xhigh", "max"))
GPT_IMAGE_26 = replace(GPT_IMAGE_25, name="gpt-image-2.6", output_formats=OUTPUT_FORMATS, animated=True)
DALL_E_2 = Family(
    "dall-e-2",
    max_prompt=1_000,
    sizes=("256x256", "512x512", "1024x1024"),
    qualities=("standard",),
    quality_aliases={"standard": "standard", "hd": "standard"},
    forwards_response_format=True,
    max_images=1,
    max_image_mb=4,
    square_png_only=True,
)
DALL_E_3 = Family(
    "dall-e-3",
    operations=(Operation.GENERATION,),
    max_prompt=4_000,
    max_n=1,
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    qualities=("standard", "hd"),
    quality_aliases={"standard": "standard", "hd": "hd"},
    styles=STYLES,
    forwards_response_format=True,
)
# Gemini maps WIDTHxHEIGHT onto its aspect ratios and has no quality setting: a quality is accepted
# and not sent. Up to 14 reference images (gemini-3-pro-image, 3.1-flash-image), 20 MB inline each.
GEMINI = Family(
    "gemini",
    qualities=("auto", "low", "medium", "high"),
    quality_aliases={"standard": None, "hd": None, "auto": None, "low": None, "medium": None, "high": None},
    backgrounds=("auto", "opaque"),
    output_formats=("png",),
    max_images=14,
    max_image_mb=20,
)
GENERIC = Family(
    "generic",
    qualities=QUALITIES,
    backgrounds=BACKGROUNDS,
    output_formats=OUTPUT_FORMATS,
    input_fidelities=INPUT_FIDELITIES,
    styles=STYLES,
    moderations=MODERATIONS,
    complexities=COMPLEXITIES,
    max_image_mb=None,
    generic=True,
)

# Model-name prefixes of OpenAI's image models, longest first (gpt-image-1.5 follows gpt-image-1's rules).
_OPENAI_FAMILIES: tuple[tuple[str, Family], ...] = (
    ("gpt-image-2.6", GPT_IMAGE_26),
    ("gpt-image-2.5", GPT_IMAGE_25),
    ("gpt-image-2", GPT_IMAGE_2),
    ("gpt-image-1-mini", GPT_IMAGE_1_MINI),
    ("gpt-image-1", GPT_IMAGE_1),
    ("chatgpt-image", GPT_IMAGE_1),
)
_OPENAI_WIRE = frozenset({"openai", "cloud-temple", "azure-openai"})


def family_for(*, provider: str, model: str) -> Family:
    """The rules for this model at this provider; a name in no table gets the generic family."""
    if provider == "gemini":
        return GEMINI
    if provider not in _OPENAI_WIRE:
        return GENERIC  # xAI, Luma, Hive, local: their adapters check what their protocol carries
    if model in ("dall-e-2", "dall-e-3"):
        return DALL_E_2 if model == "dall-e-2" else DALL_E_3
    for prefix, family in _OPENAI_FAMILIES:
        if model.startswith(prefix):
            return family
    return GENERIC


class OptionError(ValueError):
    """One refused value: which field, and why (in words a client or operator understands)."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code


def _one_of(value: Any, allowed: tuple[str, ...], param: str, family: Family) -> None:
    if value is None:
        return
    if not allowed:
        raise OptionError(param, f"'{param}' is not supported by {family.name} models.", "unsupported_parameter")
    if value not in allowed:
        raise OptionError(
            param, f"Invalid value for '{param}': {value!r}. Supported by {family.name}: {', '.join(allowed)}."
        )


def check_size(size: Any, family: Family) -> None:
    if size is None:
        return
    if not isinstance(size, str):
        raise OptionError("size", "'size' must be a string such as 1024x1024 or auto.")
    if family.sizes is not None:
        _one_of(size, family.sizes, "size", family)
        return
    if size == "auto":
        return
    match = _SIZE.match(size)
    if not match:
        raise OptionError("size", f"Invalid value for 'size': {size!r}. Use WIDTHxHEIGHT (e.g. 1024x1024) or auto.")
    width, height = int(match[1]), int(match[2])
    if family.size_rule == "flexible":
        if width % 16 or height % 16 or max(width, height) > 3840 or min(width, height) > 2160:
            raise OptionError("size", f"{family.name} sizes need sides divisible by 16, at most 3840x2160.")
        if max(width, height) > 3 * min(width, height):
            raise OptionError("size", f"{family.name} sizes need an aspect ratio between 1:3 and 3:1.")
    elif width < 16 or height < 16 or max(width, height) > 8192:
        raise OptionError("size", f"'size' {size} must be between 16 and 8192 pixels on a side.")


def _int(value: Any, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(param, f"'{param}' must be a whole number between {low} and {high}.")
    if not low <= value <= high:
        raise OptionError(param, f"'{param}' must be between {low} and {high}, not {value}.")
    return value


def check_options(
    options: Mapping[str, Any], *, family: Family, operation: Operation, defaults_only: bool = False
) -> dict[str, Any]:
    """Checks typed option values for a family; returns them with `quality` in the family's own words.

    Raises OptionError naming the first bad field. Absent (None) values are left out. With
    `defaults_only` (an entity's defaults), a rule tying two fields holds only when both are set, since
    the client may send the other one.
    """
    if operation not in family.operations:
        raise OptionError("model", f"{family.name} models cannot {operation.verb}.", "unsupported_model")
    values = {key: value for key, value in options.items() if value is not None}
    if "n" in values:
        _int(values["n"], "n", 1, family.max_n)
    check_size(values.get("size"), family)
    quality = values.get("quality")
    if quality is not None and not family.generic:
        if quality in family.quality_aliases:
            translated = family.quality_aliases[quality]
            if translated is None:
                values.pop("quality")
            else:
                values["quality"] = translated
        else:
            _one_of(quality, family.qualities, "quality", family)
    _one_of(values.get("background"), family.backgrounds, "background", family)
    _one_of(values.get("output_format"), family.output_formats, "output_format", family)
    _one_of(values.get("response_format"), RESPONSE_FORMATS, "response_format", family)
    _one_of(values.get("complexity"), family.complexities, "complexity", family)
    if operation is Operation.EDIT:
        _one_of(values.get("input_fidelity"), family.input_fidelities, "input_fidelity", family)
    else:
        _one_of(values.get("style"), family.styles, "style", family)
        _one_of(values.get("moderation"), family.moderations, "moderation", family)
    if values.get("background") == "transparent" and values.get("output_format") == "jpeg":
        raise OptionError("background", "A transparent background needs output_format png or webp.")
    if "output_compression" in values:
        _int(values["output_compression"], "output_compression", 0, 100)
        if values.get("output_format") not in ("jpeg", "webp") and not (
            defaults_only and "output_format" not in values
        ):
            raise OptionError("output_compression", "'output_compression' applies only to output_format jpeg or webp.")
    for frame_field, low, high in (("frame_count", 2, 16), ("frame_duration_ms", 10, 655_350)):
        if frame_field in values:
            if not (family.animated or family.generic):
                raise OptionError(frame_field, f"'{frame_field}' is not supported by {family.name} models.")
            if values.get("output_format") != "gif" and not (defaults_only and "output_format" not in values):
                raise OptionError(frame_field, f"'{frame_field}' applies only to output_format gif.")
            _int(values[frame_field], frame_field, low, high)
    return values
