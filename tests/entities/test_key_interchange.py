"""An API key's budget, expiry and model patterns in the entity JSON: imported, exported, refused."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest

from entities.interchange import ImportFailed, entities_export, entities_import
from entities.models import ApiKey

pytestmark = pytest.mark.django_db

ROUTE = {"id": "r1", "name": "R1", "frontend": {"domains": ["a.example.com"]}, "plugins": []}


def key(**fields: Any) -> dict[str, Any]:
    return {"id": "k1", "name": "K1", "secret": "gw-key-interchange-secret-01", "routes": ["r1"], **fields}


def import_error(*keys: dict[str, Any]) -> str:
    with pytest.raises(ImportFailed) as caught:
        entities_import(data={"routes": [ROUTE], "api_keys": list(keys)})
    return str(caught.value)


def test_budget_expiry_and_models_import_and_export_in_the_same_form() -> None:
    sent = key(
        rate_limit={"requests_per_minute": 60},
        budget={"usd_per_day": 5, "usd_per_month": 100.5},
        expires_at="2027-06-30T12:00:00Z",
        models={"include": ["gpt-image-.*"], "exclude": ["gpt-image-1"]},
    )

    entities_import(data={"routes": [ROUTE], "api_keys": [sent]})
    stored = ApiKey.objects.get(id="k1")
    exported = entities_export(with_secrets=True)["api_keys"][0]

    assert (stored.budget_usd_per_day, stored.budget_usd_per_month) == (Decimal(5), Decimal("100.5"))
    assert stored.expires_at == datetime.datetime(2027, 6, 30, 12, tzinfo=datetime.UTC)
    assert exported == {"enabled": True, **{k: v for k, v in sent.items() if k != "secret"}}
    assert "secret" not in exported


def test_importing_the_export_again_changes_nothing() -> None:
    sent = key(budget={"usd_per_day": 0.1}, expires_at="2027-01-01T00:00:00+02:00")
    entities_import(data={"routes": [ROUTE], "api_keys": [sent]})

    summary = entities_import(data=entities_export(with_secrets=False))

    assert summary.unchanged == 2  # the route and the key
    assert ApiKey.objects.get().budget_usd_per_day == Decimal("0.1")  # not the float nearest to it


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"budget": {"usd_per_day": 0}}, "api_keys[0] (k1): budget.usd_per_day: must be more than 0 USD"),
        ({"budget": {"usd_per_week": 3}}, "api_keys[0] (k1): budget.usd_per_week: unknown key"),
        ({"budget": {"usd_per_day": "5"}}, "api_keys[0] (k1): budget.usd_per_day: must be a number"),
        ({"expires_at": "next tuesday"}, "api_keys[0] (k1): expires_at: 'next tuesday' is not an ISO 8601 date"),
        ({"models": {"include": ["(unclosed"]}}, "api_keys[0] (k1): models.include: '(unclosed' is not a valid"),
    ],
)
def test_a_bad_budget_expiry_or_pattern_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    assert import_error(key(**fields)).startswith(message)
    assert not ApiKey.objects.exists()
