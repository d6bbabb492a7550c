"""Writes to entities that the admin and the admin REST API go through, so no caller skips a rule.
The REST API's writes are imports of one entity, so they hold to exactly the importer's rules.

Every service validates with the model's `full_clean()` before saving and raises
`ValidationError` to refuse; none returns an error.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from entities.catalog import PROVIDERS, Operation, provider_can
from entities.interchange import (
    ImportFailed,
    Problem,
    api_key_export,
    entities_import,
    image_model_export,
    route_export,
)
from entities.models import ENTITY_ID, AdminToken, ApiKey, ImageModel, Route, RouteRef, hash_secret

API_KEY_PREFIX = "gw-"
ADMIN_TOKEN_PREFIX = "gwadm-"
# A token's last use is written at most this often: an API client looping over entities costs no write each.
ADMIN_TOKEN_USE_RESOLUTION = timedelta(minutes=1)


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


# --- admin API tokens --------------------------------------------------------------------------


def admin_token_create(*, name: str) -> tuple[AdminToken, str]:
    """A new admin API token named `name`; returns it with the token itself, to show once."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "an admin token needs a name"})
    if AdminToken.objects.filter(name=name, revoked_at__isnull=True).exists():
        raise ValidationError({"name": f"an active admin token is already named {name!r}: revoke it first"})
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    admin_token = AdminToken(name=name, token_hash=hash_secret(token), token_hint="…" + token[-4:])
    admin_token.full_clean()
    admin_token.save()
    return admin_token, token


def admin_token_use(*, presented: str) -> AdminToken | None:
    """The active admin token whose hash matches `presented`, its last use recorded; else None."""
    admin_token = AdminToken.objects.filter(token_hash=hash_secret(presented), revoked_at__isnull=True).first()
    if admin_token is None:
        return None
    now = timezone.now()
    if admin_token.last_used_at is None or now - admin_token.last_used_at >= ADMIN_TOKEN_USE_RESOLUTION:
        AdminToken.objects.filter(pk=admin_token.pk).update(last_used_at=now)
        admin_token.last_used_at = now
    return admin_token


def admin_tokens_revoke(*, admin_tokens: Iterable[AdminToken]) -> int:
    """Revoke the given tokens at once (they get 401 from the next request); returns how many were live."""
    ids = {admin_token.pk for admin_token in admin_tokens}
    return AdminToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- entities as the admin REST API writes them ------------------------------------------------


@dataclass(frozen=True)
class EntityKind:
    """One kind of entity as the JSON form names it, with its model and its export."""

    key: str  # its list in the JSON form: "image_models"
    label: str  # in messages: "image model"
    model: type[ImageModel] | type[Route] | type[ApiKey]
    export: Callable[[Any], dict[str, Any]]

    @property
    def a_label(self) -> str:
        return f"an {self.label}" if self.label[0] in "aeiouAEIOU" else f"a {self.label}"


IMAGE_MODELS = EntityKind(
    "image_models", "image model", ImageModel, lambda model: image_model_export(model, with_secrets=False)
)
ROUTES = EntityKind("routes", "route", Route, route_export)
API_KEYS = EntityKind("api_keys", "API key", ApiKey, api_key_export)


class EntityConflict(Exception):
    """A write that contradicts what is stored: an id already taken, an entity still referenced."""


def entity_create(*, kind: EntityKind, data: Any) -> dict[str, Any]:
    """Create one entity from its JSON form, validated exactly as an import; refused when its id exists,
    also when a concurrent create of the same id commits first."""
    entity_id = data.get("id") if isinstance(data, dict) else None
    taken = EntityConflict(f"There is already {kind.a_label} with id {entity_id!r}; PUT to replace it.")
    try:
        with transaction.atomic():
            # The check is a write, so on SQLite this transaction takes the write lock before it reads
            # anything: a concurrent create of the same id waits for it, then finds its row here.
            if _well_formed(entity_id) and kind.model.objects.filter(pk=entity_id).update(name=F("name")):
                raise taken
            # On PostgreSQL a concurrent create can commit after the check: the importer, which upserts,
            # then finds its row and updates it (undone here), or fails its unique check or INSERT.
            if entities_import(data={kind.key: [data]}).created != 1:
                raise taken
            return _entity_read(kind, entity_id)
    except ImportFailed:
        # A refusal by the id's unique check or index means another create of it committed first.
        if _well_formed(entity_id) and kind.model.objects.filter(pk=entity_id).exists():
            raise taken from None
        raise


def entity_replace(*, kind: EntityKind, entity_id: str, data: Any) -> tuple[dict[str, Any], bool]:
    """Replace (or create) the entity `entity_id` with `data`, as an import of that one entity would.

    A token or secret left out keeps the stored one, as on import. Returns the entity as stored
    and whether it was created. A create that a concurrent create of the same id beats becomes a
    replace of the winner's entity, as the same PUT sent a moment later would be.
    """
    if isinstance(data, dict) and "id" in data and data["id"] != entity_id:
        message = f"is {data['id']!r} but the URL names {entity_id!r}; an id cannot be changed"
        raise ImportFailed([Problem(kind.label, "id", message)])
    body = {**data, "id": entity_id} if isinstance(data, dict) else data
    # A malformed id is not looked up (the importer refuses it by name) and cannot race.
    well_formed = _well_formed(entity_id)
    for _ in range(_REPLACE_ATTEMPTS):
        existed = False
        try:
            with transaction.atomic():
                # The check is a write: it locks the entity, so two replaces of it apply one after the
                # other; on SQLite it takes the write lock before anything is read, so two creates of
                # one id queue up instead of one failing with "database is locked".
                existed = well_formed and kind.model.objects.filter(pk=entity_id).update(name=F("name")) > 0
                imported = entities_import(data={kind.key: [body]})
                if existed or imported.created == 1 or not well_formed:
                    return _entity_read(kind, entity_id), not existed
                # On PostgreSQL a concurrent create committed after the check and the importer, which
                # upserts, updated its row unlocked: undone, and done again as a replace.
                raise _CreateRaced
        except _CreateRaced:
            continue
        except ImportFailed:
            # Refused by the id's unique check or index: another create of it committed first.
            if existed or not (well_formed and kind.model.objects.filter(pk=entity_id).exists()):
                raise
    # Only a concurrent delete between attempts gets here, each time: a conflict with concurrent writes.
    message = "it was created and deleted by concurrent writes meanwhile; nothing was written, PUT again"
    raise ImportFailed([Problem(kind.label, "", message)], cause="conflict")


# A replace retried this often at most: the second attempt finds the entity a concurrent create made,
# so only a delete between the two can make a third one needed.
_REPLACE_ATTEMPTS = 3


class _CreateRaced(Exception):
    """A replace's create found the entity a concurrent create committed meanwhile."""


def entity_delete(*, kind: EntityKind, entity_id: str) -> None:
    """Delete one entity; an image model still in a route's refs is refused, naming the routes.

    Raises the model's DoesNotExist when there is none. A deleted route is removed from the keys
    that named it.
    """
    with transaction.atomic():
        if not _well_formed(entity_id):
            raise kind.model.DoesNotExist(entity_id)
        instance = kind.model.objects.select_for_update().get(pk=entity_id)
        if isinstance(instance, ImageModel):
            routes = sorted(set(RouteRef.objects.filter(image_model=instance).values_list("route_id", flat=True)))
            if routes:
                raise EntityConflict(
                    f"Image model {entity_id!r} is still a ref of route(s) {', '.join(routes)}; "
                    "remove it from their plugins first."
                )
        instance.delete()


def entity_get(*, kind: EntityKind, entity_id: str) -> dict[str, Any]:
    """One entity in its JSON form, without secrets; raises the model's DoesNotExist."""
    return _entity_read(kind, entity_id)


def entity_list(*, kind: EntityKind) -> list[dict[str, Any]]:
    """Every entity of `kind` in its JSON form, by id, without secrets."""
    return [kind.export(instance) for instance in _queryset(kind).order_by("id")]


def _entity_read(kind: EntityKind, entity_id: Any) -> dict[str, Any]:
    if not _well_formed(entity_id):
        raise kind.model.DoesNotExist(entity_id)
    return kind.export(_queryset(kind).get(pk=entity_id))


def _well_formed(entity_id: Any) -> bool:
    """Whether `entity_id` could be stored at all; any other (a NUL byte, say) is never sent to the database."""
    if not isinstance(entity_id, str):
        return False
    try:
        ENTITY_ID(entity_id)
    except ValidationError:
        return False
    return True


def _queryset(kind: EntityKind) -> Any:
    related = {"routes": "refs", "api_keys": "routes"}.get(kind.key)
    queryset = kind.model.objects.all()
    return queryset.prefetch_related(related) if related else queryset
