"""What every adapter's answer must look like to OpenAI's own types: `usage` in OpenAI's shape and
the top-level values OpenAI's SDK accepts (openai-python `types/images_response.py`)."""

from __future__ import annotations

from typing import Any

# ImagesResponse's Literal value sets (openai 3.57.0, types/images_response.py). A value outside
# them would make `ImagesResponse.model_validate` fail in every client, so it is left out instead;
# tests/edits_api/test_protocols.py checks these sets against the pinned SDK.
BACKGROUNDS = frozenset({"transparent", "opaque"})
OUTPUT_FORMATS = frozenset({"png", "webp", "jpeg", "gif", "svg"})
QUALITIES = frozenset({"low", "medium", "high", "xhigh", "max"})


def top_level_fields(payload: dict[str, Any]) -> dict[str, str]:
    """`background`, `output_format`, `quality` and `size` from a provider's ImagesResponse, kept
    only when OpenAI's types accept them (size: any "WxH" string)."""
    allowed = {"background": BACKGROUNDS, "output_format": OUTPUT_FORMATS, "quality": QUALITIES}
    fields = {}
    for name, values in allowed.items():
        value = payload.get(name)
        if isinstance(value, str) and value in values:
            fields[name] = value
    size = payload.get("size")
    if isinstance(size, str) and size:
        fields["size"] = size
    return fields


def openai_usage(
    *,
    input_tokens: int,
    output_tokens: int,
    text_tokens: int,
    image_tokens: int,
    total_tokens: int | None = None,
    output_text_tokens: int | None = None,
    output_image_tokens: int | None = None,
) -> dict[str, Any]:
    """OpenAI's `usage` object; `output_tokens_details` only when both of its counts are known."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
        "output_tokens": output_tokens,
        "total_tokens": total_tokens if total_tokens is not None else input_tokens + output_tokens,
    }
    if output_text_tokens is not None and output_image_tokens is not None:
        usage["output_tokens_details"] = {"text_tokens": output_text_tokens, "image_tokens": output_image_tokens}
    return usage


def normalized_usage(usage: Any, *, text_only_input: bool) -> dict[str, Any] | None:
    """A usage object in (roughly) OpenAI's shape, made exactly OpenAI's shape, or None.

    Without `input_tokens_details` the split is derived only when the input was text alone (a
    generation): all input tokens are text. Otherwise no split can be derived and usage is left out.
    """
    if not isinstance(usage, dict):
        return None
    input_tokens, output_tokens = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    if input_tokens is None or output_tokens is None:
        return None
    details = usage.get("input_tokens_details")
    text = _count(details.get("text_tokens")) if isinstance(details, dict) else None
    image = _count(details.get("image_tokens")) if isinstance(details, dict) else None
    if text is None or image is None:
        if not text_only_input:
            return None
        text, image = input_tokens, 0
    out = usage.get("output_tokens_details")
    return openai_usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_count(usage.get("total_tokens")),
        text_tokens=text,
        image_tokens=image,
        output_text_tokens=_count(out.get("text_tokens")) if isinstance(out, dict) else None,
        output_image_tokens=_count(out.get("image_tokens")) if isinstance(out, dict) else None,
    )


def _count(value: Any) -> int | None:
    # bool is an int in Python; a token count never is.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
