"""What a request costs: the price table (a per-process snapshot) and the arithmetic on it.

A price row gives token rates by kind and/or per-image prices by quality and size. The real cost
comes from the tokens a provider reports when the row has token rates, else from the images
produced; the estimate made before the call (for budgets) uses the per-image figures. A model
without a price row costs None, "unknown", never 0.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models.signals import post_delete, post_save

from edits_api.models import Price

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
CENT_FRACTION = Decimal("0.000001")  # costs are kept to a millionth of a dollar
# gpt-image models take the seed page's quality words (contract §1); prices are by their own words.
_QUALITY_ALIASES = {"hd": "high", "standard": "medium"}
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-image-1.5-2025-12-16 -> gpt-image-1.5


@dataclass(frozen=True)
class PriceInfo:
    """A price row as plain values, usable while the database is down."""

    id: int
    label: str
    text_input: Decimal | None
    image_input: Decimal | None
    image_output: Decimal | None
    text_output: Decimal | None
    per_image: dict[str, float]
    per_input_image: Decimal | None

    @property
    def bills_tokens(self) -> bool:
        return self.image_output is not None

    @classmethod
    def of(cls, price: Price) -> PriceInfo:
        return cls(
            id=price.pk,
            label=price.label,
            text_input=price.text_input_per_mtok,
            image_input=price.image_input_per_mtok,
            image_output=price.image_output_per_mtok,
            text_output=price.text_output_per_mtok,
            per_image=dict(price.per_image or {}),
            per_input_image=price.per_input_image,
        )


@dataclass(frozen=True)
class Tokens:
    """A provider's reported token counts by kind (None: not reported)."""

    input_text: int | None = None
    input_image: int | None = None
    output_image: int | None = None
    output_text: int | None = None

    @property
    def reported(self) -> bool:
        return any(v is not None for v in (self.input_text, self.input_image, self.output_image, self.output_text))


def tokens_from_usage(usage: dict[str, Any] | None) -> Tokens:
    """OpenAI's `usage` shape split by kind. Without details, input counts as text and output as
    image tokens (what gpt-image models bill them as)."""
    if not isinstance(usage, dict):
        return Tokens()
    input_total = _count(usage.get("input_tokens"))
    output_total = _count(usage.get("output_tokens"))
    input_details = _details(usage, "input_tokens_details")
    output_details = _details(usage, "output_tokens_details")
    input_image = _count(input_details.get("image_tokens"))
    input_text = _count(input_details.get("text_tokens"))
    if input_text is None and input_total is not None:
        input_text = input_total - (input_image or 0)
    output_text = _count(output_details.get("text_tokens"))
    output_image = _count(output_details.get("image_tokens"))
    if output_image is None and output_total is not None:
        output_image = output_total - (output_text or 0)
    return Tokens(input_text, input_image, output_image, output_text)


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    found = usage.get(name)
    return found if isinstance(found, dict) else {}


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _usd(value: Decimal) -> Decimal:
    return value.quantize(CENT_FRACTION, rounding=ROUND_HALF_UP)


def per_image_price(price: PriceInfo, *, size: str | None, quality: str | None) -> Decimal | None:
    """The price of one output image of this size and quality, from the most specific entry."""
    table = price.per_image
    if not table:
        return None
    qualities = [quality or "*"]
    if quality in _QUALITY_ALIASES:
        qualities.append(_QUALITY_ALIASES[quality])
    size = size or "*"
    for candidate in [f"{q}/{size}" for q in qualities] + [f"{q}/*" for q in qualities] + [f"*/{size}", "*"]:
        if candidate in table:
            return Decimal(str(table[candidate]))
    return Decimal(str(max(table.values())))  # "auto" or a size the table lacks: the dearest


def estimate(
    price: PriceInfo | None, *, n: int, size: str | None, quality: str | None, images_in: int
) -> Decimal | None:
    """What a request should cost, before the call: n output images and the input images."""
    if price is None:
        return None
    each = per_image_price(price, size=size, quality=quality)
    if each is None:
        return None
    total = each * n + (price.per_input_image or Decimal(0)) * images_in
    return _usd(total)


def actual(
    price: PriceInfo | None,
    *,
    tokens: Tokens,
    images_out: int,
    images_in: int,
    size: str | None,
    quality: str | None,
) -> Decimal | None:
    """What a served request cost: by tokens when the provider reported them and the row has token
    rates, else by images. None when the model has no price or a needed rate is missing."""
    if price is None:
        return None
    if price.bills_tokens and tokens.reported:
        return _by_tokens(price, tokens)
    each = per_image_price(price, size=size, quality=quality)
    if each is None:
        return None
    inputs = Decimal(0)
    if images_in:
        if price.per_input_image is None and price.bills_tokens:
            return None  # a token-billed model whose input tokens went unreported
        inputs = (price.per_input_image or Decimal(0)) * images_in
    return _usd(each * images_out + inputs)


def _by_tokens(price: PriceInfo, tokens: Tokens) -> Decimal | None:
    # An image-input rate left empty means the provider bills all input at one rate (Gemini).
    rates = (
        (tokens.input_text, price.text_input),
        (tokens.input_image, price.image_input if price.image_input is not None else price.text_input),
        (tokens.output_image, price.image_output),
        (tokens.output_text, price.text_output if price.text_output is not None else price.image_output),
    )
    total = Decimal(0)
    for count, rate in rates:
        if not count:
            continue
        if rate is None:
            return None
        total += rate * count / MILLION
    return _usd(total)


# -- the price table, as a per-process snapshot ---------------------------------------------------


class _Snapshot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prices: dict[tuple[str, str], PriceInfo] | None = None
        self.read_at = 0.0


_snapshot = _Snapshot()


def price_for(provider: str, model: str) -> PriceInfo | None:
    """The price row of this model at this provider (a dated snapshot name falls back to its
    model's row), or None. Served from memory; re-read every ROUTE_CACHE_SECONDS."""
    prices = _prices()
    found = prices.get((provider, model))
    if found is None and _SNAPSHOT_SUFFIX.search(model):
        found = prices.get((provider, _SNAPSHOT_SUFFIX.sub("", model)))
    return found


def _prices() -> dict[tuple[str, str], PriceInfo]:
    current = _snapshot.prices
    if current is not None and time.monotonic() - _snapshot.read_at < settings.ROUTE_CACHE_SECONDS:
        return current
    # With a snapshot at hand, one thread re-reads and the others go on with it (the database may
    # be slow to fail); without one, everyone waits for the first read.
    if not _snapshot.lock.acquire(blocking=current is None):
        return current or {}
    try:
        if _snapshot.prices is not current and _snapshot.prices is not None:
            return _snapshot.prices
        try:
            _snapshot.prices = {(p.provider, p.model): PriceInfo.of(p) for p in Price.objects.all()}
        except DatabaseError as exc:
            logger.warning("price table not re-read, using the last snapshot (if any): %s", exc)
        _snapshot.read_at = time.monotonic()
        return _snapshot.prices or {}
    finally:
        _snapshot.lock.release()


def forget_prices(**_: object) -> None:
    _snapshot.prices = None


post_save.connect(forget_prices, sender=Price, dispatch_uid="prices-save")
post_delete.connect(forget_prices, sender=Price, dispatch_uid="prices-delete")
