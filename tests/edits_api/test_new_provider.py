"""Adding a provider is one catalog entry plus one adapter: a throwaway provider, registered here and
nowhere else, is accepted by the entity rules and serves edits and generations end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from edits_api.errors import invalid
from edits_api.providers import ADAPTERS, http
from edits_api.providers.base import Connection, ImageItem, ImageRequest, ImageResult, ProviderAdapter
from entities.catalog import PROVIDERS, Operation, Provider
from entities.interchange import entities_import
from tests.standin import StandIn, image_bytes


class ThrowawayAdapter(ProviderAdapter):
    """Speaks OpenAI's JSON generations to the stand-in, for edits too (the images are not sent)."""

    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        if request.mask is not None:
            raise invalid("The throwaway provider takes no mask.", "mask")

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        return self.generate(connection, request)

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        payload = http.send_json(
            connection,
            "POST",
            f"{connection.base_url}/images/generations",
            headers={"Authorization": f"Bearer {connection.token}"},
            json_body={"prompt": request.prompt, "model": request.model, "n": request.n},
        )
        items = [ImageItem(b64_json=entry["b64_json"], content_type="image/png") for entry in payload["data"]]
        return ImageResult(created=int(time.time()), items=items)


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    provider = Provider("throwaway", "Throwaway", "https://throwaway.invalid/v1", can_edit=True, can_generate=True,
                        default_model="tw-1")  # fmt: skip
    monkeypatch.setitem(PROVIDERS, "throwaway", provider)
    monkeypatch.setitem(ADAPTERS, "throwaway", ThrowawayAdapter())
    yield


def test_a_provider_added_in_one_catalog_entry_and_one_adapter_edits_and_generates(
    throwaway: None, live_server: Any, standin: StandIn, transactional_db: None
) -> None:
    entities_import(
        data={
            "image_models": [
                {
                    "id": "tw",
                    "name": "Throwaway",
                    "provider": "throwaway",
                    "config": {
                        "connection": {"base_url": standin.openai_url, "token": "tw-secret-token"},
                        "options": {"edition": {"enabled": True}, "generation": {"enabled": True, "n": 2}},
                    },
                }
            ],
            "routes": [
                {
                    "id": "tw-route",
                    "name": "tw",
                    "frontend": {"domains": ["localhost"]},
                    "plugins": [
                        {"plugin": "cp:otoroshi_plugins.com.cloud.apim.otoroshi.extensions.aigateway.plugins."
                         f"OpenAICompatImages{kind}", "config": {"refs": ["tw"]}}
                        for kind in ("Edit", "Gen")
                    ],
                }
            ],
        }
    )  # fmt: skip
    client = OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)

    generated = client.images.generate(prompt="a lighthouse")
    edited = client.images.edit(image=("a.png", _png(), "image/png"), prompt="make it night")

    assert len(generated.data or []) == 2  # the entity's default n
    assert len(edited.data or []) == 1
    assert [r.json["model"] for r in standin.received] == ["tw-1", "tw-1"]  # the catalog's default model
    assert PROVIDERS["throwaway"].can(Operation.EDIT)


def _png() -> bytes:
    return image_bytes("png", (32, 32))
