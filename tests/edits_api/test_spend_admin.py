"""The price table and the ledger in the admin: staff read and edit them; others are sent to log in."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from edits_api.accounting import costs
from edits_api.models import Price, UsageRecord

pytestmark = pytest.mark.usefixtures("seeded_prices")


def test_prices_list_with_their_sources_and_an_edit_changes_the_cost(admin_client: Client) -> None:
    listing = admin_client.get(reverse("admin:edits_api_price_changelist")).content.decode()
    price = Price.objects.get(provider="x-ai", model="grok-imagine-image")

    response = admin_client.post(
        reverse("admin:edits_api_price_change", args=[price.pk]),
        {
            "provider": "x-ai", "model": "grok-imagine-image", "per_image": '{"*": 0.03}', "per_input_image": "0.002",
            "source": "operator's contract", "source_date": "2026-11-29", "notes": "",
        },
    )  # fmt: skip

    assert "gpt-image-1.5" in listing and "grok-imagine-image" in listing
    assert response.status_code == 302
    changed = costs.price_for("x-ai", "grok-imagine-image")
    assert changed is not None and costs.estimate(changed, n=1, size=None, quality=None, images_in=1) == Decimal(
        "0.032"
    )


def test_a_malformed_per_image_table_is_refused_on_its_field(admin_client: Client) -> None:
    price = Price.objects.get(provider="x-ai", model="grok-imagine-image")

    response = admin_client.post(
        reverse("admin:edits_api_price_change", args=[price.pk]),
        {"provider": "x-ai", "model": "grok-imagine-image", "per_image": '{"1024x1024": -1}', "source": "x",
         "source_date": "2026-11-29"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "write quality/size" in response.content.decode()


def test_the_usage_list_shows_cost_and_unknown_and_is_for_staff_only(admin_client: Client, client: Client) -> None:
    UsageRecord.objects.create(request_id="r1", endpoint="edits", status=200, cost_usd=Decimal("0.042"))
    UsageRecord.objects.create(request_id="r2", endpoint="edits", status=504, cost_usd=None)

    staff = admin_client.get(reverse("admin:edits_api_usagerecord_changelist"), {"status__exact": "504"})
    anonymous = client.get(reverse("admin:edits_api_usagerecord_changelist"))

    assert staff.status_code == 200 and "unknown" in staff.content.decode()
    assert anonymous.status_code == 302
