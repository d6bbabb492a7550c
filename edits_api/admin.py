"""Usage records in the admin: read-only, filterable, for operators answering "what happened?"."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from edits_api.models import UsageRecord


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
