"""The demo set `seed_entities` loads: one image model per provider and a route on localhost.

It is written in the import form so that it passes through the same checks as any file.
"""

from __future__ import annotations

import os
from typing import Any

from entities.catalog import PROVIDERS, Operation
from entities.interchange import EDIT_PLUGIN, GENERATION_PLUGIN

DEMO_ROUTE_ID = "demo-route"


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
    return {
        "id": demo_image_model_id(provider_key),
        "name": f"{provider.name} (demo)",
        "description": f"Demo entity for {provider.name}; its token is read from {variable} when a request is served."
        if variable
        else f"Demo entity for {provider.name}; it needs no token.",
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


def demo_entities() -> dict[str, Any]:
    """The demo set in the import form (reads DEMO_OPENAI_BASE_URL now)."""
    editors = [demo_image_model_id(key) for key in ("openai", "gemini", "cloud-temple")]
    return {
        "image_models": [_image_model(key) for key in PROVIDERS],
        "routes": [
            {
                "id": DEMO_ROUTE_ID,
                "name": "Demo route",
                "enabled": True,
                "frontend": {"domains": ["localhost", "127.0.0.1"]},
                "plugins": [
                    {"enabled": True, "plugin": EDIT_PLUGIN, "config": {"refs": editors}},
                    {
                        "enabled": True,
                        "plugin": GENERATION_PLUGIN,
                        "config": {"refs": [demo_image_model_id("openai")]},
                    },
                ],
            }
        ],
        "api_keys": [],
    }
