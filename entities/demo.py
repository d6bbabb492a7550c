"""The demo set `seed_entities` loads, and the seeding that never overwrites an operator's changes.

Two routes: `demo-route` on localhost and 127.0.0.1 serves the built-in `local` provider (edits
and generations with Pillow, no key, no network), so a fresh install answers the README's first
curl at once; `demo-providers` on the same hosts under `/openai` serves the real providers, their
tokens read from the environment (OPENAI_API_KEY, ...) when a request is made. One image model per
provider. It is written in the import form so that it passes through the same checks as any file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from entities.catalog import PROVIDERS, Operation
from entities.interchange import EDIT_PLUGIN, GENERATION_PLUGIN, ImportSummary, entities_import
from entities.models import ApiKey, ImageModel, Route

DEMO_ROUTE_ID = "demo-route"
DEMO_PROVIDERS_ROUTE_ID = "demo-providers"
DEMO_PROVIDERS_PREFIX = "openai"
DEMO_HOSTS = ("localhost", "127.0.0.1")


def demo_image_model_id(provider_key: str) -> str:
    return f"demo-{provider_key}"


def _image_model(provider_key: str) -> dict[str, Any]:
    provider = PROVIDERS[provider_key]
    variable = provider.demo_token_variable
    connection: dict[str, Any] = {"token": f"${{env.{variable}}}"} if variable else {}
    if provider_key == "openai":
        # Lets the demo point at a local stand-in instead of api.openai.com.
        connection["base_url"] = os.environ.get("DEMO_OPENAI_BASE_URL") or provider.default_base_url
    connection.update(provider.demo_connection)
    if variable:
        description = f"Demo entity for {provider.name}; its token is read from {variable} when a request is served."
    else:
        description = f"Demo entity for {provider.name}: built into the gateway, it needs no token and no network."
    return {
        "id": demo_image_model_id(provider_key),
        "name": provider.name if not provider.needs_network else f"{provider.name} (demo)",
        "description": description,
        "tags": ["demo"],
        "metadata": {},
        "provider": provider_key,
        "config": {
            "connection": connection,
            "options": {
                "generation": {"enabled": provider.can(Operation.GENERATION)},
                "edition": {"enabled": provider.can(Operation.EDIT, dict(provider.demo_connection))},
            },
        },
        "models": {"include": [], "exclude": []},
    }


def _route(
    route_id: str, name: str, domains: list[str], edit_refs: list[str], generation_refs: list[str]
) -> dict[str, Any]:
    return {
        "id": route_id,
        "name": name,
        "enabled": True,
        "frontend": {"domains": domains},
        "plugins": [
            {"enabled": True, "plugin": EDIT_PLUGIN, "config": {"refs": edit_refs}},
            {"enabled": True, "plugin": GENERATION_PLUGIN, "config": {"refs": generation_refs}},
        ],
    }


def demo_entities() -> dict[str, Any]:
    """The demo set in the import form (reads DEMO_OPENAI_BASE_URL now)."""
    local = demo_image_model_id("local")
    editors = [demo_image_model_id(key) for key in ("openai", "gemini", "cloud-temple")]
    return {
        "image_models": [_image_model(key) for key in PROVIDERS],
        "routes": [
            _route(DEMO_ROUTE_ID, "Demo route (local demo provider)", list(DEMO_HOSTS), [local], [local]),
            _route(
                DEMO_PROVIDERS_ROUTE_ID,
                "Demo route (real providers, keys from the environment)",
                [f"{host}/{DEMO_PROVIDERS_PREFIX}" for host in DEMO_HOSTS],
                editors,
                [demo_image_model_id("openai")],
            ),
        ],
        "api_keys": [],
    }


@dataclass(frozen=True)
class DemoSeedSummary:
    imported: ImportSummary
    kept: list[str] = field(default_factory=list)  # demo entities that already existed, left alone

    def __str__(self) -> str:
        if not self.kept:
            return f"demo set: {self.imported}"
        return (
            f"demo set: {self.imported.created} created, {len(self.kept)} already there and left as they are "
            "(seed_entities --reset-demo restores them)"
        )


def demo_seed(*, reset: bool = False) -> DemoSeedSummary:
    """Create the demo entities that are missing; with `reset`, restore every one to its demo form.

    Without `reset` an existing entity is never touched, whatever an operator changed in it.
    """
    data = demo_entities()
    kept: list[str] = []
    with transaction.atomic():
        if not reset:
            for kind, model in (("image_models", ImageModel), ("routes", Route), ("api_keys", ApiKey)):
                ids = [item["id"] for item in data[kind]]
                existing = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
                kept.extend(sorted(existing))
                data[kind] = [item for item in data[kind] if item["id"] not in existing]
        summary = entities_import(data=data)
    return DemoSeedSummary(summary, kept)
