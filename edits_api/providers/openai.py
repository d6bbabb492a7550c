"""The OpenAI images protocol, spoken by OpenAI, Cloud Temple and Azure OpenAI: multipart edits,
JSON generations, an ImagesResponse back.

Fields per model family follow openai-python's `image_edit_params.py` / `image_generate_params.py`:
GPT image models take background, output_format, output_compression, moderation (generations) and
input_fidelity (edits) but refuse response_format and style; DALL·E models take response_format,
style (dall-e-3) and none of the GPT-only fields; dall-e-3 makes one image per call and cannot edit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from edits_api.errors import GatewayError, invalid
from edits_api.providers import http, shape
from edits_api.providers.base import (
    Connection,
    ImageItem,
    ImageRequest,
    ImageResult,
    ProbeTarget,
    ProviderAdapter,
)
from edits_api.providers.formdata import FilePart, FormData
from entities import vocabulary
from entities.catalog import AZURE_EDIT_SINCE, Operation, azure_can_edit

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
# Upstream error codes that mean the provider's safety system refused the request: OpenAI's own,
# DALL·E's legacy one and Azure's content filter (MicrosoftDocs azure-ai-docs, how-to/dall-e.md).
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation", "contentFilter", "content_filter"})
# The option fields of ImageRequest that a model family's rules (entities.vocabulary) judge.
_OPTIONS = (
    "n", "size", "quality", "background", "output_format", "output_compression", "input_fidelity", "style",
    "moderation", "complexity", "frame_count", "frame_duration_ms",
)  # fmt: skip


def _family(connection: Connection, request: ImageRequest) -> vocabulary.Family:
    return vocabulary.family_for(provider=connection.provider, model=request.model)


def _checked(connection: Connection, request: ImageRequest, operation: Operation) -> dict[str, Any]:
    """The request's options under its family's rules, the seed page's quality values translated;
    a value the family refuses is a 400 here, before any call (the service checked them already)."""
    options = {name: getattr(request, name) for name in _OPTIONS}
    if operation is Operation.EDIT:
        del options["style"], options["moderation"]
    else:
        del options["input_fidelity"]
    try:
        return vocabulary.check_options(options, family=_family(connection, request), operation=operation)
    except vocabulary.OptionError as exc:
        raise invalid(exc.message, exc.param, exc.code) from None


class OpenAIAdapter(ProviderAdapter):
    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        _checked(connection, request, Operation.EDIT)

    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        _checked(connection, request, Operation.GENERATION)

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        """POST {base}/images/edits as multipart with a Content-Length, files sent from disk as they are."""
        self.check_edit(connection, request)
        fields = [(name, str(value)) for name, value in self.fields(connection, request, edit=True).items()]
        # Named as openai-python sends them: `image` for one file, `image[]` for each of several.
        image_field = "image" if len(request.images) == 1 else "image[]"
        with contextlib.ExitStack() as files:
            parts = [
                FilePart(image_field, image.filename, files.enter_context(image.open()), image.content_type)
                for image in request.images
            ]
            if request.mask is not None:
                mask = request.mask
                parts.append(FilePart("mask", mask.filename, files.enter_context(mask.open()), mask.content_type))
            body = FormData(fields, parts)
            payload = self.call(
                connection,
                lambda: http.send_json(
                    connection,
                    "POST",
                    self.url(connection, "edits"),
                    headers={**self.auth(connection), "Content-Type": body.content_type},
                    data=body,
                ),
            )
        return _result(connection, payload, request, text_only_input=False)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        """POST {base}/images/generations as JSON."""
        self.check_generate(connection, request)
        payload = self.call(
            connection,
            lambda: http.send_json(
                connection,
                "POST",
                self.url(connection, "generations"),
                headers=self.auth(connection),
                json_body=self.fields(connection, request, edit=False),
            ),
        )
        return _result(connection, payload, request, text_only_input=True)

    def call(self, connection: Connection, send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One upstream call; a safety refusal in any of the protocol's spellings is moderation_blocked."""
        try:
            return send()
        except GatewayError as error:
            if error.status == 400 and error.code in MODERATION_CODES:
                raise GatewayError(
                    400,
                    error.message,
                    type="invalid_request_error",
                    param=error.param,
                    code="moderation_blocked",
                ) from error
            raise

    def url(self, connection: Connection, endpoint: str) -> str:
        return f"{connection.base_url}/images/{endpoint}"

    def auth(self, connection: Connection) -> dict[str, str]:
        return {"Authorization": f"Bearer {connection.token}", "Accept": "application/json"}

    def fields(self, connection: Connection, request: ImageRequest, *, edit: bool) -> dict[str, Any]:
        return _fields(connection, request, edit=edit)

    def probe_target(self, connection: Connection) -> ProbeTarget:
        # GET /models: free, authenticated, documented by OpenAI and Cloud Temple alike.
        return ProbeTarget(f"{connection.base_url}/models", self.auth(connection), "its model list")


# Azure OpenAI api_version values that select the v1 API (no deployment in the URL).
AZURE_V1_VERSIONS = frozenset({"v1", "preview", "latest"})
# The GA data-plane version of "Models - List" (learn.microsoft.com/rest/api/azureopenai/models/list);
# an inference-only api_version need not serve it.
AZURE_MODELS_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: OpenAI's images protocol on a deployment, an `api-key` header and an api-version.

    Dated api_version: `{base}/deployments/{deployment_id}/images/<endpoint>?api-version=...`, the
    deployment names the model. api_version `v1`: `{base}/v1/images/<endpoint>` (no api-version, per
    Azure's v1 API lifecycle page), the deployment goes in `model`; `preview`/`latest` are the v1
    API's own api-version values and are sent as such.
    """

    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        version = connection.extra.get("api_version", "")
        if not azure_can_edit(version):
            # Azure answers 404 to /images/edits before 2025-04-01-preview; say why instead.
            raise GatewayError(
                400,
                f"{connection.provider_name} edits images from api_version {AZURE_EDIT_SINCE} on; "
                f"this image model's api_version {version or '(none)'} cannot edit.",
                param="api_version",
                code="edition_not_supported",
            )
        super().check_edit(connection, request)

    def url(self, connection: Connection, endpoint: str) -> str:
        version = connection.extra.get("api_version", "")
        if version in AZURE_V1_VERSIONS:
            query = "" if version == "v1" else f"?api-version={version}"
            return f"{connection.base_url}/v1/images/{endpoint}{query}"
        deployment = quote(connection.extra.get("deployment_id", ""), safe="")
        return f"{connection.base_url}/deployments/{deployment}/images/{endpoint}?api-version={quote(version, safe='')}"

    def auth(self, connection: Connection) -> dict[str, str]:
        return {"api-key": connection.token, "Accept": "application/json"}

    def fields(self, connection: Connection, request: ImageRequest, *, edit: bool) -> dict[str, Any]:
        fields = _fields(connection, request, edit=edit)
        if connection.extra.get("api_version") in AZURE_V1_VERSIONS:
            fields["model"] = connection.extra.get("deployment_id") or request.model
        else:
            fields.pop("model", None)  # the deployment names the model
        return fields

    def probe_target(self, connection: Connection) -> ProbeTarget:
        version = connection.extra.get("api_version", "")
        if version in AZURE_V1_VERSIONS:
            query = "" if version == "v1" else f"?api-version={version}"
            url = f"{connection.base_url}/v1/models{query}"
        else:
            url = f"{connection.base_url}/models?api-version={AZURE_MODELS_API_VERSION}"
        return ProbeTarget(url, self.auth(connection), "its model list")


def _fields(connection: Connection, request: ImageRequest, *, edit: bool) -> dict[str, Any]:
    """The request's parameters that are set, as this protocol and the model's family name them."""
    family = _family(connection, request)
    quality = family.quality_aliases.get(request.quality or "", request.quality)
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.model or None,
        "n": request.n,
        "size": request.size,
        "quality": quality,
        "safety_identifier": request.safety_identifier,
        "user": request.user,
    }
    if not family.forwards_response_format:  # GPT image models (and models in no table)
        fields.update(
            background=request.background,
            output_format=request.output_format,
            output_compression=request.output_compression,
            complexity=request.complexity,
            frame_count=request.frame_count,  # gif output only
            frame_duration_ms=request.frame_duration_ms,
        )
        if edit:
            fields["input_fidelity"] = request.input_fidelity
        else:
            fields["moderation"] = request.moderation  # the edits endpoint has no moderation
    else:
        # GPT image models answer 400 "Unknown parameter: 'response_format'"; only DALL·E takes it.
        fields["response_format"] = request.response_format
        if not edit:
            fields["style"] = request.style
    return {name: value for name, value in fields.items() if value is not None}


def _result(
    connection: Connection, payload: dict[str, Any], request: ImageRequest, *, text_only_input: bool
) -> ImageResult:
    """An ImagesResponse as an ImageResult; no `data` list, or no image in it, is a bad response."""
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise http.bad_response(connection, "no `data` list of images")
    output_format = payload.get("output_format") or request.output_format or "png"
    content_type = _CONTENT_TYPES.get(str(output_format).lower(), "image/png")
    items = []
    for entry in data:
        if not isinstance(entry, dict):
            raise http.bad_response(connection, "an image entry is not an object")
        url, b64_json = _text(entry.get("url")), _text(entry.get("b64_json"))
        if url is None and b64_json is None:
            raise http.bad_response(connection, "an image entry has neither `url` nor `b64_json`")
        items.append(
            ImageItem(
                url=url,
                b64_json=b64_json,
                revised_prompt=_text(entry.get("revised_prompt")),
                content_type=content_type if b64_json is not None else None,
            )
        )
    created = payload.get("created")
    top = shape.top_level_fields(payload)
    return ImageResult(
        created=created if isinstance(created, int) and not isinstance(created, bool) else int(time.time()),
        items=items,
        usage=shape.normalized_usage(payload.get("usage"), text_only_input=text_only_input),
        background=top.get("background"),
        output_format=top.get("output_format"),
        quality=top.get("quality"),
        size=top.get("size"),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
