"""The gateway under test: entities pointing at the stand-in provider, and a small HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from entities.models import ApiKey, ImageModel, Route, RouteRef
from tests.standin import StandIn

PROVIDER_TOKEN = "sk-standin-secret-token-7731"


@dataclass
class Gateway:
    url: str  # the live server, e.g. http://localhost:PORT
    standin: StandIn
    route: Route

    def edit(
        self,
        *,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        data: dict[str, Any] | None = None,
        path: str = "/v1/images/edits",
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        return requests.post(self.url + path, files=files, data=data, headers=headers, timeout=30)


def make_image_model(id: str, provider: str, standin: StandIn, **fields: Any) -> ImageModel:
    base_url = standin.base_url_for(provider)
    defaults: dict[str, Any] = {
        "name": id.replace("-", " ").title(),
        "provider": provider,
        "base_url": base_url,
        "token": PROVIDER_TOKEN,
        "timeout_ms": 5000,
        # The stand-ins serve their image URLs on 127.0.0.1, which fetches refuse without the opt-in.
        "allow_private_network": True,
        "edition": {"enabled": provider in ("openai", "gemini", "cloud-temple")},
    }
    defaults.update(fields)
    image_model = ImageModel(id=id, **defaults)
    image_model.full_clean()
    image_model.save()
    return image_model


def make_route(
    id: str,
    domains: list[str],
    refs: list[ImageModel],
    *,
    generation_refs: list[ImageModel] | None = None,
    **fields: Any,
) -> Route:
    """A route with an edit plugin over `refs` (and a generation plugin over `generation_refs`);
    no retries unless asked, so faults show as they are."""
    fields.setdefault("edit_retries", 0)
    fields.setdefault("generation_retries", 0)
    if generation_refs is not None:
        fields.setdefault("generation_plugin_enabled", True)
    route = Route(id=id, name=id, domains=domains, edit_plugin_enabled=bool(refs), **fields)
    route.full_clean()
    route.save()
    for plugin, models in ((RouteRef.EDIT, refs), (RouteRef.GENERATION, generation_refs or [])):
        for position, image_model in enumerate(models):
            RouteRef.objects.create(route=route, plugin=plugin, image_model=image_model, position=position)
    return route


def make_key(id: str, secret: str, routes: list[Route], **fields: Any) -> ApiKey:
    key = ApiKey(id=id, name=id, **fields)
    key.set_secret(secret)
    key.save()
    key.routes.set(routes)
    return key


@pytest.fixture
def gateway(live_server: Any, standin: StandIn, transactional_db: None) -> Iterator[Gateway]:
    """The live gateway with an OpenAI entity, then a Gemini one, on route `images` (localhost)."""
    openai = make_image_model("img-openai", "openai", standin, edition={"enabled": True, "model": "gpt-image-1"})
    gemini = make_image_model("img-gemini", "gemini", standin, edition={"enabled": True})
    # No fallback and no retry: each test sees exactly what the first provider answered.
    route = make_route("images", ["localhost", "127.0.0.1"], [openai, gemini], edit_fallback=False, edit_retries=0)
    yield Gateway(url=live_server.url, standin=standin, route=route)
