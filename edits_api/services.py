"""The edit (and generation) use case: choose the entity, check the input, call the provider."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.files.uploadedfile import UploadedFile

from edits_api import resilience, validation
from edits_api.errors import GatewayError, invalid
from edits_api.providers import adapter_for
from edits_api.providers.base import Connection, ImageRequest, ImageResult
from edits_api.resilience import Outcome, RetryPolicy
from edits_api.selection import Candidate, select_image_models
from edits_api.validation import EDIT_FIELDS, family_for
from entities.catalog import PROVIDERS, Operation
from entities.crypto import UNDECRYPTABLE
from entities.models import ImageModel, resolve_secret

logger = logging.getLogger(__name__)

_IMAGE_KEYS = ("image", "image[]")
_OPTION_KEYS = (
    "model", "n", "size", "quality", "background", "response_format", "output_format",
    "output_compression", "input_fidelity", "style", "moderation",
)  # fmt: skip


def connection_for(image_model: ImageModel) -> Connection:
    if image_model.token == UNDECRYPTABLE:
        raise GatewayError(
            502,
            f"Image model '{image_model.id}' has a stored token the gateway cannot decrypt; "
            "an operator must set it again.",
            type="server_error",
            code="upstream_misconfigured",
        )
    return Connection(
        provider=image_model.provider,
        provider_name=PROVIDERS[image_model.provider].name,
        base_url=image_model.effective_base_url,
        token=resolve_secret(image_model.token),
        timeout_s=image_model.timeout_ms / 1000,
        extra={k: str(v) for k, v in image_model.connection_extra.items()},
    )


def single_fields(raw: dict[str, list[str]], allowed: frozenset[str]) -> dict[str, str]:
    """One value per known field; unknown or repeated fields are refused."""
    fields = {}
    for key, values in raw.items():
        if key not in allowed:
            if key in ("image", "image[]", "mask"):
                raise invalid(f"'{key}' must be a file part, not a text field.", key, "invalid_type")
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
        if len(values) != 1:
            raise invalid(f"'{key}' was sent {len(values)} times; send it once.", key)
        fields[key] = values[0]
    return fields


def _edit_files(files: dict[str, list[UploadedFile]]) -> tuple[list[UploadedFile], UploadedFile | None]:
    images: list[UploadedFile] = []
    mask: UploadedFile | None = None
    for key, uploads in files.items():
        if key in _IMAGE_KEYS or (key.startswith("image[") and key[6:-1].isdigit() and key.endswith("]")):
            images.extend(uploads)
        elif key in ("mask", "mask[]"):
            if len(uploads) != 1 or mask is not None:
                raise invalid("Send at most one 'mask'.", "mask")
            mask = uploads[0]
        else:
            raise invalid(f"Unknown file parameter: '{key}'.", key, "unknown_parameter")
    if len(images) > validation.MAX_IMAGES:
        raise invalid(f"At most {validation.MAX_IMAGES} images; got {len(images)}.", "image")
    return images, mask


def _merged(image_model: ImageModel, operation: str, fields: dict[str, Any], model: str) -> dict[str, Any]:
    """The entity's defaults, overridden by whatever the client sent."""
    defaults = {k: v for k, v in getattr(image_model, operation).items() if k in _OPTION_KEYS}
    merged: dict[str, Any] = {**defaults, **{k: v for k, v in fields.items() if v not in (None, "")}}
    merged["model"] = model
    return merged


def _prepare_edit(
    candidate: Candidate, fields: dict[str, str], images: list[UploadedFile], mask: UploadedFile | None
) -> tuple[ImageRequest, str | None]:
    image_model = candidate.image_model
    merged = _merged(image_model, "edition", fields, candidate.model)
    family = family_for(provider=image_model.provider, model=candidate.model, operation="edition")
    prompt, n, compression = validation.check_fields(merged, family=family, operation="edition")
    checked = [validation.inspect_image(upload, "image") for upload in images]
    checked_mask = validation.inspect_image(mask, "mask") if mask is not None else None
    validation.check_images(checked, checked_mask, family)
    if checked_mask is not None and image_model.provider == "gemini":
        raise invalid("Gemini has no mask input; send the edit without 'mask' or use another image model.", "mask")
    request = ImageRequest(
        prompt=prompt,
        model=candidate.model,
        images=checked,
        mask=checked_mask,
        n=n,
        size=merged.get("size"),
        quality=merged.get("quality"),
        background=merged.get("background"),
        response_format=merged.get("response_format"),
        output_format=merged.get("output_format"),
        output_compression=compression,
        input_fidelity=merged.get("input_fidelity"),
        user=merged.get("user"),
    )
    return request, merged.get("response_format")


def image_edit(
    *,
    refs: list[ImageModel],
    fields: dict[str, list[str]],
    files: dict[str, list[UploadedFile]],
    fallback: bool,
    fallback_named: bool,
    policy: RetryPolicy,
    outcome: Outcome,
) -> tuple[ImageResult, Connection, str | None]:
    """Runs one edit; returns the provider's result, the connection used and the wanted format."""
    single = single_fields(fields, EDIT_FIELDS)
    images, mask = _edit_files(files)
    selection = select_image_models(
        refs=refs, operation=Operation.EDIT, model=single.get("model"), provider=single.pop("provider", None)
    )
    single.pop("model", None)
    # Check the first candidate before any call, so bad input never reaches a provider.
    first_request = _prepare_edit(selection.candidates[0], single, images, mask)
    prepared = {selection.candidates[0].image_model.id: first_request}

    def prepare(candidate: Candidate) -> tuple[ImageRequest, str | None]:
        found = prepared.get(candidate.image_model.id)
        return found if found else _prepare_edit(candidate, single, images, mask)

    started = time.monotonic()
    result = resilience.call_candidates(
        selection.candidates,
        fallback=fallback and (fallback_named or not selection.explicit),
        policy=policy,
        outcome=outcome,
        prepare=prepare,
        connect=connection_for,
        call=lambda connection, request: adapter_for(connection.provider).edit(connection, request),
    )
    logger.info(
        "edit served by %s in %.0f ms after %d attempt(s)",
        outcome.image_model.id if outcome.image_model else "-",
        (time.monotonic() - started) * 1000,
        outcome.attempts,
    )
    return result
