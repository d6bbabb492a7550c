"""Admin forms: structured fields over the entities' JSON columns, shaped by the chosen provider.

An image model's form shows only what its provider takes: the connection fields it uses (Azure's
only for Azure, none for the built-in local provider), the editing and generation defaults where
the provider can do them (else the reason it cannot), choices where the values form a fixed list.
The option fields are checked by the model's `validate_options`, so the form refuses what the
importer refuses; values the form offers as choices keep any other stored value selectable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from entities import services, vocabulary
from entities.catalog import MODEL_SUGGESTIONS, PROVIDERS, SIZE_SUGGESTIONS, Operation
from entities.models import (
    DEFAULT_TIMEOUT_MS,
    EDITION_OPTIONS,
    GENERATION_OPTIONS,
    ApiKey,
    ImageModel,
    Route,
    validate_options,
)

# Every provider-specific connection key the catalog knows (today: Azure's).
CONNECTION_KEYS = tuple(dict.fromkeys(key for p in PROVIDERS.values() for key in p.extra_connection_keys))
OPTION_GROUPS: dict[str, dict[str, type]] = {"edition": EDITION_OPTIONS, "generation": GENERATION_OPTIONS}
_GROUP_OPERATION = {"edition": Operation.EDIT, "generation": Operation.GENERATION}
# The defaults most operators set; the rest sit in a collapsed "more" section.
_MAIN_OPTIONS = ("enabled", "model", "n", "size", "quality")

_OPTION_LABELS = {
    "model": "Default model",
    "n": "Images per request",
    "size": "Size",
    "quality": "Quality",
    "background": "Background",
    "response_format": "Answer with",
    "output_format": "Image format",
    "output_compression": "Compression (%)",
    "input_fidelity": "Input fidelity",
    "style": "Style",
    "moderation": "Moderation",
    "complexity": "Complexity",
    "frame_count": "Frames (gif)",
    "frame_duration_ms": "Frame duration (ms, gif)",
}
# Bounds the browser's number box shows (the model's checks decide).
_INTEGER_BOUNDS = {
    "n": (1, 10),
    "output_compression": (0, 100),
    "frame_count": (2, 16),
    "frame_duration_ms": (10, 655_350),
}
_OPTION_HELP = {
    "model": "Used when the client names none; empty: the provider's default.",
    "n": "1 to 10.",
    "size": "WIDTHxHEIGHT or auto.",
    "output_compression": "0 to 100, for jpeg and webp images.",
}
_CHOICE_LABELS = {
    "url": "a link to the image, on this gateway",
    "b64_json": "the image inside the answer (base64)",
    "high": "high",
    "low": "low",
}
_CONNECTION_LABELS = {
    "resource_name": ("Resource name", "The Azure OpenAI resource: https://NAME.openai.azure.com."),
    "deployment_id": ("Deployment", "The deployment of the image model in that resource."),
    "api_version": ("API version", "e.g. 2025-04-01-preview; editing needs this one or later."),
}


def option_field_name(group: str, key: str) -> str:
    return f"{group}_{key}"


class _OptionValidator:
    """Checks one option value with the model's own rules, so each error lands on its field."""

    def __init__(self, key: str, allowed: dict[str, type]) -> None:
        self.key = key
        self.allowed = allowed

    def __call__(self, value: Any) -> None:
        validate_options({self.key: value}, self.allowed)


class SuggestionsInput(forms.TextInput):
    """A text box with a list of usual values the browser offers as the operator types."""

    def __init__(self, suggestions: tuple[str, ...] = (), attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.suggestions = suggestions

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        if not self.suggestions:
            return super().render(name, value, attrs, renderer)
        list_id = f"{name}_suggestions"
        box = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join("", '<option value="{}">', ((item,) for item in self.suggestions))
        return format_html('{}<datalist id="{}">{}</datalist>', box, list_id, options)


def _choices(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("", "— provider default —"), *((v, _CHOICE_LABELS.get(v, v)) for v in values)]


def _option_field(group: str, key: str, expected: type) -> forms.Field:
    operation = _GROUP_OPERATION[group]
    validators = [_OptionValidator(key, OPTION_GROUPS[group])]
    label = _OPTION_LABELS.get(key, key.replace("_", " ").capitalize())
    help_text = _OPTION_HELP.get(key, "")
    if expected is bool:
        return forms.BooleanField(
            required=False,
            label=f"{operation.gerund.capitalize()} on",
            help_text=f"Off by default: until it is on, clients asking this image model to {operation.verb} get a 403.",
        )
    if expected is int:
        low, high = _INTEGER_BOUNDS.get(key, (None, None))
        # The bounds go to the browser only; the model's own check words the error once.
        widget = forms.NumberInput(attrs={"min": low, "max": high} if low is not None else {})
        return forms.IntegerField(
            required=False, label=label, help_text=help_text, validators=validators, widget=widget
        )
    if key in vocabulary.CHOICES:
        if key == "quality":
            help_text = "standard and hd work with every model: the gateway translates them."
        return forms.ChoiceField(
            required=False,
            label=label,
            choices=_choices(vocabulary.CHOICES[key]),
            validators=validators,
            help_text=help_text,
        )
    return forms.CharField(required=False, label=label, help_text=help_text, validators=validators)


def _option_fields() -> dict[str, forms.Field]:
    return {
        option_field_name(group, key): _option_field(group, key, expected)
        for group, allowed in OPTION_GROUPS.items()
        for key, expected in allowed.items()
    }


def _connection_fields() -> dict[str, forms.Field]:
    fields: dict[str, forms.Field] = {}
    for key in CONNECTION_KEYS:
        label, help_text = _CONNECTION_LABELS.get(key, (key.replace("_", " ").capitalize(), ""))
        fields[key] = forms.CharField(required=False, label=label, help_text=help_text)
    return fields


@dataclass(frozen=True)
class Section:
    """One fieldset of the image-model form, in an operator's words."""

    title: str | None
    fields: tuple[str, ...]
    description: str = ""
    collapsed: bool = False


def image_model_sections(provider_key: str | None, connection_extra: dict[str, Any]) -> list[Section]:
    """What the image-model form shows for this provider; without one, only the first choices."""
    sections = [Section(None, ("id", "name", "description", "provider"))]
    provider = PROVIDERS.get(provider_key or "")
    if provider is None:
        return sections
    if provider.needs_network:
        fields = ("base_url", "new_token", "clear_token", "timeout_ms", *provider.extra_connection_keys)
        sections.append(Section("Connection", fields))
        sections.append(
            Section(
                "Image downloads",
                ("image_hosts", "allow_private_network"),
                "Where the gateway may download image URLs this provider answers, to return them "
                "as b64_json: its own host, and these.",
                collapsed=True,
            )
        )
    else:
        sections.append(
            Section("Connection", (), "Built into the gateway: no address, no token and no network needed.")
        )
    for group, allowed in OPTION_GROUPS.items():
        operation = _GROUP_OPERATION[group]
        title = operation.gerund.capitalize()
        if not provider.can(operation, connection_extra):
            reason = provider.cannot_reason(operation, connection_extra)
            sections.append(Section(title, (), f"{reason[0].upper()}{reason[1:]}, so {operation.gerund} stays off."))
            continue
        main = tuple(option_field_name(group, key) for key in _MAIN_OPTIONS if key in allowed)
        more = tuple(option_field_name(group, key) for key in allowed if key not in _MAIN_OPTIONS)
        sections.append(Section(title, main))
        sections.append(Section(f"More {operation.gerund} defaults", more, collapsed=True))
    sections.append(
        Section(
            "Models clients may ask for",
            ("models_include", "models_exclude"),
            "Regular expressions over the model name, one per line, matched whole.",
        )
    )
    sections.append(Section("Labels", ("tags", "metadata"), collapsed=True))
    return sections


class LinesField(forms.Field):
    """A list of strings edited as one entry per line."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]


# Declared as a class so the admin's fieldsets can name these fields; ModelForm comes first in
# the subclass's bases, as Django asks when mixing the two.
if TYPE_CHECKING:
    _OptionFieldsForm = forms.Form
else:
    _OptionFieldsForm = type("_OptionFieldsForm", (forms.Form,), {**_option_fields(), **_connection_fields()})


class ImageModelForm(forms.ModelForm, _OptionFieldsForm):
    """Edits an image model without ever rendering its token, and composes the option dicts.

    `provider_key` (set by the admin from the request) decides which fields exist; without it the
    form takes the provider from its data or its instance.
    """

    provider_key: str | None = None

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
        required=False, max_length=500, assume_scheme="https", label="Base URL", help_text="Empty: the provider's."
    )
    clear_token = forms.BooleanField(required=False, label="Remove the stored token")
    # Optional: a form saved before the provider's fields were shown gets the default.
    timeout_ms = forms.IntegerField(
        required=False,
        min_value=1,
        label="Timeout (ms)",
        help_text=f"How long one call to the provider may take; empty: {DEFAULT_TIMEOUT_MS}.",
    )
    models_include = LinesField(required=False, label="Allowed", help_text="Empty: any model.")
    models_exclude = LinesField(required=False, label="Refused", help_text="Wins over Allowed.")
    tags = LinesField(required=False, help_text="One per line.")
    image_hosts = LinesField(
        required=False,
        label="Image hosts",
        help_text="One host per line, besides the provider's own; *.example.com covers its subdomains.",
    )

    class Meta:
        model = ImageModel
        fields = [
            "id",
            "name",
            "description",
            "provider",
            "base_url",
            "timeout_ms",
            "image_hosts",
            "allow_private_network",
            "tags",
            "metadata",
            "models_include",
            "models_exclude",
        ]
        labels = {"id": "Id", "allow_private_network": "Allow the private network"}
        help_texts = {"id": "The stable key in exports and imports; it cannot change later."}
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    # JSON fields whose empty input means their default rather than JSON null.
    _json_defaults: dict[str, Any] = {"metadata": {}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance: ImageModel = self.instance
        self.provider = self._chosen_provider()
        if self.provider and not self.is_bound:
            self.initial["provider"] = self.provider
        # Azure's editing depends on its api_version: judged on what is stored, for this provider.
        stored_extra = instance.connection_extra if isinstance(instance.connection_extra, dict) else {}
        self.connection_extra = stored_extra if self.provider == instance.provider else {}
        self.sections = image_model_sections(self.provider, self.connection_extra)
        shown = {name for section in self.sections for name in section.fields}
        for name in list(self.fields):
            if name not in shown:
                del self.fields[name]
        self._fill_initial(instance, stored_extra)

    def _chosen_provider(self) -> str | None:
        candidates = [self.provider_key, self.data.get("provider") if self.is_bound else None]
        candidates += [self.initial.get("provider"), self.instance.provider]
        return next((c for c in candidates if c in PROVIDERS), None)

    def _fill_initial(self, instance: ImageModel, stored_extra: dict[str, Any]) -> None:
        for group in OPTION_GROUPS:
            stored = getattr(instance, group) or {}
            for key, value in stored.items():
                name = option_field_name(group, key)
                field = self.fields.get(name)
                if field is None:
                    continue
                self.initial.setdefault(name, value)
                if isinstance(field, forms.ChoiceField):
                    choices = list(field.choices)  # type: ignore[arg-type]
                    if value not in {choice for choice, _ in choices}:
                        field.choices = [*choices, (value, f"{value} (stored)")]  # imported, kept selectable
        for group in OPTION_GROUPS:
            for key, suggestions in (("model", MODEL_SUGGESTIONS), ("size", SIZE_SUGGESTIONS)):
                field = self.fields.get(option_field_name(group, key))
                if field is not None:
                    field.widget = SuggestionsInput(suggestions.get(self.provider or "", ()))
        for key in CONNECTION_KEYS:
            if key in self.fields:
                self.initial.setdefault(key, stored_extra.get(key, ""))
        if "new_token" not in self.fields:
            return
        if instance.token:
            self.fields["new_token"].help_text = format_html(
                "Stored: <strong>{}</strong>. Leave empty to keep it; a literal key "
                "(encrypted at rest) or ${{env.NAME}}, read at call time.",
                instance.masked_token(),
            )
        else:
            self.fields["clear_token"].disabled = True
            self.fields["new_token"].help_text = "No token stored. " + str(self.fields["new_token"].help_text)

    def clean_timeout_ms(self) -> int:
        timeout: int | None = self.cleaned_data.get("timeout_ms")
        return DEFAULT_TIMEOUT_MS if timeout is None else timeout

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
            if option_field_name(group, "enabled") not in self.fields:
                # Hidden because the provider cannot do it: the stored defaults stay, switched off.
                stored = getattr(instance, group) or {}
                if stored.get("enabled"):
                    setattr(instance, group, {**stored, "enabled": False})
                continue
            options: dict[str, Any] = {}
            for key in allowed:
                value = cleaned.get(option_field_name(group, key))
                if key == "enabled":
                    options[key] = bool(value)
                elif value not in (None, ""):
                    options[key] = value
            setattr(instance, group, options)
        provider = PROVIDERS.get(self.provider or "")
        if provider is not None and not provider.needs_network:
            # Built in: keeps no address, token or provider keys from a provider it was before.
            instance.base_url, instance.token, instance.connection_extra = "", "", {}
            return cleaned
        keys = provider.extra_connection_keys if provider else ()
        instance.connection_extra = {k: cleaned[k] for k in keys if cleaned.get(k)}
        if cleaned.get("new_token"):
            instance.set_token(cleaned["new_token"])
        elif cleaned.get("clear_token"):
            instance.set_token("")
        return cleaned

    def add_error(self, field: str | None, error: Any) -> None:
        # The model names its JSON columns; show those errors next to the fields that fed them.
        targets = {
            "edition": option_field_name("edition", "enabled"),
            "generation": option_field_name("generation", "enabled"),
            "connection_extra": NON_FIELD_ERRORS,
            "token": "new_token",
        }
        moved = _moved_errors(field, _option_errors_on_their_fields(error), targets)
        if isinstance(moved, ValidationError) and hasattr(moved, "error_dict"):
            # An error on a field this provider's form does not show goes on top, not lost.
            fields = {name for name in moved.error_dict if name in self.fields or name == NON_FIELD_ERRORS}
            if fields != set(moved.error_dict):
                hidden = {name: errors for name, errors in moved.error_dict.items() if name not in fields}
                kept = {name: errors for name, errors in moved.error_dict.items() if name in fields}
                kept.setdefault(NON_FIELD_ERRORS, []).extend(e for errors in hidden.values() for e in errors)
                moved = ValidationError(kept)
        super().add_error(field, moved)


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


class PluginStateSelect(forms.NullBooleanSelect):
    """Null means the plugin is absent from the route, which differs from present but off."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.choices = [("unknown", "not on this route"), ("true", "on"), ("false", "off (answers 404)")]


MEGABYTE = 2**20


def megabytes(size: int) -> str:
    """Bytes as MB for a person: whole when exact, else up to three decimals."""
    text = f"{Decimal(size) / MEGABYTE:.3f}".rstrip("0").rstrip(".")
    return text or "0"


class MegabytesField(forms.Field):
    """A byte count the operator reads and types in MB (1 MB = 1,048,576 bytes)."""

    widget = forms.TextInput(attrs={"inputmode": "decimal", "size": 10})

    def prepare_value(self, value: Any) -> Any:
        return megabytes(value) if isinstance(value, int) else value

    def to_python(self, value: Any) -> int | None:
        if value in (None, ""):
            return None
        if isinstance(value, int):
            return value
        try:
            amount = Decimal(str(value).strip().replace(",", "."))
        except InvalidOperation:
            raise ValidationError("Enter a number of megabytes, e.g. 100 or 0.5.") from None
        if not amount.is_finite() or amount <= 0:
            raise ValidationError("Enter a number of megabytes above 0.")
        if amount > 1024 * 1024:
            raise ValidationError("At most 1,048,576 MB (1 TB).")
        return int(amount * MEGABYTE)


class RouteForm(forms.ModelForm):
    domains = LinesField(
        help_text="One per line: 'host' or 'host/prefix'; '*' matches any host.",
    )
    max_size_upload = MegabytesField(
        label="Largest request (MB)",
        help_text="The whole upload, images and fields; larger requests get 413 before any provider call.",
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
        labels = {
            "id": "Id",
            "edit_plugin_enabled": "Edits",
            "edit_fallback": "Fall back",
            "edit_fallback_named": "Fall back for named models too",
            "edit_retries": "Retries per image model",
            "edit_deadline_ms": "Deadline (ms)",
            "generation_plugin_enabled": "Generations",
            "generation_decode": "Answer with the image itself",
            "generation_fallback": "Fall back",
        }
        help_texts = {
            "edit_plugin_enabled": "POST …/v1/images/edits on this route's domains.",
            "generation_plugin_enabled": "POST …/v1/images/generations on this route's domains.",
            "edit_fallback": "On a retryable provider failure, try the next image model.",
            "generation_fallback": "On a retryable provider failure, try the next image model.",
            "generation_decode": "The image bytes instead of JSON, when exactly one image is asked for.",
        }

    def clean_max_size_upload(self) -> int | None:
        size: int | None = self.cleaned_data.get("max_size_upload")
        stored = self.initial.get("max_size_upload")
        # An untouched field keeps the exact byte count, which MB with three decimals may round.
        if isinstance(stored, int) and self.data.get(self.add_prefix("max_size_upload")) == megabytes(stored):
            return stored
        return size


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
        fields = [
            "id", "name", "enabled", "routes", "requests_per_minute", "images_per_day", "budget_usd_per_day",
            "budget_usd_per_month", "expires_at", "models_include", "models_exclude",
        ]  # fmt: skip
        help_texts = {
            "routes": "Routes this key opens. A route named by any key requires a key.",
            "requests_per_minute": "Empty: no limit.",
            "images_per_day": "Counts the n of each request. Empty: no limit.",
            "budget_usd_per_day": "Estimated cost reserved before each call, real cost settled after. Empty: none.",
            "budget_usd_per_month": "Empty: no monthly budget.",
            "expires_at": "After this moment the key is refused like an unknown one. Empty: never.",
            "models_include": 'Regular expressions a model name must match, e.g. ["gpt-image-.*"]. Empty: any.',
            "models_exclude": "Regular expressions of model names this key may not use.",
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
