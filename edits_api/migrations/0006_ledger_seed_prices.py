"""Seeds the price table with the public prices read on 2026-11-29 (each row names its source).

Rows are only added where none exists for the provider and model, so an operator's edits are kept;
reversing removes nothing. Per-image figures on token-billed models are the provider's own
per-image equivalents, used to estimate a request before the call; the real cost is computed from
the tokens the provider reports.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db import migrations

READ = datetime.date(2026, 11, 29)


def _sizes(low: tuple[float, float, float], medium: tuple[float, float, float], high: tuple[float, float, float]):
    """gpt-image per-image tables: (1024x1024, 1024x1536, 1536x1024) for each quality."""
    table = {}
    for quality, prices in (("low", low), ("medium", medium), ("high", high)):
        for size, price in zip(("1024x1024", "1024x1536", "1536x1024"), prices, strict=True):
            table[f"{quality}/{size}"] = price
    # Unknown or "auto" size/quality: the dearest figure, so an estimate never falls short.
    table["*"] = max(high)
    return table


OPENAI_COMMUNITY_TOKENS = (
    "https://community.openai.com/t/what-is-the-difference-between-image-generation-and-output-of-image-tokens/1371851"
)

PRICES = [
    {
        "provider": "openai",
        "model": "gpt-image-1",
        "text_input_per_mtok": "5.00",
        "image_input_per_mtok": "10.00",
        "image_output_per_mtok": "40.00",
        "per_image": _sizes((0.011, 0.016, 0.016), (0.042, 0.063, 0.063), (0.167, 0.25, 0.25)),
        "source": "https://developers.openai.com/api/docs/models/gpt-image-1",
        "notes": "OpenAI's model page lists gpt-image-1 as retired on 2026-10-23; kept for compatible providers.",
    },
    {
        "provider": "openai",
        "model": "gpt-image-1-mini",
        "text_input_per_mtok": "2.00",
        "image_input_per_mtok": "2.50",
        "image_output_per_mtok": "8.00",
        "per_image": _sizes((0.005, 0.006, 0.006), (0.011, 0.015, 0.015), (0.036, 0.052, 0.052)),
        "source": "https://developers.openai.com/api/docs/models/gpt-image-1-mini",
        "notes": "",
    },
    {
        "provider": "openai",
        "model": "gpt-image-1.5",
        "text_input_per_mtok": "5.00",
        "image_input_per_mtok": "8.00",
        "image_output_per_mtok": "32.00",
        "text_output_per_mtok": "10.00",
        "per_image": _sizes((0.009, 0.013, 0.013), (0.034, 0.05, 0.05), (0.133, 0.2, 0.2)),
        "source": "BerriAI/litellm model_prices_and_context_window.json (gpt-image-1.5) @00035b69; "
        + OPENAI_COMMUNITY_TOKENS,
        "notes": "Output rate cross-checked: 4160 high-quality 1024x1024 tokens x $32/1M = $0.133.",
    },
    {
        "provider": "openai",
        "model": "gpt-image-2",
        "text_input_per_mtok": "5.00",
        "image_input_per_mtok": "8.00",
        "image_output_per_mtok": "30.00",
        "text_output_per_mtok": "10.00",
        # No published per-image table: OpenAI's documented output token counts x $30/1M.
        "per_image": _sizes((0.00816, 0.01224, 0.012), (0.03168, 0.04752, 0.04704), (0.1248, 0.1872, 0.18624)),
        "source": "BerriAI/litellm model_prices_and_context_window.json (gpt-image-2) @00035b69; "
        + OPENAI_COMMUNITY_TOKENS,
        "notes": "Per-image figures are estimates (272/1056/4160 tokens per 1024x1024 image, ...); "
        "flexible sizes above 1536 px cost more and are settled from the reported tokens.",
    },
    {
        "provider": "openai",
        "model": "dall-e-3",
        "per_image": {
            "standard/1024x1024": 0.04,
            "standard/1024x1792": 0.08,
            "standard/1792x1024": 0.08,
            "hd/1024x1024": 0.08,
            "hd/1024x1792": 0.12,
            "hd/1792x1024": 0.12,
            "*": 0.12,
        },
        "source": "https://openai.com/pricing (as copied in kevinhermawan/Canvas model-info.json, 2023-12-25)",
        "source_date": datetime.date(2023, 12, 25),
        "notes": "Billed per image.",
    },
    {
        "provider": "openai",
        "model": "dall-e-2",
        "per_image": {"*/256x256": 0.016, "*/512x512": 0.018, "*/1024x1024": 0.02, "*": 0.02},
        "source": "https://openai.com/pricing (as copied in kevinhermawan/Canvas model-info.json, 2023-12-25)",
        "source_date": datetime.date(2023, 12, 25),
        "notes": "Billed per image.",
    },
    {
        "provider": "gemini",
        "model": "gemini-3.1-flash-image",
        "text_input_per_mtok": "0.50",
        "image_input_per_mtok": "0.50",
        "image_output_per_mtok": "60.00",
        "text_output_per_mtok": "3.00",
        # Google's per-image equivalents: 747 / 1120 / 1680 / 2520 output tokens x $60/1M.
        "per_image": {"*/512x512": 0.045, "*/1024x1024": 0.067, "*/2048x2048": 0.101, "*/4096x4096": 0.151, "*": 0.067},
        "per_input_image": "0.00056",
        "source": "https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/3-1-flash-image "
        "(tokens per image); https://docs.ai.it.ufl.edu/docs/navigator_models/models/google-gemini-3.1-flash-image "
        "($0.50 input, $0.067 per 1K image); https://aifreeapi.com/en/posts/gemini-flash-image-generation-pricing "
        "($60/1M output image tokens)",
        "notes": "Input images are tokens (1120 each, $0.00056 at $0.50/1M). Some listings show $0.25/1M input "
        "for the preview model; the GA rate is used here.",
    },
    {
        "provider": "gemini",
        "model": "gemini-3-pro-image",
        "text_input_per_mtok": "2.00",
        "image_input_per_mtok": "2.00",
        "image_output_per_mtok": "120.00",
        "text_output_per_mtok": "12.00",
        "per_image": {"*/1024x1024": 0.134, "*/2048x2048": 0.134, "*/4096x4096": 0.24, "*": 0.134},
        "per_input_image": "0.0011",
        "source": "https://ai.google.dev/gemini-api/docs/pricing (as transcribed on 2026-10-07 in "
        "api-evangelist/deepmind plans/deepmind-plans-pricing.yml: image output $120/1M)",
        "source_date": datetime.date(2026, 10, 7),
        "notes": "1K/2K images are 1120 output tokens ($0.134), 4K 2000 ($0.24).",
    },
    {
        "provider": "gemini",
        "model": "gemini-2.5-flash-image",
        "text_input_per_mtok": "0.30",
        "image_input_per_mtok": "0.30",
        "image_output_per_mtok": "30.00",
        "text_output_per_mtok": "2.50",
        "per_image": {"*": 0.039},
        "source": "https://ai.google.dev/gemini-api/docs/pricing (Gemini 2.5 Flash Image: 1290 tokens per "
        "1024x1024 image = $0.039)",
        "notes": "Google announced its shutdown for 2026-10-02; kept for history.",
    },
    {
        "provider": "local",
        "model": "pillow",
        "per_image": {"*": 0},
        "per_input_image": "0",
        "source": "built in: the local demo provider draws with Pillow inside the gateway; no provider bills it",
        "notes": "A known zero, unlike a model without a price (unknown).",
    },
    {
        "provider": "x-ai",
        "model": "grok-imagine-image",
        "per_image": {"*": 0.02},
        "per_input_image": "0.02",
        "source": "https://docs.x.ai/developers/model-capabilities/images (edits bill the input image and the "
        "output image); https://docs.crazyrouter.com/en/images/grok (official price $0.02 per image)",
        "notes": "xAI bills per image. The input-image rate on edits is not in the stored copy of xAI's model "
        "page: set to the per-image price until an operator confirms it.",
    },
]

_DECIMALS = (
    "text_input_per_mtok",
    "image_input_per_mtok",
    "image_output_per_mtok",
    "text_output_per_mtok",
    "per_input_image",
)


def seed(apps, schema_editor) -> None:
    Price = apps.get_model("edits_api", "Price")
    for row in PRICES:
        fields = {key: value for key, value in row.items() if key not in ("provider", "model")}
        for key in _DECIMALS:
            if key in fields:
                fields[key] = Decimal(fields[key])
        fields.setdefault("source_date", READ)
        Price.objects.get_or_create(provider=row["provider"], model=row["model"], defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("edits_api", "0005_ledger_prices_limits")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
