"""Every provider's answer, edits and generations, parses as the official SDK's own pydantic type
(`openai.types.ImagesResponse`), checked on the raw HTTP body rather than through the SDK object,
which would let fields it does not know slip by.

The cases come from the provider catalog, so a provider added there is checked here too, on each
operation it serves.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from openai.types import Image, ImagesResponse

from entities.catalog import PROVIDERS, Operation
from tests.clients.conftest import assert_openai_usage, decoded_image
from tests.gateway import make_image_model, make_route
from tests.standin import StandIn, image_bytes

CASES = [
    pytest.param(provider.key, operation, id=f"{provider.key}-{operation.endpoint}")
    for provider in PROVIDERS.values()
    for operation in Operation
    if provider.can(operation, dict(provider.demo_connection))
]
# The stand-in speaks these providers' protocols with token counts; the others report none.
TOKEN_COUNTING = {"openai", "cloud-temple", "azure-openai", "gemini"}


def _answer(provider: str, operation: Operation, url: str, standin: StandIn) -> requests.Response:
    """A route `typed` over one image model of the provider, and a client's request to it as plain
    HTTP: multipart for edits, JSON (n=2) for generations."""
    editing = operation is Operation.EDIT
    image_model = make_image_model(
        "typed",
        provider,
        standin,
        connection_extra=dict(PROVIDERS[provider].demo_connection),  # Azure's deployment and api_version
        edition={"enabled": editing},
        generation={"enabled": not editing},
    )
    make_route("typed", ["localhost"], [image_model] if editing else [], generation_refs=[image_model])
    if editing:
        files = {"image": ("photo.png", image_bytes("png", (64, 64)), "image/png")}
        response = requests.post(f"{url}/v1/images/edits", files=files, data={"prompt": "a red hat"}, timeout=30)
    else:
        response = requests.post(f"{url}/v1/images/generations", json={"prompt": "a lighthouse", "n": 2}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Image-Model"] == "typed"
    return response


@pytest.mark.parametrize(("provider", "operation"), CASES)
def test_every_providers_answer_is_an_openai_images_response(
    provider: str, operation: Operation, live_server: Any, standin: StandIn, transactional_db: None
) -> None:
    raw = _answer(provider, operation, live_server.url, standin).json()

    typed = ImagesResponse.model_validate(raw)  # raises when any field breaks OpenAI's type
    assert set(raw) <= set(ImagesResponse.model_fields), f"keys OpenAI's type does not know: {raw.keys()}"
    assert typed.data is not None and len(typed.data) == (1 if operation is Operation.EDIT else 2)
    for item in raw["data"]:
        # All three keys present (null when absent), as contract §3.4 writes the answer.
        assert set(item) == set(Image.model_fields) == {"url", "b64_json", "revised_prompt"}
        assert item["url"] is None
        decoded_image(item["b64_json"])
    if provider in TOKEN_COUNTING:
        assert typed.usage is not None
        assert_openai_usage(raw["usage"])
    else:
        assert "usage" not in raw  # nothing to map: left out rather than invented (contract §3.5)


@pytest.mark.parametrize("operation", Operation)
def test_top_level_fields_the_provider_answered_reach_the_client(
    operation: Operation, live_server: Any, standin: StandIn, transactional_db: None
) -> None:
    raw = _answer("openai", operation, live_server.url, standin).json()

    typed = ImagesResponse.model_validate(raw)
    # What the OpenAI stand-in answers at the top level for a gpt-image model (contract §3.5).
    assert (typed.background, typed.output_format, typed.quality, typed.size) == (
        "opaque",
        "png",
        "medium",
        "1024x1024",
    )
