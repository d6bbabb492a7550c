"""Admin forms: structured fields over the entities' JSON columns, and write-only secrets.

The option fields are built from `EDITION_OPTIONS` / `GENERATION_OPTIONS` and validated by
`validate_options`, so the form and the importer accept exactly the same values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.html import format_html

from entities import services, vocabulary
from entities.models import (
    EDITION_OPTIONS,
    GENERATION_OPTIONS,
    ApiKey,
    ImageModel,
    Route,
    mask_secret,
    validate_options,
)

# The Azure connection keys; the model refuses them on any other provider.
CONNECTION_KEYS = ("resource_name", "deployment_id", "api_version")
OPTION_GROUPS: dict[str, dict[str, type]] = {"edition": EDITION_OPTIONS, "generation": GENERATION_OPTIONS}


def option_field_name(group: str, key: str) -> str:
    return f"{group}_{key}"


class _OptionValidator:
    """Checks one option value with the model's own rules, so each error lands on its field."""

    def __init__(self, key: str, allowed: dict[str, type]) -> None:
        self.key = key
        self.allowed = allowed

    def __call__(self, value: Any) -> None:
        validate_options({self.key: value}, self.allowed)


def _option_field(group: str, key: str, expected: type) -> forms.Field:
    label = key.replace("_", " ")
    validators = [_OptionValidator(key, OPTION_GROUPS[group])]
    if expected is bool:
        return forms.BooleanField(
            required=False,
            label=label,
            help_text="Off by default." if key == "enabled" else "",
        )
    if expected is int:
        return forms.IntegerField(required=False, label=label, validators=validators)
    if key in vocabulary.CHOICES:
        choices = [("", "— provider default —"), *((v, v) for v in vocabulary.CHOICES[key])]
        return forms.ChoiceField(required=False, label=label, choices=choices, validators=validators)
    return forms.CharField(required=False, label=label, validators=validators)


def _option_fields() -> dict[str, forms.Field]:
    return {
        option_field_name(group, key): _option_field(group, key, expected)
        for group, allowed in OPTION_GROUPS.items()
        for key, expected in allowed.items()
    }


# Declared as a class so the admin's fieldsets can name these fields; ModelForm comes first in
# the subclass's bases, as Django asks when mixing the two.
if TYPE_CHECKING:
    _OptionFieldsForm = forms.Form
else:
    _OptionFieldsForm = type("_OptionFieldsForm", (forms.Form,), _option_fields())


class ImageModelForm(forms.ModelForm, _OptionFieldsForm):
    """Edits an image model without ever rendering its token, and composes the option dicts."""

    # Not named `token`: the admin lists form fields in Meta.fields, and a model field name there
    # would let the ModelForm overwrite the stored token with the empty input.
    new_token = forms.CharField(
        required=False,
        label="Token",
        strip=True,
        # new-password: keeps the browser from filling in the operator's own admin password.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="A literal key (encrypted at rest) or ${env.NAME}, read at call time.",
    )
    # A scheme-less URL means https: providers are never reached over plain http by accident.
    base_url = forms.URLField(
        required=False, max_length=500, assume_scheme="https", help_text="Empty: the provider's default."
    )
    clear_token = forms.BooleanField(required=False, label="Remove the stored token")
    resource_name = forms.CharField(required=False, help_text="Azure OpenAI only.")
    deployment_id = forms.CharField(required=False, help_text="Azure OpenAI only.")
    api_version = forms.CharField(required=False, help_text="Azure OpenAI only, e.g. 2025-04-01-preview.")

    class Meta:
        model = ImageModel
        fields = [
            "id",
            "name",
            "description",
            "provider",
            "base_url",
            "timeout_ms",
            "tags",
            "metadata",
            "models_include",
            "models_exclude",
        ]

    # JSON fields whose empty input means their default rather than JSON null.
    _json_defaults: dict[str, Any] = {"tags": [], "metadata": {}, "models_include": [], "models_exclude": []}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance: ImageModel = self.instance
        for group in OPTION_GROUPS:
            stored = getattr(instance, group) or {}
            for key, value in stored.items():
                name = option_field_name(group, key)
                if name in self.fields:
                    self.initial.setdefault(name, value)
        extra = instance.connection_extra if isinstance(instance.connection_extra, dict) else {}
        for key in CONNECTION_KEYS:
            self.initial.setdefault(key, extra.get(key, ""))
        if instance.token:
            self.fields["new_token"].help_text = format_html(
                "Stored: <strong>{}</strong>. Leave empty to keep it; a literal key "
                "(encrypted at rest) or ${{env.NAME}}, read at call time.",
                mask_secret(instance.token),
            )
        else:
            self.fields["clear_token"].disabled = True
            self.fields["new_token"].help_text = "No token stored. " + str(self.fields["new_token"].help_text)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("new_token") and cleaned.get("clear_token"):
            self.add_error("clear_token", "Either enter a new token or remove the stored one, not both.")
        for name, default in self._json_defaults.items():
            if name in cleaned and cleaned[name] is None:
                cleaned[name] = type(default)()
        # The JSON columns and the token are not ModelForm fields: set them now, so the model's
        # full_clean() that follows judges what was typed (e.g. "this provider cannot edit").
        instance: ImageModel = self.instance
        for group, allowed in OPTION_GROUPS.items():
            options: dict[str, Any] = {}
            for key in allowed:
                value = cleaned.get(option_field_name(group, key))
                if key == "enabled":
                    options[key] = bool(value)
                elif value not in (None, ""):
                    options[key] = value
            setattr(instance, group, options)
        instance.connection_extra = {k: cleaned[k] for k in CONNECTION_KEYS if cleaned.get(k)}
        if cleaned.get("new_token"):
            instance.token = cleaned["new_token"]
        elif cleaned.get("clear_token"):
            instance.token = ""
        return cleaned

    def add_error(self, field: str | None, error: Any) -> None:
        # The model names its JSON columns; show those errors next to the fields that fed them.
        targets = {
            "edition": option_field_name("edition", "enabled"),
            "generation": option_field_name("generation", "enabled"),
            "connection_extra": NON_FIELD_ERRORS,
            "token": "new_token",
        }
        super().add_error(field, _moved_errors(field, _option_errors_on_their_fields(error), targets))


def _option_errors_on_their_fields(error: Any) -> Any:
    """`edition`/`generation` errors that name an option ("size: ...") go to that option's field."""
    if not isinstance(error, ValidationError) or not hasattr(error, "error_dict"):
        return error
    moved: dict[str, list[Any]] = {}
    for name, errors in error.error_dict.items():
        for item in errors:
            key, _, rest = (item.message % (item.params or {})).partition(": ")
            if name in OPTION_GROUPS and rest and key in OPTION_GROUPS[name]:
                moved.setdefault(option_field_name(name, key), []).append(ValidationError(rest))
            else:
                moved.setdefault(name, []).append(item)
    return ValidationError(moved)


def _moved_errors(field: str | None, error: Any, targets: dict[str, str]) -> Any:
    """The model's errors with those keyed by a model field (not a form field) moved to `targets`."""
    if field is not None or not isinstance(error, ValidationError) or not hasattr(error, "error_dict"):
        return error
    moved: dict[str, list[ValidationError]] = {}
    for name, errors in error.error_dict.items():
        moved.setdefault(targets.get(name, name), []).extend(errors)
    return ValidationError(moved)


class LinesField(forms.Field):
    """A list of strings edited as one entry per line."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]


class PluginStateSelect(forms.NullBooleanSelect):
    """Null means the plugin is absent from the route, which differs from present but off."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.choices = [("unknown", "absent"), ("true", "enabled"), ("false", "present, disabled")]


class RouteForm(forms.ModelForm):
    domains = LinesField(
        help_text="One per line: 'host' or 'host/prefix'; '*' matches any host.",
    )

    class Meta:
        model = Route
        fields = [
            "id",
            "name",
            "enabled",
            "domains",
            "edit_plugin_enabled",
            "max_size_upload",
            "edit_fallback",
            "edit_fallback_named",
            "edit_retries",
            "edit_deadline_ms",
            "generation_plugin_enabled",
            "generation_decode",
            "generation_fallback",
        ]
        widgets = {
            "edit_plugin_enabled": PluginStateSelect,
            "generation_plugin_enabled": PluginStateSelect,
        }
        help_texts = {
            "edit_fallback": "On a retryable provider failure, try the next ref.",
            "generation_fallback": "On a retryable provider failure, try the next ref.",
            "generation_decode": "Answer with the image bytes when exactly one image is asked for.",
        }


class RouteRefFormSet(forms.BaseInlineFormSet):
    """Refuses two refs at the same position of one plugin, which would make the order arbitrary."""

    def clean(self) -> None:
        super().clean()
        seen: set[tuple[str, int]] = set()
        for form in self.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if data.get("DELETE"):
                continue
            if "plugin" not in data or data.get("position") is None:
                continue
            slot = (data["plugin"], data["position"])
            if slot in seen:
                raise ValidationError(f"Two {data['plugin']} refs share position {data['position']}.")
            seen.add(slot)


class ApiKeyForm(forms.ModelForm):
    """Takes no secret from the operator: a new key gets a generated one, shown once after saving."""

    issued_secret: str | None = None

    class Meta:
        model = ApiKey
        fields = ["id", "name", "enabled", "routes", "requests_per_minute", "images_per_day"]
        help_texts = {
            "routes": "Routes this key opens. A route named by any key requires a key.",
            "requests_per_minute": "Empty: no limit.",
            "images_per_day": "Empty: no limit.",
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        # The model refuses a key without a secret, so a new key gets its secret before validation.
        if self.instance._state.adding and not self.instance.secret_hash:
            self.issued_secret = services.api_key_issue_secret(api_key=self.instance)
        return self.cleaned_data

    def add_error(self, field: str | None, error: Any) -> None:
        # "secret" is no form field: Django would raise rather than show it, so show it on top.
        super().add_error(field, _moved_errors(field, error, {"secret": NON_FIELD_ERRORS}))
