"""OpenAI's `size` ("WIDTHxHEIGHT" or "auto") in the terms of providers that take an aspect ratio."""

from __future__ import annotations

import math

from edits_api.errors import invalid

# How far (as a ratio of ratios) a size may be from an aspect ratio and still count as it:
# 1792x1024 (1.75) is 16:9 (1.78), 1000x300 is nothing a provider offers.
RATIO_TOLERANCE = 0.03


def parse_size(size: str | None) -> tuple[int, int] | None:
    """(width, height), or None for no size / "auto"; anything else is a 400 naming `size`."""
    if size is None or size == "auto":
        return None
    try:
        width, height = (int(side) for side in size.lower().split("x"))
    except ValueError:
        raise invalid(f"size must be WIDTHxHEIGHT or auto, not {size!r}.", "size") from None
    if width <= 0 or height <= 0:
        raise invalid(f"size must be WIDTHxHEIGHT or auto, not {size!r}.", "size")
    return width, height


def ratio_value(name: str) -> float:
    """ "16:9" -> 1.777..., "19.5:9" -> 2.166..."""
    width, height = name.split(":")
    return float(width) / float(height)


def matching_ratio(width: int, height: int, ratios: tuple[str, ...], provider_name: str) -> str:
    """The provider's aspect ratio that `width`x`height` is, or a 400 naming `size` listing them."""
    wanted = math.log(width / height)
    best = min(ratios, key=lambda name: abs(math.log(ratio_value(name)) - wanted))
    if abs(math.log(ratio_value(best)) - wanted) > math.log1p(RATIO_TOLERANCE):
        raise invalid(
            f"{provider_name} cannot make a {width}x{height} image: it takes the aspect ratios "
            f"{', '.join(ratios)}; choose a size of one of them, or auto.",
            "size",
        )
    return best
