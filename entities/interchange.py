"""Import and export of entities in their Otoroshi-style JSON form (spec section 1).

The importer only checks the JSON's shape; every rule on an entity is the model's `full_clean()`,
so a file is held to exactly what the admin enforces.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.utils.dateparse import parse_datetime

from entities.crypto import UNDECRYPTABLE
from entities.models import (
    DEFAULT_TIMEOUT_MS,
    ApiKey,
    ImageModel,
    Route,
    RouteRef,
    env_reference,
)
from entities.plugins import (
    CONFIG_COLUMNS,
    EDIT_PLUGIN,
    ENABLED_COLUMN,
    GENERATION_PLUGIN,
    OPERATION_OF_PLUGIN,
    PLUGIN_IDS,
)

__all__ = ["EDIT_PLUGIN", "GENERATION_PLUGIN", "ImportFailed", "entities_export", "entities_import"]

logger = logging.getLogger(__name__)


def _column_type(column: str) -> type:
    field = Route._meta.get_field(column)
    return bool if isinstance(field, models.BooleanField) else int


def _column_default(column: str) -> Any:
    field = Route._meta.get_field(column)
    assert isinstance(field, models.Field)
    return field.get_default()


_COLUMN_TYPES = {column: _column_type(column) for columns in CONFIG_COLUMNS.values() for column in columns.values()}

# Config keys each plugin accepts, with their JSON type; `refs` is checked on its own.
_PLUGIN_CONFIG: dict[str, dict[str, type]] = {
    PLUGIN_IDS[operation]: {
        "refs": list,
        **{key: _COLUMN_TYPES[column] for key, column in columns.items()},
    }
    for operation, columns in CONFIG_COLUMNS.items()
}

# Where each model field sits in the JSON, so an error names what the operator wrote.
_IMAGE_MODEL_PATHS = {
    "base_url": "config.connection.base_url",
    "token": "config.connection.token",
    "timeout_ms": "config.connection.timeout",
    "image_hosts": "config.connection.image_hosts",
    "allow_private_network": "config.connection.allow_private_network",
    "connection_extra": "config.connection",
    "generation": "config.options.generation",
    "edition": "config.options.edition",
    "models_include": "models.include",
    "models_exclude": "models.exclude",
}
_API_KEY_PATHS = {
    "secret_hash": "secret",
    "requests_per_minute": "rate_limit.requests_per_minute",
    "images_per_day": "rate_limit.images_per_day",
    "budget_usd_per_day": "budget.usd_per_day",
    "budget_usd_per_month": "budget.usd_per_month",
    "models_include": "models.include",
    "models_exclude": "models.exclude",
}
# Fields that say nothing about the entity itself; an import that changes only these is a no-op.
_BOOKKEEPING = {"created_at", "updated_at"}


@dataclass(frozen=True)
class Problem:
    """One reason an import was refused: the entity, the JSON path inside it ('' for the whole
    entity) and what is wrong, so a caller can point at the field (the REST API's `param`)."""

    where: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}" if self.path else f"{self.where}: {self.message}"


class ImportFailed(Exception):
    """A file was refused; nothing was written. One line per problem, each naming entity and field.

    `cause`: "invalid" (the file's own fault), "conflict" (a concurrent write took an id or a unique
    value, or deleted an entity referred to) or "unavailable" (the database was busy or away)."""

    def __init__(self, problems: list[Problem], *, cause: str = "invalid") -> None:
        self.problems = problems
        self.cause = cause
        self.errors = [str(problem) for problem in problems]
        super().__init__("\n".join(self.errors))


@dataclass
class ImportSummary:
    image_models: int = 0
    routes: int = 0
    api_keys: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def count(self, outcome: Literal["created", "updated", "unchanged"]) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def __str__(self) -> str:
        outcomes = f"{self.created} created, {self.updated} updated"
        if self.unchanged:
            outcomes += f", {self.unchanged} unchanged"
        return (
            f"imported {_plural(self.image_models, 'image model')}, {_plural(self.routes, 'route')}, "
            f"{_plural(self.api_keys, 'API key')} ({outcomes})"
        )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- JSON shape ---------------------------------------------------------------------------------

_JSON_TYPE_NAMES = {
    str: "a string",
    float: "a number",
    int: "a whole number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


class _Problems:
    """Collects the errors of one import, each prefixed with the entity it belongs to."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.cause = "invalid"

    def add(self, where: str, path: str, message: str) -> None:
        self.errors.append(Problem(where, path, message))

    def add_validation(self, where: str, exc: ValidationError, paths: Callable[[str], str]) -> None:
        if not hasattr(exc, "error_dict"):
            self.add(where, "", "; ".join(exc.messages))
            return
        for name, messages in exc.message_dict.items():
            self.add(where, "" if name == NON_FIELD_ERRORS else paths(name), "; ".join(messages))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ImportFailed(self.errors, cause=self.cause)


def _is(value: Any, expected: type) -> bool:
    # JSON true/false are Python ints; a count written `true` is a mistake, not 1.
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:  # any JSON number
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, expected)


def _object(
    problems: _Problems,
    where: str,
    path: str,
    value: Any,
    keys: dict[str, type],
    required: Iterable[str] = (),
    other_keys: type | None = None,
) -> dict[str, Any] | None:
    """`value` when it is an object whose keys are known and of the right JSON types, else None.

    With `other_keys`, keys not in `keys` are let through when their values have that type.
    """
    if not isinstance(value, dict):
        problems.add(where, path, "must be an object")
        return None
    ok = True
    prefix = f"{path}." if path else ""
    for key in required:
        if key not in value:
            problems.add(where, prefix + key, "is required")
            ok = False
    for key, item in value.items():
        expected = keys.get(key, other_keys)
        if expected is None:
            problems.add(where, prefix + key, f"unknown key (known: {', '.join(sorted(keys))})")
            ok = False
        elif not _is(item, expected):
            problems.add(where, prefix + key, f"must be {_JSON_TYPE_NAMES[expected]}")
            ok = False
    return value if ok else None


def _entities(problems: _Problems, data: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """The well-shaped objects of one top-level list, each with the label errors use for it."""
    items = data.get(kind, [])
    if not isinstance(items, list):
        problems.add(kind, "", "must be a list")
        return []
    seen: set[str] = set()
    found = []
    for index, item in enumerate(items):
        where = f"{kind}[{index}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            where += f" ({item['id']})"
            if item["id"] in seen:
                problems.add(where, "id", f"appears more than once in {kind}")
                continue
            seen.add(item["id"])
        found.append((where, item))
    return found


def _paths(mapping: dict[str, str]) -> Callable[[str], str]:
    return lambda name: mapping.get(name, name)


def _valid_id(problems: _Problems, where: str, model: type[models.Model], value: str) -> bool:
    # The id field's own validators, run before the id is used in a query.
    id_field = model._meta.get_field("id")
    assert isinstance(id_field, models.Field)
    try:
        id_field.clean(value, None)
    except ValidationError as exc:
        problems.add(where, "id", "; ".join(exc.messages))
        return False
    return True


def _snapshot(instance: models.Model) -> dict[str, Any]:
    return {
        f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields if f.name not in _BOOKKEEPING
    }


# --- import ---------------------------------------------------------------------------------------

# What a database refusal means to whoever imports; the database's own words go to the log.
_CONFLICT = (
    "it conflicts with an entity written at the same time (its id, or a value that must be unique, is now "
    "taken, or an entity it refers to was deleted); nothing was written"
)
_UNAVAILABLE = "the database could not store it just now (busy or unavailable); nothing was written, try again"

_IMAGE_MODEL_KEYS: dict[str, type] = {
    "id": str,
    "name": str,
    "description": str,
    "tags": list,
    "metadata": dict,
    "provider": str,
    "config": dict,
    "models": dict,
}
_CONNECTION_KEYS: dict[str, type] = {
    "base_url": str,
    "token": str,
    "timeout": int,
    "image_hosts": list,
    "allow_private_network": bool,
}


def _import_image_model(problems: _Problems, where: str, item: Any, summary: ImportSummary) -> None:
    entity = _object(problems, where, "", item, _IMAGE_MODEL_KEYS, required=("id", "provider"))
    if entity is None:
        return
    config = _object(problems, where, "config", entity.get("config", {}), {"connection": dict, "options": dict})
    selection = _object(problems, where, "models", entity.get("models", {}), {"include": list, "exclude": list})
    if config is None or selection is None:
        return
    # Provider extras (Azure's resource_name, ...) pass through; the model refuses those it does not take.
    connection = _object(
        problems, where, "config.connection", config.get("connection", {}), _CONNECTION_KEYS, other_keys=str
    )
    options = _object(
        problems, where, "config.options", config.get("options", {}), {"generation": dict, "edition": dict}
    )
    if connection is None or options is None or not _valid_id(problems, where, ImageModel, entity["id"]):
        return

    instance = ImageModel.objects.filter(pk=entity["id"]).first()
    created = instance is None
    if instance is None:
        instance = ImageModel(id=entity["id"])
    before = _snapshot(instance)
    instance.name = entity.get("name", "")
    instance.description = entity.get("description", "")
    instance.tags = entity.get("tags", [])
    instance.metadata = entity.get("metadata", {})
    instance.provider = entity["provider"]
    instance.base_url = connection.get("base_url", "")
    if "token" in connection:  # absent: the stored token stays (exports leave literal tokens out)
        instance.set_token(connection["token"])
    instance.timeout_ms = connection.get("timeout", DEFAULT_TIMEOUT_MS)
    instance.image_hosts = connection.get("image_hosts", [])
    instance.allow_private_network = connection.get("allow_private_network", False)
    instance.connection_extra = {k: v for k, v in connection.items() if k not in _CONNECTION_KEYS}
    instance.generation = options.get("generation", {})
    instance.edition = options.get("edition", {})
    instance.models_include = selection.get("include", [])
    instance.models_exclude = selection.get("exclude", [])
    try:
        instance.full_clean()
    except ValidationError as exc:
        problems.add_validation(where, exc, _paths(_IMAGE_MODEL_PATHS))
        return
    summary.image_models += 1
    if created or _snapshot(instance) != before:
        instance.save(force_insert=created)
        summary.count("created" if created else "updated")
    else:
        summary.count("unchanged")


_ROUTE_KEYS: dict[str, type] = {"id": str, "name": str, "enabled": bool, "frontend": dict, "plugins": list}
_PLUGIN_KEYS: dict[str, type] = {"enabled": bool, "plugin": str, "config": dict}


def _import_route(problems: _Problems, where: str, item: Any, summary: ImportSummary) -> None:
    entity = _object(problems, where, "", item, _ROUTE_KEYS, required=("id",))
    if entity is None:
        return
    frontend = _object(problems, where, "frontend", entity.get("frontend", {}), {"domains": list})
    if frontend is None or not _valid_id(problems, where, Route, entity["id"]):
        return

    instance = Route.objects.filter(pk=entity["id"]).first()
    created = instance is None
    if instance is None:
        instance = Route(id=entity["id"])
    before = _snapshot(instance)
    refs_before = (
        [] if created else [(r.plugin, r.image_model_id) for r in instance.refs.order_by("plugin", "position")]
    )
    instance.name = entity.get("name", "")
    instance.enabled = entity.get("enabled", True)
    instance.domains = frontend.get("domains", [])
    # A plugin left out of the file is absent from the route: its fields go back to their defaults.
    for operation, columns in CONFIG_COLUMNS.items():
        setattr(instance, ENABLED_COLUMN[operation], None)
        for column in columns.values():
            setattr(instance, column, _column_default(column))

    paths = {"domains": "frontend.domains"}
    refs: list[tuple[str, int, str, str]] = []  # (plugin kind, position, image model id, JSON path)
    shape_ok = True
    seen_plugins: set[str] = set()
    for index, plugin in enumerate(entity.get("plugins", [])):
        at = f"plugins[{index}]"
        block = _object(problems, where, at, plugin, _PLUGIN_KEYS, required=("plugin",))
        if block is None:
            shape_ok = False
            continue
        if block["plugin"] not in _PLUGIN_CONFIG:
            known = ", ".join(sorted(_PLUGIN_CONFIG))
            problems.add(where, f"{at}.plugin", f"unknown plugin {block['plugin']!r} (known: {known})")
            shape_ok = False
            continue
        if block["plugin"] in seen_plugins:
            problems.add(where, f"{at}.plugin", "appears more than once on this route")
            shape_ok = False
            continue
        seen_plugins.add(block["plugin"])
        config = _object(problems, where, f"{at}.config", block.get("config", {}), _PLUGIN_CONFIG[block["plugin"]])
        if config is None:
            shape_ok = False
            continue
        operation = OPERATION_OF_PLUGIN[block["plugin"]]
        kind = operation.value  # RouteRef.EDIT / RouteRef.GENERATION
        for position, ref in enumerate(config.get("refs", [])):
            if not isinstance(ref, str):
                problems.add(where, f"{at}.config.refs[{position}]", "must be an image model id (a string)")
                shape_ok = False
            else:
                refs.append((kind, position, ref, f"{at}.config.refs[{position}]"))
        setattr(instance, ENABLED_COLUMN[operation], block.get("enabled", True))
        for key, column in CONFIG_COLUMNS[operation].items():
            if key in config:
                setattr(instance, column, config[key])
            paths[column] = f"{at}.config.{key}"
    if not shape_ok:
        return
    reported = len(problems.errors)
    try:
        instance.full_clean()
    except ValidationError as exc:
        problems.add_validation(where, exc, _paths(paths))
    # This file's image models are saved by now, so the database answers for both.
    existing = set(ImageModel.objects.filter(pk__in={m for _, _, m, _ in refs}).values_list("pk", flat=True))
    for _, _, model_id, path in refs:
        if model_id not in existing:
            problems.add(where, path, f"no image model {model_id!r} in the database or this file")
    if len(problems.errors) > reported:
        return

    summary.routes += 1
    refs.sort(key=lambda r: (r[0], r[1]))
    changed = created or _snapshot(instance) != before or refs_before != [(k, m) for k, _, m, _ in refs]
    if not changed:
        summary.count("unchanged")
        return
    instance.save(force_insert=created)
    instance.refs.all().delete()
    for kind, position, model_id, path in refs:
        # RouteRef's own validation refuses, say, an image model named twice in one plugin.
        ref = RouteRef(route=instance, plugin=kind, image_model_id=model_id, position=position)
        try:
            ref.full_clean()
        except ValidationError as exc:
            problems.add(where, path, "; ".join(exc.messages))
            continue
        ref.save()
    summary.count("created" if created else "updated")


_API_KEY_KEYS: dict[str, type] = {
    "id": str,
    "name": str,
    "enabled": bool,
    "secret": str,
    "routes": list,
    "rate_limit": dict,
    "budget": dict,
    "expires_at": str,
    "models": dict,
}
_RATE_LIMIT_KEYS: dict[str, type] = {"requests_per_minute": int, "images_per_day": int}
_BUDGET_KEYS: dict[str, type] = {"usd_per_day": float, "usd_per_month": float}
_KEY_MODELS_KEYS: dict[str, type] = {"include": list, "exclude": list}


def _expiry(problems: _Problems, where: str, value: str | None) -> tuple[bool, datetime.datetime | None]:
    """`expires_at` as an aware datetime (UTC when no offset is written); (False, None) when invalid."""
    if value is None:
        return True, None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        problems.add(where, "expires_at", f"{value!r} is not an ISO 8601 date and time (e.g. 2027-01-31T00:00:00Z)")
        return False, None
    return True, parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _import_api_key(problems: _Problems, where: str, item: Any, summary: ImportSummary) -> None:
    entity = _object(problems, where, "", item, _API_KEY_KEYS, required=("id",))
    if entity is None:
        return
    limits = _object(problems, where, "rate_limit", entity.get("rate_limit", {}), _RATE_LIMIT_KEYS)
    budget = _object(problems, where, "budget", entity.get("budget", {}), _BUDGET_KEYS)
    selection = _object(problems, where, "models", entity.get("models", {}), _KEY_MODELS_KEYS)
    expiry_ok, expires_at = _expiry(problems, where, entity.get("expires_at"))
    route_ids = entity.get("routes", [])
    if not all(isinstance(r, str) for r in route_ids):
        problems.add(where, "routes", "must be a list of route ids (strings)")
        return
    if limits is None or budget is None or selection is None or not expiry_ok:
        return
    if not _valid_id(problems, where, ApiKey, entity["id"]):
        return

    instance = ApiKey.objects.filter(pk=entity["id"]).first()
    created = instance is None
    if instance is None:
        instance = ApiKey(id=entity["id"])
    before = _snapshot(instance)
    routes_before = set() if created else {r.id for r in instance.routes.all()}
    instance.name = entity.get("name", "")
    instance.enabled = entity.get("enabled", True)
    instance.requests_per_minute = limits.get("requests_per_minute")
    instance.images_per_day = limits.get("images_per_day")
    # Through str, so 0.1 is 0.1 USD and not the float nearest to it.
    for field, json_key in (("budget_usd_per_day", "usd_per_day"), ("budget_usd_per_month", "usd_per_month")):
        setattr(instance, field, Decimal(str(budget[json_key])) if json_key in budget else None)
    instance.expires_at = expires_at
    instance.models_include = selection.get("include", [])
    instance.models_exclude = selection.get("exclude", [])
    reported = len(problems.errors)
    secret_refused = False
    if "secret" in entity:  # absent: the stored hash stays (exports never carry secrets)
        secret = entity["secret"]
        name = env_reference(secret)
        try:
            if name:
                # Unlike provider tokens, only the hash is kept, so the reference is read now.
                secret = os.environ.get(name, "")
                if not secret:
                    raise ValidationError({"secret": f"${{env.{name}}} is not set in the environment"})
            instance.set_secret(secret)
        except ValidationError as exc:
            problems.add_validation(where, exc, _paths(_API_KEY_PATHS))
            secret_refused = True
    try:
        # Without a hash, clean() says the key needs a secret; the blank hash would say it twice.
        instance.full_clean(exclude=None if instance.secret_hash else ["secret_hash"])
    except ValidationError as exc:
        if secret_refused:  # already said above, in better words
            exc = ValidationError({k: v for k, v in exc.error_dict.items() if k != "secret"})
        problems.add_validation(where, exc, _paths(_API_KEY_PATHS))
    existing_routes = set(Route.objects.filter(pk__in=route_ids).values_list("pk", flat=True))
    missing = [r for r in route_ids if r not in existing_routes]
    if missing:
        problems.add(where, "routes", f"no route {', '.join(map(repr, missing))} in the database or this file")
    if len(problems.errors) > reported:
        return

    summary.api_keys += 1
    if not created and _snapshot(instance) == before and routes_before == set(route_ids):
        summary.count("unchanged")
        return
    instance.save(force_insert=created)
    instance.routes.set(route_ids)
    summary.count("created" if created else "updated")


def _refused_by_database(problems: _Problems, where: str, exc: DatabaseError) -> None:
    # The database's own text names its constraints and quotes stored values (a key's secret hash,
    # say), so it goes to the log; whoever imports learns what it means for them.
    logger.warning("import of %s refused by the database (%s): %s", where, type(exc).__name__, exc)
    problems.cause = "conflict" if isinstance(exc, IntegrityError) else "unavailable"
    problems.add(where, "", _CONFLICT if problems.cause == "conflict" else _UNAVAILABLE)


def entities_import(*, data: dict[str, Any]) -> ImportSummary:
    """Upsert the file's image models, routes and API keys by id: all of them, or nothing.

    An entity absent when read is inserted, never updated (`force_insert`): one a concurrent writer
    committed in between is refused by its id's unique index instead of silently overwritten.
    """
    problems = _Problems()
    document = _object(problems, "file", "", data, {"image_models": list, "routes": list, "api_keys": list})
    problems.raise_if_any()
    assert document is not None
    phases: list[tuple[str, Callable[[_Problems, str, Any, ImportSummary], None]]] = [
        ("image_models", _import_image_model),
        ("routes", _import_route),
        ("api_keys", _import_api_key),
    ]
    batches = [(_entities(problems, document, kind), step) for kind, step in phases]
    problems.raise_if_any()
    summary = ImportSummary()
    try:
        with transaction.atomic():
            # Routes name image models and keys name routes, so each kind is written before the next
            # is checked; after a kind with errors, the next ones would only repeat them as missing refs.
            for entities, step in batches:
                for where, item in entities:
                    try:
                        step(problems, where, item, summary)
                        if connection.vendor == "postgresql":
                            # PostgreSQL checks foreign keys at commit (Django declares them deferred), which may
                            # be a caller's (the admin API's) and names no entity. Checked now, a ref to an entity
                            # deleted meanwhile is refused here, and the entities referred to stay locked until
                            # the commit. (SQLite's writer holds the whole database: nothing is deleted meanwhile.)
                            connection.check_constraints()
                    except DatabaseError as exc:
                        # The transaction cannot go on after a database error (PostgreSQL aborts it).
                        _refused_by_database(problems, where, exc)
                        problems.raise_if_any()
                problems.raise_if_any()
    except DatabaseError as exc:
        # Beginning or committing the transaction failed (SQLite waited for its lock past the busy
        # timeout, or the connection was lost): nothing was written.
        _refused_by_database(problems, "file", exc)
        problems.raise_if_any()
    return summary


# --- export ---------------------------------------------------------------------------------------


def image_model_export(model: ImageModel, *, with_secrets: bool) -> dict[str, Any]:
    """One image model in the JSON form: a literal token only `with_secrets`, `${env.NAME}` always."""
    connection: dict[str, Any] = {}
    if model.base_url:
        connection["base_url"] = model.base_url
    token = model.token_as_written()
    if token and token != UNDECRYPTABLE and (with_secrets or env_reference(token)):
        connection["token"] = token
    connection["timeout"] = model.timeout_ms
    if model.image_hosts:
        connection["image_hosts"] = list(model.image_hosts)
    if model.allow_private_network:
        connection["allow_private_network"] = True
    connection.update(sorted(model.connection_extra.items()))
    return {
        "id": model.id,
        "name": model.name,
        "description": model.description,
        "tags": list(model.tags),
        "metadata": dict(sorted(model.metadata.items())),
        "provider": model.provider,
        "config": {
            "connection": connection,
            "options": {
                "generation": dict(sorted(model.generation.items())),
                "edition": dict(sorted(model.edition.items())),
            },
        },
        "models": {"include": list(model.models_include), "exclude": list(model.models_exclude)},
    }


def route_export(route: Route) -> dict[str, Any]:
    """One route in the JSON form, each plugin's refs in their order."""
    refs: dict[str, list[str]] = {RouteRef.EDIT: [], RouteRef.GENERATION: []}
    for ref in sorted(route.refs.all(), key=lambda r: (r.position, r.pk)):
        refs[ref.plugin].append(ref.image_model_id)
    plugins = []
    for operation, columns in CONFIG_COLUMNS.items():
        enabled = getattr(route, ENABLED_COLUMN[operation])
        if enabled is None:
            continue
        config: dict[str, Any] = {"refs": refs[operation.value]}
        config.update({key: getattr(route, column) for key, column in columns.items()})
        plugins.append({"enabled": enabled, "plugin": PLUGIN_IDS[operation], "config": config})
    return {
        "id": route.id,
        "name": route.name,
        "enabled": route.enabled,
        "frontend": {"domains": list(route.domains)},
        "plugins": plugins,
    }


def api_key_export(key: ApiKey) -> dict[str, Any]:
    """One API key in the JSON form; never its secret, which only exists hashed."""
    limits = {
        name: value for name in ("requests_per_minute", "images_per_day") if (value := getattr(key, name)) is not None
    }
    exported: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "enabled": key.enabled,
        "routes": sorted(r.id for r in key.routes.all()),
        "rate_limit": limits,
    }
    budget = {
        name: float(value)
        for name, value in (("usd_per_day", key.budget_usd_per_day), ("usd_per_month", key.budget_usd_per_month))
        if value is not None
    }
    if budget:
        exported["budget"] = budget
    if key.expires_at is not None:
        exported["expires_at"] = key.expires_at.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if key.models_include or key.models_exclude:
        exported["models"] = {"include": list(key.models_include), "exclude": list(key.models_exclude)}
    return exported


def entities_export(*, with_secrets: bool) -> dict[str, Any]:
    """Every entity in the import form, sorted by id: literal tokens only `with_secrets`, no key secret."""
    return {
        "image_models": [image_model_export(m, with_secrets=with_secrets) for m in ImageModel.objects.order_by("id")],
        "routes": [route_export(r) for r in Route.objects.order_by("id").prefetch_related("refs")],
        "api_keys": [api_key_export(k) for k in ApiKey.objects.order_by("id").prefetch_related("routes")],
    }
