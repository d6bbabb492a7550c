"""The ledger's admin pages: totals over the filtered list, its CSV export, the dashboard and a key's
spend against its budget; staff only (anonymous users are sent to log in, other users refused)."""

from __future__ import annotations

import csv
import datetime
import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from edits_api.accounting import budgets
from edits_api.models import UsageRecord
from entities.models import ApiKey

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:edits_api_usagerecord_changelist"
EXPORT = "admin:edits_api_usagerecord_export"
DASHBOARD = "admin:edits_api_usagerecord_dashboard"


def _row(request_id: str, **fields: object) -> UsageRecord:
    defaults: dict[str, object] = {
        "endpoint": "edits", "route_id": "main", "api_key_id": "team-a", "provider": "openai",
        "model": "gpt-image-1", "status": 200, "images": 1, "latency_ms": 100, "cost_usd": Decimal("0.01"),
    }  # fmt: skip
    return UsageRecord.objects.create(request_id=request_id, **{**defaults, **fields})


@pytest.fixture
def ledger() -> None:
    _row("a1", images=2, cost_usd=Decimal("0.040"))
    _row("a2", status=502, images=0, cost_usd=None, error_code="upstream_error")
    _row("a3", status=400, images=0, cost_usd=Decimal("0"), error_code="invalid_value")
    _row("b1", route_id="other", api_key_id="team-b", provider="gemini", images=3, cost_usd=Decimal("0.12"))
    _row("b2", route_id="other", api_key_id="team-b", provider="gemini", status=504, images=0, cost_usd=None)


def _csv(response: object) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def non_staff_client(client: Client) -> Client:
    client.force_login(User.objects.create_user("visitor", password="x", is_staff=False))
    return client


@pytest.fixture
def staff_without_ledger_client(client: Client) -> Client:
    user = User.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client.force_login(user)
    return client


def test_totals_over_the_whole_list_and_over_a_filter(admin_client: Client, ledger: None) -> None:
    everything = admin_client.get(reverse(CHANGELIST)).context["usage_totals"]
    team_a_errors = admin_client.get(reverse(CHANGELIST), {"api_key_id": "team-a", "status_class": "5xx"})

    assert (everything.requests, everything.errors, everything.images) == (5, 3, 5)
    assert everything.cost_known_usd == Decimal("0.16") and everything.cost_unknown == 2
    totals = team_a_errors.context["usage_totals"]
    assert (totals.requests, totals.errors, totals.images, totals.cost_unknown) == (1, 1, 0, 1)
    assert totals.cost_known_usd == 0
    assert 'id="usage-totals"' in team_a_errors.content.decode()
    assert "status_class=5xx" in team_a_errors.content.decode()  # the export link carries the filter


def test_status_class_filter_keeps_client_errors_apart(admin_client: Client, ledger: None) -> None:
    response = admin_client.get(reverse(CHANGELIST), {"status_class": "4xx"})

    assert [r.request_id for r in response.context["cl"].result_list] == ["a3"]


def test_csv_export_holds_exactly_the_filtered_rows(admin_client: Client, ledger: None) -> None:
    response = admin_client.get(reverse(EXPORT), {"provider": "gemini"})

    rows = _csv(response)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert sorted(r["request_id"] for r in rows) == ["b1", "b2"]
    by_id = {r["request_id"]: r for r in rows}
    assert by_id["b1"]["cost_usd"] == "0.120000" and by_id["b2"]["cost_usd"] == ""
    assert by_id["b2"]["status"] == "504" and by_id["b1"]["images"] == "3"
    assert "usage" not in rows[0] and "reserved_usd" not in rows[0]


def test_csv_export_follows_search_and_day(admin_client: Client, ledger: None) -> None:
    old = _row("old", created_at=timezone.now() - datetime.timedelta(days=40))
    day = old.created_at.astimezone(datetime.UTC)

    searched = _csv(admin_client.get(reverse(EXPORT), {"q": "a2"}))
    that_day = _csv(
        admin_client.get(
            reverse(EXPORT),
            {"created_at__year": day.year, "created_at__month": day.month, "created_at__day": day.day},
        )
    )

    assert [r["request_id"] for r in searched] == ["a2"]
    assert [r["request_id"] for r in that_day] == ["old"]


def test_csv_neutralises_a_planted_spreadsheet_formula(admin_client: Client) -> None:
    _row("f1", model='=HYPERLINK("http://evil")')

    rows = _csv(admin_client.get(reverse(EXPORT)))

    assert rows[0]["model"].startswith("'=")


@pytest.mark.parametrize("name", [EXPORT, DASHBOARD])
def test_anonymous_users_are_sent_to_log_in(client: Client, name: str) -> None:
    response = client.get(reverse(name))

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("name", [EXPORT, DASHBOARD])
def test_non_staff_users_are_sent_to_log_in(non_staff_client: Client, name: str) -> None:
    response = non_staff_client.get(reverse(name))

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("name", [EXPORT, DASHBOARD])
def test_staff_without_the_ledger_permission_are_refused(staff_without_ledger_client: Client, name: str) -> None:
    response = staff_without_ledger_client.get(reverse(name))

    assert response.status_code == 403


def test_dashboard_shows_series_per_day_and_uses_the_vendored_chart_library(admin_client: Client, ledger: None) -> None:
    response = admin_client.get(reverse(DASHBOARD))

    body = response.content.decode()
    series = response.context["series"]
    assert response.status_code == 200
    assert "/static/gateway/vendor/chartjs-4.4.7/chart.umd.js" in body
    # Nothing loaded from another host (a CDN): the word "cdn" alone can turn up in a random token.
    assert not re.search(r'(src|href)="(https?:)?//', body)
    assert len(series["labels"]) == 30 and series["labels"][-1] == timezone.now().strftime("%Y-%m-%d")
    assert series["requests"][-1] == 5 and series["errors"][-1] == 3 and series["images"][-1] == 5
    assert series["cost_usd"][-1] == pytest.approx(0.16) and series["cost_unknown"][-1] == 2
    assert sum(series["requests"][:-1]) == 0  # quiet days are zeros, not gaps
    assert series["p95_latency_ms"][-1] == 100 and series["p95_latency_ms"][0] is None
    assert 'id="dashboard-series"' in body


def test_dashboard_selects_a_route_and_key_per_hour_with_p95(admin_client: Client, ledger: None) -> None:
    for index, latency in enumerate(range(10, 210, 10)):  # 20 rows: 10 .. 200 ms
        _row(f"lat{index}", route_id="fast", api_key_id="team-c", latency_ms=latency)

    response = admin_client.get(reverse(DASHBOARD), {"route": "fast", "key": "team-c", "bucket": "hour", "days": "1"})

    series = response.context["series"]
    assert len(series["labels"]) == 24
    assert series["requests"][-1] == 20 and series["p95_latency_ms"][-1] == 190  # nearest rank: 19th of 20
    assert response.context["totals"].requests == 20
    assert [row["api_key_id"] for row in response.context["by_key"]] == ["team-c"]


def test_dashboard_is_linked_from_the_admin_index(admin_client: Client) -> None:
    body = admin_client.get(reverse("admin:index")).content.decode()

    assert reverse(DASHBOARD) in body


def test_key_page_shows_spend_today_and_this_month_against_budget(admin_client: Client) -> None:
    key = ApiKey(id="team-a", name="Team A", budget_usd_per_day=Decimal("2"), budget_usd_per_month=Decimal("50"))
    key.set_secret("sk-team-a-secret-value")
    key.save()
    now = timezone.now()
    budgets.reserve(key_id="team-a", budget=budgets.Budget(Decimal("2"), Decimal("50")), amount=Decimal("0.5"), at=now)
    budgets.settle(key_id="team-a", at=now, reserved=Decimal("0.5"), spent=Decimal("0.25"))
    budgets.reserve(key_id="team-a", budget=budgets.Budget(Decimal("2"), Decimal("50")), amount=Decimal("0.1"), at=now)

    body = admin_client.get(reverse("admin:entities_apikey_change", args=["team-a"])).content.decode()

    assert "Spend against budget" in body
    assert "today (UTC)" in body and f"{now:%B %Y} (UTC)" in body
    assert "0.250000 USD" in body and "0.100000 USD" in body  # spent, and reserved for a call under way
    assert "2.0000 USD" in body and "17.5 %" in body  # (0.25 + 0.1) / 2
    assert "50.0000 USD" in body and "0.7 %" in body  # (0.25 + 0.1) / 50
    assert "sk-team-a-secret-value" not in body


def test_a_key_without_budget_shows_its_spend_and_no_budget(admin_client: Client) -> None:
    key = ApiKey(id="free", name="Free")
    key.set_secret("sk-free-secret-value")
    key.save()

    body = admin_client.get(reverse("admin:entities_apikey_change", args=["free"])).content.decode()

    assert "no budget" in body and "0 USD" in body


def test_totals_are_exact_to_the_ledger_precision(admin_client: Client) -> None:
    for index in range(3):
        _row(f"tenth{index}", cost_usd=Decimal("0.1"))

    response = admin_client.get(reverse(CHANGELIST))

    assert response.context["usage_totals"].cost_known_usd == Decimal("0.3")
    assert '<td class="t-cost">0.300000</td>' in response.content.decode()
