"""Usage records in the admin: read-only, filterable, for operators answering "what happened?"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from edits_api import resilience
from edits_api.models import ProviderHealth, UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at", "endpoint", "route_id", "image_model_id", "api_key_id", "model", "status",
        "error_code", "images", "attempts", "latency_ms",
    )  # fmt: skip
    list_filter = ("endpoint", "status", "provider", "error_code")
    search_fields = ("route_id", "image_model_id", "api_key_id", "model")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in UsageRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ProviderHealth)
class ProviderHealthAdmin(admin.ModelAdmin):
    """Each image model's circuit breaker: state, failed requests in its window and the last error."""

    list_display = ("id", "provider", "circuit", "failures", "last_error")
    list_filter = ("provider",)
    search_fields = ("id", "name")
    actions = ("close_circuit",)

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
