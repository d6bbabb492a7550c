"""The playground page of the admin (/admin/playground/): a form, then `playground.playground_run`.

Staff only (wrapped in the admin's login), and only for users who may change routes: a run calls
a real provider, which may cost money.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from edits_api.playground import PlaygroundInput, playground_run
from entities import vocabulary
from entities.catalog import PROVIDERS, Operation
from entities.models import Route, RouteRef

PERMISSION = "entities.change_route"
# Offered in the size box; any WxH the model family accepts may be typed.
SIZE_SUGGESTIONS = ("auto", "1024x1024", "1536x1024", "1024x1536", "512x512", "256x256", "1792x1024", "1024x1792")


class MultipleImagesInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImagesField(forms.FileField):
    """Several files in one input (Django's documented pattern); an empty list when none."""

    widget = MultipleImagesInput

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class RefSelect(forms.Select):
    """Each image model's option names the routes it is a ref of, so the page can hide the others."""

    def __init__(self, *args: Any, routes_of: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes_of = routes_of or {}

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        if value:
            option["attrs"]["data-routes"] = self.routes_of.get(str(value), "")
        return option


class PlaygroundForm(forms.Form):
    route = forms.ChoiceField()
    operation = forms.ChoiceField(
        choices=[(Operation.EDIT.value, "Edit images"), (Operation.GENERATION.value, "Generate images")],
        initial=Operation.EDIT.value,
        widget=forms.RadioSelect,
    )
    ref = forms.ChoiceField(
        label="Image model", required=False, help_text="Empty: the route's refs in order, with its fallback."
    )
    model = forms.CharField(
        required=False, max_length=200, help_text="Empty: the image model's default. X/model picks a ref too."
    )
    images = MultipleImagesField(
        required=False, help_text="PNG, JPEG or WebP; several at once for models that take more than one."
    )
    mask = forms.FileField(required=False, help_text="A PNG of the first image's size; transparent where to edit.")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    n = forms.CharField(label="n", required=False, widget=forms.NumberInput(attrs={"min": 1, "max": vocabulary.MAX_N}))
    size = forms.CharField(required=False, widget=forms.TextInput(attrs={"list": "playground-sizes"}))
    quality = forms.ChoiceField(
        required=False, choices=[("", "image model's default"), *((q, q) for q in vocabulary.QUALITIES)]
    )
    response_format = forms.ChoiceField(
        label="Images come back",
        choices=[("b64_json", "inline (b64_json)"), ("url", "as signed links on the gateway (url)")],
        initial="b64_json",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        routes = list(Route.objects.order_by("id"))
        route_field, ref_field = self.fields["route"], self.fields["ref"]
        assert isinstance(route_field, forms.ChoiceField) and isinstance(ref_field, forms.ChoiceField)
        route_field.choices = [
            (route.id, f"{route.id} — {route.name}" + ("" if route.enabled else " (disabled)")) for route in routes
        ]
        routes_of: dict[str, list[str]] = {}
        models: dict[str, str] = {}
        for ref in RouteRef.objects.select_related("image_model").order_by("image_model_id", "route_id"):
            routes_of.setdefault(ref.image_model_id, [])
            if ref.route_id not in routes_of[ref.image_model_id]:
                routes_of[ref.image_model_id].append(ref.route_id)
            models[ref.image_model_id] = f"{ref.image_model_id} ({PROVIDERS[ref.image_model.provider].name})"
        ref_field.choices = [("", "the route's order"), *sorted(models.items())]
        ref_field.widget = RefSelect(
            choices=ref_field.choices, routes_of={k: " ".join(v) for k, v in routes_of.items()}
        )

    def run_input(self) -> PlaygroundInput:
        data = self.cleaned_data
        return PlaygroundInput(
            route_id=data["route"],
            operation=Operation(data["operation"]),
            prompt=data["prompt"],
            ref=data["ref"],
            model=data["model"],
            n=data["n"],
            size=data["size"],
            quality=data["quality"],
            response_format=data["response_format"],
            images=tuple(data["images"]),
            mask=data["mask"],
        )


def playground_view(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    initial = {"route": request.GET.get("route", ""), "operation": request.GET.get("operation", "edit")}
    form = PlaygroundForm(request.POST or None, request.FILES or None, initial=initial)
    run = None
    if request.method == "POST" and form.is_valid():
        run = playground_run(
            run=form.run_input(),
            public_base=request.build_absolute_uri("/").rstrip("/"),
            user=request.user.get_username(),
        )
    context = {
        **admin.site.each_context(request),
        "title": "Playground",
        "form": form,
        "run": run,
        "size_suggestions": SIZE_SUGGESTIONS,
    }
    return TemplateResponse(request, "admin/playground.html", context)
