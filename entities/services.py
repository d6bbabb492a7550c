"""Writes to entities that the admin (and any other caller) goes through, so no caller skips a rule.

Every service validates with the model's `full_clean()` before saving and raises
`ValidationError` to refuse; none returns an error.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from entities.catalog import PROVIDERS, Operation, provider_can
from entities.models import ApiKey, ImageModel, Route

API_KEY_PREFIX = "gw-"


@dataclass(frozen=True)
class EditionToggleResult:
    """Which entities a bulk edition toggle changed, and which already had the wanted state."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def image_model_save(*, image_model: ImageModel) -> ImageModel:
    """Validate and save one image model: the model's rules hold whoever saves it."""
    image_model.full_clean()
    image_model.save()
    return image_model


def image_models_set_edition(*, image_models: Iterable[ImageModel], enabled: bool) -> EditionToggleResult:
    """Turn editing on or off for all given image models, or for none of them.

    Turning it on is refused as a whole when any provider in the selection cannot edit, so an
    operator never ends up with half a selection changed.
    """
    ids = sorted({model.pk for model in image_models})
    result = EditionToggleResult()
    with transaction.atomic():
        locked = list(ImageModel.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        if enabled:
            refused = [m for m in locked if not provider_can(m.provider, Operation.EDIT, m.connection_extra)]
            if refused:
                reasons = "; ".join(
                    f"{m.id}: {PROVIDERS[m.provider].cannot_reason(Operation.EDIT, m.connection_extra)}"
                    for m in refused
                )
                raise ValidationError(f"Nothing changed: these image models cannot edit images: {reasons}.")
        for image_model in locked:
            if image_model.edition_enabled == enabled:
                result.unchanged.append(image_model.pk)
                continue
            image_model.edition = {**image_model.edition, "enabled": enabled}
            image_model.full_clean()
            image_model.save(update_fields=["edition", "updated_at"])
            result.changed.append(image_model.pk)
    return result


def route_save(*, route: Route) -> Route:
    """Validate and save one route (its refs are saved by the caller's inline formset)."""
    route.full_clean()
    route.save()
    return route


def api_key_generate_secret() -> str:
    """A fresh client secret: 256 random bits, with a prefix that makes leaked keys easy to spot."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_issue_secret(*, api_key: ApiKey) -> str:
    """Give `api_key` a fresh secret (hash and hint only, not saved) and return it to show once."""
    secret = api_key_generate_secret()
    api_key.set_secret(secret)
    return secret


def api_key_save(*, api_key: ApiKey) -> ApiKey:
    """Validate and save one API key; a key without a secret is refused by the model."""
    api_key.full_clean()
    api_key.save()
    return api_key


def api_keys_regenerate_secrets(*, api_keys: Iterable[ApiKey]) -> dict[str, str]:
    """Replace the secret of every given key at once; returns id -> new secret, to show once.

    The old secrets stop working as soon as this commits.
    """
    ids = sorted({key.pk for key in api_keys})
    issued: dict[str, str] = {}
    with transaction.atomic():
        for api_key in ApiKey.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
            issued[api_key.pk] = api_key_issue_secret(api_key=api_key)
            api_key.full_clean()
            api_key.save(update_fields=["secret_hash", "secret_hint", "updated_at"])
    return issued
