"""The ledger for operators: totals over a filtered usage list, its CSV export, a dashboard of charts
over time per route and key, and a key's spend against its budget. Read-only; staff only (the
admin's own login and view permission guard every page)."""

from __future__ import annotations

import csv
import datetime
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from edits_api.accounting.budgets import Budget, Spend, spend_of
from edits_api.models import UsageRecord

ZERO = Decimal(0)
# p95 is computed in Python over at most this many rows of the dashboard's window (the newest);
# the other series are aggregated by the database and are exact.
P95_ROW_LIMIT = 200_000
MAX_DAYS = 92
ERROR = Q(status__gte=400)


class StatusClassFilter(admin.SimpleListFilter):
    """2xx / 4xx / 5xx: what an operator asks first ("what failed, and whose fault was it?")."""

    title = "status class"
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("2xx", "2xx success"), ("4xx", "4xx client error"), ("5xx", "5xx upstream/gateway")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
        value = self.value()
        if value in ("2xx", "4xx", "5xx"):
            low = int(value[0]) * 100
            return queryset.filter(status__gte=low, status__lt=low + 100)
        return queryset


@dataclass(frozen=True)
class Totals:
    requests: int
    errors: int
    images: int
    cost_known_usd: Decimal
    cost_unknown: int  # rows whose cost is unknown (not counted in cost_known_usd)


def usage_totals(queryset: QuerySet[UsageRecord]) -> Totals:
    """Totals of a (filtered) usage list, in one query."""
    row = queryset.order_by().aggregate(
        requests=Count("id"),
        errors=Count("id", filter=ERROR),
        images=Sum("images"),
        cost=Sum("cost_usd"),
        unknown=Count("id", filter=Q(cost_usd__isnull=True)),
    )
    return Totals(row["requests"], row["errors"], row["images"] or 0, usd(row["cost"]), row["unknown"])


def usd(value: object) -> Decimal:
    """A sum of costs as the ledger stores them (6 places): SQLite sums decimals as floats."""
    return ZERO if value is None else Decimal(str(value)).quantize(Decimal("0.000001"))


# The export: ids, figures and codes only. No secrets are stored in the ledger, and the provider's raw
# `usage` JSON is left out (it is the provider's shape, not ours, and may grow).
CSV_FIELDS = (
    "created_at", "request_id", "channel", "endpoint", "route_id", "api_key_id", "image_model_id", "provider",
    "model", "status", "error_code", "attempts", "latency_ms", "upstream_latency_ms", "request_bytes",
    "response_bytes", "images_in", "images", "input_text_tokens", "input_image_tokens", "output_image_tokens",
    "output_text_tokens", "cost_usd", "price_label",
)  # fmt: skip


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming answer."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(queryset: QuerySet[UsageRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    for row in queryset.values_list(*CSV_FIELDS).iterator(chunk_size=2000):
        yield writer.writerow(["" if value is None else _csv_value(value) for value in row])


def _csv_value(value: object) -> object:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # a spreadsheet must not run a formula planted in a model name or label
    return value


def usage_csv_response(queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
    stamp = timezone.now().astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(_csv_lines(queryset), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
    return response


@dataclass(frozen=True)
class DashboardQuery:
    bucket: str  # "day" or "hour"
    days: int
    route_id: str
    api_key_id: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> DashboardQuery:
        bucket = "hour" if request.GET.get("bucket") == "hour" else "day"
        try:
            days = int(request.GET.get("days", "2" if bucket == "hour" else "30"))
        except ValueError:
            days = 30
        return cls(bucket, min(max(days, 1), MAX_DAYS), request.GET.get("route", ""), request.GET.get("key", ""))

    def rows(self, now: datetime.datetime) -> QuerySet[UsageRecord]:
        rows = UsageRecord.objects.filter(created_at__gte=self.since(now))
        if self.route_id:
            rows = rows.filter(route_id=self.route_id)
        if self.api_key_id:
            rows = rows.filter(api_key_id=self.api_key_id)
        return rows.order_by()

    def since(self, now: datetime.datetime) -> datetime.datetime:
        start = now - datetime.timedelta(days=self.days)
        if self.bucket == "day":
            return start.replace(hour=0, minute=0, second=0, microsecond=0) + datetime.timedelta(days=1)
        return start.replace(minute=0, second=0, microsecond=0) + datetime.timedelta(hours=1)

    def buckets(self, now: datetime.datetime) -> list[datetime.datetime]:
        """Every bucket of the window, so a quiet day shows as zero rather than being skipped."""
        step = datetime.timedelta(days=1) if self.bucket == "day" else datetime.timedelta(hours=1)
        current, end, found = self.since(now), now, []
        while current <= end:
            found.append(current)
            current += step
        return found


def percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile (the value below which `fraction` of the values lie)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def dashboard_series(query: DashboardQuery, now: datetime.datetime | None = None) -> dict[str, Any]:
    """The dashboard's series, one value per bucket: requests, errors, p95 latency, images, cost."""
    now = now or timezone.now()
    trunc = (TruncDay if query.bucket == "day" else TruncHour)("created_at", tzinfo=datetime.UTC)
    rows = query.rows(now).annotate(bucket=trunc)
    by_bucket = {
        row["bucket"]: row
        for row in rows.values("bucket").annotate(
            requests=Count("id"),
            errors=Count("id", filter=ERROR),
            images=Sum("images"),
            cost=Sum("cost_usd"),
            unknown=Count("id", filter=Q(cost_usd__isnull=True)),
        )
    }
    latencies: dict[datetime.datetime, list[int]] = defaultdict(list)
    for bucket, latency in rows.order_by("-created_at").values_list("bucket", "latency_ms")[:P95_ROW_LIMIT]:
        latencies[bucket].append(latency)
    labels, series = [], defaultdict(list)
    for bucket in query.buckets(now):
        row = by_bucket.get(bucket, {})
        labels.append(bucket.strftime("%Y-%m-%d" if query.bucket == "day" else "%m-%d %H:00"))
        series["requests"].append(row.get("requests", 0))
        series["errors"].append(row.get("errors", 0))
        series["p95_latency_ms"].append(percentile(latencies.get(bucket, []), 0.95))
        series["images"].append(row.get("images") or 0)
        series["cost_usd"].append(float(usd(row.get("cost"))))
        series["cost_unknown"].append(row.get("unknown", 0))
    return {"labels": labels, **series}


def breakdown(query: DashboardQuery, field: str, now: datetime.datetime | None = None) -> list[dict[str, Any]]:
    """Totals of the window per route or per key, busiest first."""
    rows = query.rows(now or timezone.now())
    found = list(
        rows.values(field)
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=ERROR),
            images=Sum("images"),
            cost=Sum("cost_usd"),
            unknown=Count("id", filter=Q(cost_usd__isnull=True)),
        )
        .order_by("-requests")[:20]
    )
    return [{**row, "cost": usd(row["cost"])} for row in found]


def choices(field: str) -> Iterable[str]:
    return UsageRecord.objects.exclude(**{field: ""}).order_by(field).values_list(field, flat=True).distinct()


def key_spend(*, key_id: str, budget_per_day: Decimal | None, budget_per_month: Decimal | None) -> list[Spend]:
    return spend_of(key_id=key_id, budget=Budget(budget_per_day, budget_per_month), at=timezone.now())


class UsageAdminPages:
    """Mixed into the ledger's ModelAdmin: totals above the list, its CSV export, the dashboard."""

    def get_urls(self) -> list[Any]:
        from django.urls import path

        wrap = self.admin_site.admin_view  # type: ignore[attr-defined]
        return [
            path("export.csv", wrap(self.export_csv_view), name="edits_api_usagerecord_export"),
            path("dashboard/", wrap(self.dashboard_view), name="edits_api_usagerecord_dashboard"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def _require_view(self, request: HttpRequest) -> None:
        from django.core.exceptions import PermissionDenied

        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["usage_totals"] = usage_totals(context["cl"].queryset)
            context["export_query"] = request.GET.urlencode()
        return response

    def export_csv_view(self, request: HttpRequest) -> StreamingHttpResponse:
        """The changelist's own filters, search and date drill-down, read by Django's ChangeList."""
        self._require_view(request)
        changelist = self.get_changelist_instance(request)  # type: ignore[attr-defined]
        return usage_csv_response(changelist.get_queryset(request))

    def dashboard_view(self, request: HttpRequest) -> Any:
        from django.template.response import TemplateResponse

        self._require_view(request)
        query = DashboardQuery.from_request(request)
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": "Usage dashboard",
            "opts": UsageRecord._meta,
            "query": query,
            "series": dashboard_series(query, now),
            "totals": usage_totals(query.rows(now)),
            "by_route": breakdown(query, "route_id", now),
            "by_key": breakdown(query, "api_key_id", now),
            "routes": choices("route_id"),
            "keys": choices("api_key_id"),
            "day_choices": sorted({1, 2, 7, 14, 30, MAX_DAYS, query.days}),
        }
        return TemplateResponse(request, "admin/edits_api/dashboard.html", context)


def spend_summary(*, key_id: str, budget_per_day: Decimal | None, budget_per_month: Decimal | None) -> Any:
    """A small table: today's and this month's spend (and reservations under way) against the budget."""
    from django.utils.html import format_html, format_html_join

    rows = []
    for spend in key_spend(key_id=key_id, budget_per_day=budget_per_day, budget_per_month=budget_per_month):
        when = "today (UTC)" if spend.period == "day" else f"{spend.starts:%B %Y} (UTC)"
        if spend.budget_usd is None:
            budget, share = "no budget", "—"
        else:
            budget = f"{spend.budget_usd:f} USD"
            share = f"{(spend.spent_usd + spend.reserved_usd) / spend.budget_usd * 100:.1f} %"
        rows.append((when, f"{spend.spent_usd:f}", f"{spend.reserved_usd:f}", budget, share))
    body = format_html_join("", "<tr><td>{}</td><td>{} USD</td><td>{} USD</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        '<table class="key-spend"><thead><tr><th>window</th><th>spent</th><th>reserved (calls under way)</th>'
        "<th>budget</th><th>used</th></tr></thead><tbody>{}</tbody></table>",
        body,
    )
