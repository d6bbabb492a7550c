"""The operators' admin for image models, routes and API keys.

Every write goes through `entities.services`, so the admin enforces the same rules as the
importer; secrets are never rendered (tokens cut to their last 4, key secrets shown once).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import conditional_escape, format_html, format_html_join

from entities import services
from entities.catalog import PROVIDERS
from entities.forms import (
    ApiKeyForm,
    ImageModelForm,
    RouteForm,
    RouteRefFormSet,
    image_model_sections,
)
from entities.models import AdminToken, ApiKey, ImageModel, Route, RouteRef

# Branded as the gateway (Django's default says "Django administration"); "View site" opens `/`.
admin.site.site_header = "Image gateway"
admin.site.site_title = "Image gateway admin"
admin.site.index_title = "Image models, routes and API keys"


class _OptionEnabledFilter(admin.SimpleListFilter):
    """Filters on `<group>.enabled` inside a JSON column; a missing key counts as off."""

    group = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("on", "on"), ("off", "off")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        enabled = ImageModel.objects.filter(**{f"{self.group}__enabled": True}).values("pk")
        if self.value() == "on":
            return queryset.filter(pk__in=enabled)
        if self.value() == "off":
            return queryset.exclude(pk__in=enabled)
        return queryset


class EditingFilter(_OptionEnabledFilter):
    title = "editing"
    parameter_name = "editing"
    group = "edition"


class GenerationFilter(_OptionEnabledFilter):
    title = "generation"
    parameter_name = "generation"
    group = "generation"


@admin.register(ImageModel)
class ImageModelAdmin(admin.ModelAdmin):
    """The form shows what the chosen provider takes (entities.forms.image_model_sections).

    The provider comes from the submitted form, else `?provider=` (the add page's provider
    links, and the script that reloads the page when the provider changes), else the entity.
    """

    form = ImageModelForm
    list_display = ("id", "name", "provider", "editing", "generating", "masked_token")
    list_filter = ("provider", EditingFilter, GenerationFilter)
    search_fields = ("id", "name")
    actions = ("enable_editing", "disable_editing")

    class Media:
        js = ("gateway/admin/image_model.js",)

    def _provider_key(self, request: HttpRequest, obj: ImageModel | None) -> str | None:
        candidates = [request.POST.get("provider"), request.GET.get("provider"), obj.provider if obj else None]
        return next((c for c in candidates if c in PROVIDERS), None)

    def get_form(self, request: HttpRequest, obj: ImageModel | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"provider_key": self._provider_key(request, obj)})

    def get_fieldsets(self, request: HttpRequest, obj: ImageModel | None = None) -> Any:
        provider = self._provider_key(request, obj)
        extra = obj.connection_extra if obj is not None and obj.provider == provider else {}
        fieldsets: list[tuple[str | None, dict[str, Any]]] = []
        for section in image_model_sections(provider, extra if isinstance(extra, dict) else {}):
            options: dict[str, Any] = {"fields": list(section.fields)}
            if section.description:
                # Django renders descriptions as HTML; an Azure reason quotes the stored api_version.
                options["description"] = conditional_escape(section.description)
            if section.collapsed:
                options["classes"] = ["collapse"]
            fieldsets.append((section.title, options))
        if provider is None:
            links = format_html_join(
                " · ", '<a href="?provider={}">{}</a>', ((p.key, p.name) for p in PROVIDERS.values())
            )
            fieldsets[0][1]["description"] = format_html(
                "Choose the provider first: its connection and options appear next. {}", links
            )
        if obj is not None:
            fieldsets.append(("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}))
        return fieldsets

    def response_add(self, request: HttpRequest, obj: ImageModel, post_url_continue: str | None = None) -> Any:
        # Saved from the page that showed no provider yet: go on to the fields of the one chosen.
        if request.GET.get("provider") not in PROVIDERS and "_addanother" not in request.POST:
            self.message_user(request, f"Added {obj}. Now set its connection and options.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:entities_imagemodel_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    def get_readonly_fields(self, request: HttpRequest, obj: ImageModel | None = None) -> list[str]:
        # The id is the import/export key: changing it here would copy the entity, not rename it.
        return ["created_at", "updated_at", *(["id"] if obj else [])]

    @admin.display(boolean=True, description="editing")
    def editing(self, obj: ImageModel) -> bool:
        return obj.edition_enabled

    @admin.display(boolean=True, description="generation")
    def generating(self, obj: ImageModel) -> bool:
        return obj.generation_enabled

    @admin.display(description="token")
    def masked_token(self, obj: ImageModel) -> str:
        return obj.masked_token()

    def save_model(self, request: HttpRequest, obj: ImageModel, form: ModelForm, change: bool) -> None:
        services.image_model_save(image_model=obj)

    @admin.action(description="Enable editing", permissions=["change"])
    def enable_editing(self, request: HttpRequest, queryset: QuerySet[ImageModel]) -> None:
        self._set_edition(request, queryset, enabled=True)

    @admin.action(description="Disable editing", permissions=["change"])
    def disable_editing(self, request: HttpRequest, queryset: QuerySet[ImageModel]) -> None:
        self._set_edition(request, queryset, enabled=False)

    def _set_edition(self, request: HttpRequest, queryset: QuerySet[ImageModel], *, enabled: bool) -> None:
        try:
            result = services.image_models_set_edition(image_models=queryset, enabled=enabled)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return
        state = "on" if enabled else "off"
        self.message_user(
            request,
            f"Editing turned {state} for {len(result.changed)} image model(s)"
            + (f"; {len(result.unchanged)} already had it {state}." if result.unchanged else "."),
            messages.SUCCESS,
        )


class RouteRefInline(admin.TabularInline):
    model = RouteRef
    formset = RouteRefFormSet
    fields = ("plugin", "position", "image_model")
    ordering = ("plugin", "position", "id")
    extra = 1
    verbose_name = "plugin ref"
    verbose_name_plural = "plugin refs (tried in position order within each plugin)"


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    inlines = (RouteRefInline,)
    list_display = ("id", "name", "enabled", "domain_list", "edit_refs", "generation_refs")
    list_filter = ("enabled",)
    search_fields = ("id", "name")
    fieldsets = (
        (None, {"fields": ["id", "name", "enabled", "domains"]}),
        (
            "Edits",
            {
                "fields": [
                    "edit_plugin_enabled",
                    "max_size_upload",
                    "edit_fallback",
                    "edit_fallback_named",
                    "edit_retries",
                    "edit_deadline_ms",
                ]
            },
        ),
        (
            "Generations",
            {"fields": ["generation_plugin_enabled", "generation_decode", "generation_fallback"]},
        ),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Route | None = None) -> list[str]:
        return ["created_at", "updated_at", *(["id"] if obj else [])]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).prefetch_related("refs")

    @admin.display(description="domains")
    def domain_list(self, obj: Route) -> str:
        return ", ".join(obj.domains or [])

    @admin.display(description="edit refs")
    def edit_refs(self, obj: Route) -> str:
        return _ref_list(obj, RouteRef.EDIT)

    @admin.display(description="generation refs")
    def generation_refs(self, obj: Route) -> str:
        return _ref_list(obj, RouteRef.GENERATION)

    def save_model(self, request: HttpRequest, obj: Route, form: ModelForm, change: bool) -> None:
        services.route_save(route=obj)


def _ref_list(route: Route, plugin: str) -> str:
    ids = route.ref_ids(plugin)
    return " → ".join(ids) if ids else "—"


_LIMIT_FIELDSETS: tuple[Any, ...] = (
    ("Rate limits", {"fields": ["requests_per_minute", "images_per_day"]}),
    ("Budget (USD, per UTC day and month)", {"fields": ["budget_usd_per_day", "budget_usd_per_month"]}),
    ("Lifetime and models", {"fields": ["expires_at", "models_include", "models_exclude"]}),
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("id", "name", "enabled", "route_list", "secret_hint", "limits", "expires_at")
    list_filter = ("enabled",)
    search_fields = ("id", "name")
    filter_horizontal = ("routes",)
    actions = ("regenerate_secret",)
    fieldsets = (
        (None, {"fields": ["id", "name", "enabled", "secret_hint", "routes"]}),
        *_LIMIT_FIELDSETS,
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return ["secret_hint", "created_at", "updated_at", *(["id"] if obj else [])]

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            # Nothing to hint at before the secret exists; it is generated on save.
            return [
                (
                    None,
                    {
                        "fields": ["id", "name", "enabled", "routes"],
                        "description": "The secret is generated when you save and shown once.",
                    },
                ),
                *_LIMIT_FIELDSETS,
            ]
        return super().get_fieldsets(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).prefetch_related("routes")

    @admin.display(description="routes")
    def route_list(self, obj: ApiKey) -> str:
        return ", ".join(route.pk for route in obj.routes.all()) or "—"

    @admin.display(description="limits")
    def limits(self, obj: ApiKey) -> str:
        parts = []
        if obj.requests_per_minute:
            parts.append(f"{obj.requests_per_minute}/min")
        if obj.images_per_day:
            parts.append(f"{obj.images_per_day} images/day")
        if obj.budget_usd_per_day is not None:
            parts.append(f"${obj.budget_usd_per_day:f}/day")
        if obj.budget_usd_per_month is not None:
            parts.append(f"${obj.budget_usd_per_month:f}/month")
        return ", ".join(parts) or "none"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        services.api_key_save(api_key=obj)
        issued = getattr(form, "issued_secret", None)
        if not change and issued:
            self.message_user(request, _secret_message({obj.pk: issued}), messages.WARNING)

    @admin.action(description="Regenerate secret", permissions=["change"])
    def regenerate_secret(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        issued = services.api_keys_regenerate_secrets(api_keys=queryset)
        self.message_user(request, _secret_message(issued), messages.WARNING)


def _secret_message(issued: dict[str, str]) -> str:
    return format_html(
        "Copy now, it will not be shown again (only its hash is stored): {}",
        format_html_join("; ", "API key {}: <code>{}</code>", issued.items()),
    )


@admin.register(AdminToken)
class AdminTokenAdmin(admin.ModelAdmin):
    """Admin REST API tokens: listed and revoked here, made by `manage.py create_admin_token NAME`."""

    list_display = ("name", "token_hint", "created_at", "last_used_at", "active", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name",)
    readonly_fields = ("name", "token_hint", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token is shown only when it is made, on the command line: `manage.py create_admin_token NAME`.
        return False

    @admin.display(boolean=True, description="active")
    def active(self, obj: AdminToken) -> bool:
        return obj.active

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[AdminToken]) -> None:
        revoked = services.admin_tokens_revoke(admin_tokens=queryset)
        self.message_user(request, f"Revoked {revoked} admin token(s); they are refused from now on.", messages.SUCCESS)
