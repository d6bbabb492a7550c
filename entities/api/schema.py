"""The admin REST API's OpenAPI description: the entity JSON forms (contract section 1) as schema
components, and the admin token as the operations' only security.

Documentation only: requests are checked by the importer, not by these serializers.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from entities.catalog import PROVIDERS
from entities.interchange import EDIT_PLUGIN, GENERATION_PLUGIN
from entities.models import EDITION_OPTIONS, GENERATION_OPTIONS

TAG = "Admin API"
# Only the admin token (its scheme is in SPECTACULAR_SETTINGS): the settings' global security, client
# keys or none on an open route, is the image API's. (Typed Any: the stubs say Sequence[str], but
# extend_schema(auth=...) takes security requirement objects.)
AUTH: Any = [{"adminToken": []}]


_OPTION_FIELDS: dict[type, type[serializers.Field]] = {
    bool: serializers.BooleanField,
    int: serializers.IntegerField,
    str: serializers.CharField,
}


def _options_serializer(name: str, keys: dict[str, type], what: str) -> type[serializers.Serializer]:
    # Built from the model's own table of option keys, so the description cannot miss one.
    fields = {key: _OPTION_FIELDS[kind](required=False) for key, kind in keys.items()}
    fields["enabled"] = serializers.BooleanField(required=False, help_text=f"{what} on (default false).")
    return type(name, (serializers.Serializer,), fields)


EditionOptionsSerializer = _options_serializer("EditionOptionsSerializer", EDITION_OPTIONS, "Editing")
GenerationOptionsSerializer = _options_serializer("GenerationOptionsSerializer", GENERATION_OPTIONS, "Generation")


class ConnectionSerializer(serializers.Serializer):
    base_url = serializers.URLField(required=False, help_text="Empty or absent: the provider's default.")
    token = serializers.CharField(
        required=False,
        write_only=True,
        help_text="A literal key (encrypted at rest) or `${env.NAME}`, read at call time. Write-only: "
        "answers never carry a literal token; a replace without it keeps the stored one.",
    )
    timeout = serializers.IntegerField(required=False, help_text="Milliseconds (default 180000).")
    resource_name = serializers.CharField(required=False, help_text="Azure OpenAI only.")
    deployment_id = serializers.CharField(required=False, help_text="Azure OpenAI only.")
    api_version = serializers.CharField(required=False, help_text="Azure OpenAI only.")


class OptionsSerializer(serializers.Serializer):
    generation = GenerationOptionsSerializer(required=False)
    edition = EditionOptionsSerializer(required=False)


class ImageModelConfigSerializer(serializers.Serializer):
    connection = ConnectionSerializer(required=False)
    options = OptionsSerializer(required=False)


class ModelSelectionSerializer(serializers.Serializer):
    include = serializers.ListField(child=serializers.CharField(), required=False, help_text="Regular expressions.")
    exclude = serializers.ListField(child=serializers.CharField(), required=False, help_text="Regular expressions.")


_ID_HELP = "The operator's stable id: letters, digits and _ . : - only."


class ImageModelSerializer(serializers.Serializer):
    """A provider connection and its defaults (component `ImageModel`)."""

    id = serializers.CharField(help_text=_ID_HELP)
    name = serializers.CharField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    metadata = serializers.DictField(child=serializers.CharField(), required=False)
    provider = serializers.ChoiceField(choices=sorted(PROVIDERS))
    config = ImageModelConfigSerializer(required=False)
    models = ModelSelectionSerializer(required=False)


class FrontendSerializer(serializers.Serializer):
    domains = serializers.ListField(
        child=serializers.CharField(), help_text="`host` or `host/prefix`; `*` matches any host."
    )


class PluginSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False, default=True)
    plugin = serializers.ChoiceField(choices=[EDIT_PLUGIN, GENERATION_PLUGIN])
    config = serializers.DictField(
        required=False,
        help_text="`refs` (image model ids, tried in order); the edit plugin also takes `max_size_upload` "
        "(bytes), `fallback`, `fallback_named`, `retries`, `deadline` (ms); the generation plugin "
        "`decode` and `fallback`.",
    )


class RouteSerializer(serializers.Serializer):
    """Hosts and path prefixes, and the plugins that serve them (component `Route`)."""

    id = serializers.CharField(help_text=_ID_HELP)
    name = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False, default=True)
    frontend = FrontendSerializer()
    plugins = PluginSerializer(many=True, required=False)


class RateLimitSerializer(serializers.Serializer):
    requests_per_minute = serializers.IntegerField(required=False, min_value=1)
    images_per_day = serializers.IntegerField(required=False, min_value=1)


class BudgetSerializer(serializers.Serializer):
    usd_per_day = serializers.DecimalField(required=False, max_digits=12, decimal_places=4, coerce_to_string=False)
    usd_per_month = serializers.DecimalField(required=False, max_digits=12, decimal_places=4, coerce_to_string=False)


class KeyModelsSerializer(serializers.Serializer):
    include = serializers.ListField(child=serializers.CharField(), required=False, help_text="Regexes; empty: any.")
    exclude = serializers.ListField(child=serializers.CharField(), required=False)


class ApiKeySerializer(serializers.Serializer):
    """A client key for the routes it names (component `ApiKey`)."""

    id = serializers.CharField(help_text=_ID_HELP)
    name = serializers.CharField(required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False, default=True)
    secret = serializers.CharField(
        required=False,
        write_only=True,
        min_length=16,
        help_text="Required on create. Stored hashed and never answered; a replace without it keeps the "
        "stored one. `${env.NAME}` is read when the request is handled.",
    )
    routes = serializers.ListField(child=serializers.CharField(), required=False, help_text="Route ids.")
    rate_limit = RateLimitSerializer(required=False)
    budget = BudgetSerializer(required=False, help_text="USD per UTC day and month; over it: 429 budget_exceeded.")
    expires_at = serializers.DateTimeField(required=False, help_text="After it the key is refused like an unknown one.")
    models = KeyModelsSerializer(required=False, help_text="Model names this key may use (403 model_not_allowed).")


def _listing(name: str, key: str, item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    return type(name, (serializers.Serializer,), {key: item(many=True)})


ImageModelListSerializer = _listing("ImageModelListSerializer", "image_models", ImageModelSerializer)
RouteListSerializer = _listing("RouteListSerializer", "routes", RouteSerializer)
ApiKeyListSerializer = _listing("ApiKeyListSerializer", "api_keys", ApiKeySerializer)

# The gateway's one error shape; the component itself is declared with the image API's schema.
_ERROR = {"$ref": "#/components/schemas/Error"}


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(_ERROR, description=description)


ERRORS: dict[int, OpenApiResponse] = {
    401: error("No admin token, or an unknown or revoked one (`invalid_api_key`)."),
    503: error("The database is busy or unavailable; nothing was written (`database_unavailable`, with Retry-After)."),
}
