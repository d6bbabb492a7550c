"""Cost arithmetic per provider, from the price table as the data migration seeds it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edits_api.accounting import costs
from edits_api.accounting.costs import Tokens, tokens_from_usage
from edits_api.models import Price

pytestmark = pytest.mark.usefixtures("seeded_prices")


def test_every_seeded_price_names_its_source_and_date() -> None:
    prices = list(Price.objects.all())

    assert {(p.provider, p.model) for p in prices} >= {
        ("openai", "gpt-image-1"),
        ("openai", "gpt-image-1.5"),
        ("openai", "dall-e-3"),
        ("gemini", "gemini-3.1-flash-image"),
        ("x-ai", "grok-imagine-image"),
    }
    assert all(p.source and p.source_date for p in prices)


def test_openai_gpt_image_1_bills_text_image_input_and_image_output_tokens_apart() -> None:
    price = costs.price_for("openai", "gpt-image-1")
    usage = {
        "input_tokens": 1050,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 1000},
        "output_tokens": 4160,
        "total_tokens": 5210,
    }

    cost = costs.actual(
        price, tokens=tokens_from_usage(usage), images_out=1, images_in=1, size="1024x1024", quality="high"
    )

    # 50 x $5/1M + 1000 x $10/1M + 4160 x $40/1M
    assert cost == Decimal("0.000250") + Decimal("0.010000") + Decimal("0.166400")


def test_openai_estimate_uses_the_per_image_table_and_translates_hd() -> None:
    price = costs.price_for("openai", "gpt-image-1")

    assert costs.estimate(price, n=2, size="1024x1536", quality="medium", images_in=1) == Decimal("0.126")
    assert costs.estimate(price, n=1, size="1024x1024", quality="hd", images_in=0) == Decimal("0.167")
    # "auto" (or nothing): the dearest figure, so a reservation never falls short
    assert costs.estimate(price, n=1, size="auto", quality=None, images_in=0) == Decimal("0.25")


def test_a_dated_snapshot_name_uses_its_model_price() -> None:
    price = costs.price_for("openai", "gpt-image-1.5-2025-12-16")

    assert price is not None and price.image_output == Decimal("32.00")


def test_dall_e_3_is_billed_per_image_by_size_and_quality() -> None:
    price = costs.price_for("openai", "dall-e-3")

    cost = costs.actual(price, tokens=Tokens(), images_out=1, images_in=0, size="1792x1024", quality="hd")

    assert cost == Decimal("0.12")


def test_gemini_is_billed_per_token_from_its_usage() -> None:
    price = costs.price_for("gemini", "gemini-3.1-flash-image")
    usage = {"input_tokens": 1132, "input_tokens_details": {"text_tokens": 12, "image_tokens": 1120}}
    usage |= {"output_tokens": 1120, "total_tokens": 2252}

    cost = costs.actual(price, tokens=tokens_from_usage(usage), images_out=1, images_in=1, size=None, quality=None)

    # (12 + 1120) x $0.50/1M + 1120 x $60/1M
    assert cost == Decimal("0.000566") + Decimal("0.067200")


def test_xai_bills_each_output_image_and_each_input_image_of_an_edit() -> None:
    price = costs.price_for("x-ai", "grok-imagine-image")

    edit = costs.actual(price, tokens=Tokens(), images_out=2, images_in=3, size=None, quality=None)
    generation = costs.actual(price, tokens=Tokens(), images_out=2, images_in=0, size=None, quality=None)

    assert edit == Decimal("0.10")
    assert generation == Decimal("0.04")
    assert costs.estimate(price, n=2, size=None, quality=None, images_in=3) == Decimal("0.10")


def test_a_model_without_a_price_costs_unknown_never_zero() -> None:
    price = costs.price_for("cloud-temple", "some-model")

    assert price is None
    assert costs.actual(price, tokens=Tokens(10, 0, 100, 0), images_out=1, images_in=0, size=None, quality=None) is None
    assert costs.estimate(price, n=1, size=None, quality=None, images_in=0) is None


def test_a_token_rate_left_empty_makes_a_token_cost_unknown() -> None:
    Price.objects.create(
        provider="openai",
        model="half-priced",
        image_output_per_mtok=Decimal(40),
        source="test",
        source_date="2026-11-29",
    )
    costs.forget_prices()
    price = costs.price_for("openai", "half-priced")

    cost = costs.actual(price, tokens=Tokens(input_text=10, output_image=100), images_out=1, images_in=0, size=None,
                        quality=None)  # fmt: skip

    assert cost is None


def test_usage_without_details_counts_input_as_text_and_output_as_image() -> None:
    tokens = tokens_from_usage({"input_tokens": 30, "output_tokens": 272, "total_tokens": 302})

    assert tokens == Tokens(input_text=30, input_image=None, output_image=272, output_text=None)


def test_the_built_in_local_provider_costs_a_known_zero() -> None:
    price = costs.price_for("local", "pillow")

    assert costs.actual(price, tokens=Tokens(), images_out=2, images_in=1, size=None, quality=None) == Decimal(0)
