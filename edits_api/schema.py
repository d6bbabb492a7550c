"""The OpenAPI description of the public image API: the shapes used only for the schema, and
the hooks that keep it to the image endpoints, described without a deployment's route prefix.

Served at /openapi.json (drf-spectacular); the views check input themselves, not through these.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

from entities.catalog import Operation
from entities.vocabulary import CHOICES, MAX_IMAGES, MAX_N, MAX_PROMPT


def _choice(name: str, help_text: str = "") -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=CHOICES[name], required=False, help_text=help_text)


class _ImageOptions(serializers.Serializer):
    """The fields edits and generations share; value sets from entities.vocabulary."""

    prompt = serializers.CharField(
        max_length=MAX_PROMPT,
        help_text="What to do; at most 32000 characters for gpt-image models, 1000 for dall-e-2, 4000 for dall-e-3.",
    )
    model = serializers.CharField(
        required=False,
        help_text="The model name, or `REF###model` / `REF/model` to pick one of the route's image models.",
    )
    n = serializers.IntegerField(required=False, min_value=1, max_value=MAX_N, help_text="How many images.")
    size = serializers.CharField(
        required=False, help_text="`WIDTHxHEIGHT` or `auto`; the accepted sizes depend on the model."
    )
    quality = _choice(
        "quality", "`standard` and `hd` (the seed page's values) are translated into the model's own (hd -> high)."
    )
    background = _choice("background")
    response_format = _choice(
        "response_format", "`url`: a signed, expiring link on the gateway; `b64_json`: the image inline."
    )
    output_format = _choice("output_format", "gif and svg: gpt-image-2.6 models only.")
    output_compression = serializers.IntegerField(
        required=False, min_value=0, max_value=100, help_text="For output_format jpeg or webp only."
    )
    complexity = _choice("complexity")
    frame_count = serializers.IntegerField(required=False, min_value=2, max_value=16, help_text="gif output only.")
    frame_duration_ms = serializers.IntegerField(required=False, min_value=10, help_text="gif output only.")
    safety_identifier = serializers.CharField(required=False, max_length=256, help_text="An end-user id, passed on.")
    user = serializers.CharField(required=False, max_length=256, help_text="Deprecated: safety_identifier.")
    provider = serializers.CharField(required=False, help_text="The id of the route's image model to use.")


class ImageEditSerializer(_ImageOptions):
    """The multipart form of POST /v1/images/edits (component `ImageEditRequest`)."""

    image = serializers.FileField(
        required=False,
        help_text="The image to edit: PNG, JPEG or WebP (checked by content). Send one `image`, "
        f"or up to {MAX_IMAGES} as `image[]` (or a repeated `image`).",
    )
    mask = serializers.FileField(
        required=False,
        help_text="A PNG with an alpha channel, the size of the first image; transparent pixels mark what to edit.",
    )
    input_fidelity = _choice("input_fidelity")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # `image[]` is not a Python name, so it cannot be declared above.
        fields["image[]"] = serializers.ListField(
            child=serializers.FileField(), required=False, max_length=MAX_IMAGES, help_text="Several images."
        )
        return fields


class ImageGenerationSerializer(_ImageOptions):
    """The JSON body of POST /v1/images/generations (component `ImageGenerationRequest`)."""

    moderation = _choice("moderation")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["style"] = _choice("style", "dall-e-3 only.")  # `style` is a Field attribute in DRF
        return fields


class ImageItemSerializer(serializers.Serializer):
    url = serializers.URLField(allow_null=True, help_text="Set when response_format is url.")
    b64_json = serializers.CharField(allow_null=True, help_text="Base64 image bytes (response_format b64_json).")
    revised_prompt = serializers.CharField(allow_null=True, help_text="Only when the provider revised the prompt.")


class TokenDetailsSerializer(serializers.Serializer):
    text_tokens = serializers.IntegerField()
    image_tokens = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    """OpenAI's usage shape, mapped from each provider's own counts."""

    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    input_tokens_details = TokenDetailsSerializer()
    output_tokens_details = TokenDetailsSerializer(required=False)


class ImagesResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="Unix time, in seconds.")
    usage = UsageSerializer(required=False, help_text="Left out when the provider reports no usage.")
    background = serializers.CharField(required=False, help_text="As the provider answered it.")
    output_format = serializers.CharField(required=False, help_text="As the provider answered it.")
    quality = serializers.CharField(required=False, help_text="As the provider answered it.")
    size = serializers.CharField(required=False, help_text="As the provider answered it.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["data"] = ImageItemSerializer(many=True)  # a declared `data` would hide Serializer.data
        return fields


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    """The one error shape: {"error": {"message", "type", "param", "code"}}."""

    error = ErrorDetailSerializer()


def _error(description: str, code: str, type: str = "invalid_request_error") -> OpenApiResponse:
    example = {"error": {"message": description, "type": type, "param": None, "code": code}}
    return OpenApiResponse(
        ErrorSerializer, description=description, examples=[OpenApiExample(code, value=example, response_only=True)]
    )


IMAGES_RESPONSES: dict[int, OpenApiResponse] = {
    200: OpenApiResponse(
        ImagesResponseSerializer,
        description="The images; with the generation plugin's `decode` and one image, the image bytes themselves.",
    ),
    400: _error("Bad input, or the chosen provider cannot do this operation.", "invalid_value"),
    401: _error("The route needs an API key and none or a wrong one came.", "invalid_api_key"),
    403: _error(
        "The operation is off for the chosen image model, or the model is excluded (by the image model or the key).",
        "edition_disabled",
        "permission_error",
    ),
    404: _error("No route for this host and path, or the model names no image model.", "route_not_found"),
    405: _error("Anything but POST.", "method_not_allowed"),
    413: _error("The body is larger than the route's upload limit.", "file_too_large"),
    415: _error("The body is not multipart/form-data (edits) or JSON (generations).", "unsupported_media_type"),
    429: _error(
        "The API key is over its rate limit (rate_limit_exceeded) or its budget (budget_exceeded); see "
        "Retry-After and the x-ratelimit-* headers.",
        "rate_limit_exceeded",
        "rate_limit_error",
    ),
    502: _error("The provider failed or answered something unusable.", "upstream_error", "upstream_error"),
    503: _error("Every provider's circuit is open, or the database is down.", "upstream_unavailable", "upstream_error"),
    504: _error("The provider was slower than the image model's timeout.", "upstream_timeout", "upstream_error"),
}

EDIT_DESCRIPTION = (
    "Edits or extends images, OpenAI-compatible. Each deployment serves it under its routes' "
    "prefixes (`{prefix}/v1/images/edits`); the route is chosen from the Host and the path. "
    "Send `image` or `image[]` (one is required). A route that an API key names needs "
    "`Authorization: Bearer <key>` or `api-key: <key>`. The answer names the route and image model "
    "used in `X-Gateway-Route` and `X-Gateway-Image-Model`."
)


GENERATION_DESCRIPTION = (
    "Generates images from a prompt, OpenAI-compatible, as JSON. Each deployment serves it under its "
    "routes' prefixes (`{prefix}/v1/images/generations`). Without `response_format` the images come "
    "inline as `b64_json` (as OpenAI's gpt-image models answer) unless the image model's defaults say "
    "otherwise. Keys, headers and errors as for edits."
)


def public_image_endpoints(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Preprocessing hook: the image endpoints, each at /v1/images/<endpoint> (no prefix), and the
    admin REST API."""
    kept = []
    for _path, path_regex, method, callback in endpoints:
        operation = getattr(getattr(callback, "cls", None), "operation", None)
        if isinstance(operation, Operation):
            kept.append((f"/v1/images/{operation.endpoint}", path_regex, method, callback))
        elif _path.startswith("/api/v1/"):  # the admin REST API (entities/api), served as is
            kept.append((_path, path_regex, method, callback))
    return kept
