"""The ledger, the price table and provider health in the admin, and "Test connection" on image
models and provider health."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from edits_api import diagnostics, resilience
from edits_api.dashboard import StatusClassFilter, UsageAdminPages, spend_summary
from edits_api.models import Price, ProviderHealth, UsageRecord
from entities.admin import ApiKeyAdmin
from entities.admin import ImageModelAdmin as EntitiesImageModelAdmin
from entities.models import ApiKey, ImageModel


@admin.action(description="Test connection", permissions=["view"])
def test_connection(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse:
    """Probes each selected image model (diagnostics.py) and shows OK or the provider's error."""
    tests = diagnostics.image_models_test_connection(image_models=queryset.order_by("id"))
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Test connection",
        "opts": modeladmin.model._meta,
        "tests": tests,
        "timeout": f"{diagnostics.PROBE_TIMEOUT_S:.0f}",
        "back": request.get_full_path(),
    }
    return TemplateResponse(request, "admin/edits_api/test_connection.html", context)


# entities must not import edits_api, so the action joins the image-model admin from here.
admin.site.unregister(ImageModel)


@admin.register(ImageModel)
class ImageModelAdmin(EntitiesImageModelAdmin):
    actions = (*EntitiesImageModelAdmin.actions, test_connection)  # type: ignore[assignment]  # base's is inferred


@admin.register(UsageRecord)
class UsageRecordAdmin(UsageAdminPages, admin.ModelAdmin):
    """The ledger: read-only; filter by route, key, provider, status, channel and day; totals above
    the list, a CSV export of what is filtered and a dashboard (edits_api/dashboard.py)."""

    list_display = (
        "created_at", "endpoint", "route_id", "api_key_id", "image_model_id", "model", "status",
        "error_code", "images", "cost", "attempts", "latency_ms",
    )  # fmt: skip
    list_filter = (
        StatusClassFilter, "endpoint", "channel", "status", "provider", "error_code", "route_id", "api_key_id",
    )  # fmt: skip
    search_fields = ("request_id", "route_id", "image_model_id", "api_key_id", "model")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in UsageRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        return "unknown" if obj.cost_usd is None else f"{obj.cost_usd:f}"


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """The price table costs are computed from; each row says where its figures come from."""

    list_display = (
        "provider", "model", "text_input_per_mtok", "image_input_per_mtok", "image_output_per_mtok",
        "text_output_per_mtok", "per_image_summary", "per_input_image", "source_date",
    )  # fmt: skip
    list_filter = ("provider",)
    search_fields = ("model", "source", "notes")
    fieldsets = (
        (None, {"fields": ["provider", "model"]}),
        (
            "Token rates (USD per million tokens)",
            {
                "fields": [
                    "text_input_per_mtok",
                    "image_input_per_mtok",
                    "image_output_per_mtok",
                    "text_output_per_mtok",
                ]
            },
        ),
        ("Per image (USD)", {"fields": ["per_image", "per_input_image"]}),
        ("Source", {"fields": ["source", "source_date", "notes"]}),
    )

    @admin.display(description="per image")
    def per_image_summary(self, obj: Price) -> str:
        values = [float(v) for v in (obj.per_image or {}).values()]
        if not values:
            return "—"
        low, high = min(values), max(values)
        return f"{low:g}" if low == high else f"{low:g}–{high:g}"


@admin.register(ProviderHealth)
class ProviderHealthAdmin(admin.ModelAdmin):
    """Each image model's circuit breaker: state, failed requests in its window and the last error.

    The page lists its fields: left to Django, it would render every field of the image model,
    its token included.
    """

    list_display = ("id", "provider", "circuit", "failures", "last_error")
    fields = ("id", "name", "provider", "circuit", "failures", "last_error")
    readonly_fields = fields
    list_filter = ("provider",)
    search_fields = ("id", "name")
    actions = ("close_circuit", test_connection)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="circuit")
    def circuit(self, obj: ProviderHealth) -> str:
        state = resilience.breaker_state(obj.id)
        return f"open ({state.retry_in:.0f} s left)" if state.state == "open" else state.state

    @admin.display(description="failed requests (window)")
    def failures(self, obj: ProviderHealth) -> str:
        state = resilience.breaker_state(obj.id)
        return f"{state.failures} of {state.requests}"

    @admin.display(description="last error")
    def last_error(self, obj: ProviderHealth) -> str:
        return resilience.breaker_state(obj.id).last_error or "—"

    @admin.action(description="Close the circuit (forget failures)")
    def close_circuit(self, request: HttpRequest, queryset: QuerySet[ProviderHealth]) -> None:
        for image_model in queryset:
            resilience.breaker_close(image_model.id)
        messages.success(request, f"Closed the circuit of {queryset.count()} image model(s).")


class ApiKeyWithSpendAdmin(ApiKeyAdmin):
    """The key's page with its spend today and this month against its budget. Registered from here
    because the spend lives in edits_api, which entities must not import."""

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), *(["spend"] if obj else [])]

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            return fieldsets
        return [*fieldsets[:1], ("Spend against budget", {"fields": ["spend"]}), *fieldsets[1:]]

    @admin.display(description="spend")
    def spend(self, obj: ApiKey) -> str:
        return spend_summary(
            key_id=obj.pk, budget_per_day=obj.budget_usd_per_day, budget_per_month=obj.budget_usd_per_month
        )


admin.site.unregister(ApiKey)
admin.site.register(ApiKey, ApiKeyWithSpendAdmin)
