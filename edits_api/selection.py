"""Which image model (entity) serves a request, among a route plugin's ordered refs.

Shared by edits and generations; the rules are the contract's 3.2.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from edits_api.errors import GatewayError
from entities.catalog import PROVIDERS, Operation
from entities.models import ImageModel


@dataclass(frozen=True)
class Candidate:
    image_model: ImageModel
    model: str  # the model name sent to this provider


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]  # the chosen one first, then the fallbacks in ref order
    explicit: bool  # the client named the ref (X###m, X/m or provider)


def slug_name(image_model: ImageModel) -> str:
    """Otoroshi's slug: endpoint_name, provider_name or name; accents stripped; separators -> '_'."""
    meta = image_model.metadata or {}
    name = meta.get("endpoint_name") or meta.get("provider_name") or image_model.name
    ascii_name = unicodedata.normalize("NFD", name).encode("ascii", "ignore").decode()
    dashed = re.sub(r"[\s\-._~!$'()*,;&=@:/]", "-", ascii_name.lower())
    return re.sub(r"-+", "_", dashed)


def _find_ref(refs: list[ImageModel], name: str) -> ImageModel | None:
    for ref in refs:
        if ref.id == name:
            return ref
    for ref in refs:
        if slug_name(ref) == name:
            return ref
    return None


def refusal(image_model: ImageModel, operation: Operation) -> GatewayError | None:
    """Why this entity cannot serve the operation, or None when it can."""
    provider = PROVIDERS[image_model.provider]
    if not provider.can(operation, image_model.connection_extra):
        return GatewayError(
            400,
            f"Image model '{image_model.id}': {provider.cannot_reason(operation, image_model.connection_extra)}.",
            param="model",
            code=f"{operation.options_key}_not_supported",
        )
    if not image_model.options(operation).get("enabled", False):
        return GatewayError(
            403,
            f"Image model '{image_model.id}' has {operation.gerund} turned off.",
            type="permission_error",
            param="model",
            code=f"{operation.options_key}_disabled",
        )
    return None


def model_name(image_model: ImageModel, operation: Operation, requested: str | None) -> str:
    return requested or image_model.options(operation).get("model") or PROVIDERS[image_model.provider].default_model


def check_model_allowed(image_model: ImageModel, model: str) -> None:
    include, exclude = image_model.models_include, image_model.models_exclude
    allowed = (not include or any(re.fullmatch(p, model) for p in include)) and not any(
        re.fullmatch(p, model) for p in exclude
    )
    if not allowed:
        raise GatewayError(
            403,
            f"Model '{model}' is not allowed on image model '{image_model.id}'.",
            type="permission_error",
            param="model",
            code="model_not_allowed",
        )


def select_image_models(
    *, refs: list[ImageModel], operation: Operation, model: str | None, provider: str | None
) -> Selection:
    """The entity to call first and the ones to fall back on, or the error the client gets."""
    if not refs:
        raise GatewayError(404, "This route has no image models configured.", code="route_not_found")
    chosen: ImageModel | None = None
    requested_model = model or None
    if model and "###" in model:
        prefix, _, rest = model.partition("###")
        chosen = _find_ref(refs, prefix)
        if chosen is None:
            raise GatewayError(404, f"No image model '{prefix}' on this route.", param="model", code="model_not_found")
        requested_model = rest or None
    elif model and "/" in model:
        prefix, _, rest = model.partition("/")
        chosen = _find_ref(refs, prefix)
        if chosen is not None:
            requested_model = rest or None
    if chosen is None and provider:
        chosen = next((ref for ref in refs if ref.id == provider), None)
        if chosen is None:
            raise GatewayError(
                400, f"No image model '{provider}' on this route.", param="provider", code="invalid_value"
            )

    if chosen is not None:
        error = refusal(chosen, operation)
        if error:
            raise error
        first = Candidate(chosen, model_name(chosen, operation, requested_model))
        check_model_allowed(chosen, first.model)
        others = [ref for ref in refs if ref is not chosen and refusal(ref, operation) is None]
        return Selection([first, *(Candidate(r, model_name(r, operation, None)) for r in others)], True)

    usable = [ref for ref in refs if refusal(ref, operation) is None]
    if not usable:
        error = refusal(refs[0], operation)
        assert error is not None
        raise error
    # A plain model name is the client's choice for the first ref; fallbacks use their own defaults.
    first = Candidate(usable[0], model_name(usable[0], operation, requested_model))
    check_model_allowed(usable[0], first.model)
    fallbacks = [Candidate(r, model_name(r, operation, None)) for r in usable[1:]]
    return Selection([first, *fallbacks], False)
