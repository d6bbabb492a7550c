"""Every provider's answer, edits and generations, parses as the official SDK's own pydantic type
(`openai.types.ImagesResponse`), checked on the raw HTTP body rather than through the SDK object,
which would let fields it does not know slip by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from openai.types import Image, ImagesResponse

from entities.catalog import AZURE_EDIT_SINCE
from tests.clients.conftest import assert_openai_usage, decoded_image
from tests.gateway import make_image_model, make_route
from tests.standin import StandIn, image_bytes


@dataclass(frozen=True)
class Served:
    """How one catalog provider is set up against the stand-in."""

    provider: str
    gemini_wire: bool = False
    connection_extra: dict[str, str] = field(default_factory=dict)


# The providers that edit and generate on main. x-ai, luma and hive (generation only) join this
# table, for generations, with the adapters that speak their protocols.
SERVED = [
    Served("openai"),
    Served("cloud-temple"),
    Served(
        "azure-openai",
        connection_extra={"resource_name": "typed", "deployment_id": "gpt-image-1", "api_version": AZURE_EDIT_SINCE},
    ),
    Served("gemini", gemini_wire=True),
]
OPERATIONS = ["edits", "generations"]


def _answer(served: Served, operation: str, url: str, standin: StandIn) -> requests.Response:
    """A route `typed` over one image model of the provider, and a client's request to it as plain
    HTTP: multipart for edits, JSON (n=2) for generations."""
    image_model = make_image_model(
        "typed",
        served.provider,
        standin,
        base_url=standin.gemini_url if served.gemini_wire else standin.openai_url,
        connection_extra=served.connection_extra,
        edition={"enabled": True},
        generation={"enabled": True},
    )
    make_route("typed", ["localhost"], [image_model], generation_refs=[image_model])
    if operation == "edits":
        files = {"image": ("photo.png", image_bytes("png", (64, 64)), "image/png")}
        response = requests.post(f"{url}/v1/images/edits", files=files, data={"prompt": "a red hat"}, timeout=30)
    else:
        response = requests.post(f"{url}/v1/images/generations", json={"prompt": "a lighthouse", "n": 2}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Image-Model"] == "typed"
    return response


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("served", SERVED, ids=lambda served: served.provider)
def test_every_providers_answer_is_an_openai_images_response(
    served: Served, operation: str, live_server: Any, standin: StandIn, transactional_db: None
) -> None:
    raw = _answer(served, operation, live_server.url, standin).json()

    typed = ImagesResponse.model_validate(raw)  # raises when any field breaks OpenAI's type
    assert set(raw) <= set(ImagesResponse.model_fields), f"keys OpenAI's type does not know: {raw.keys()}"
    assert typed.data is not None and len(typed.data) == (1 if operation == "edits" else 2)
    for item in raw["data"]:
        # All three keys present (null when absent), as contract §3.4 writes the answer.
        assert set(item) == set(Image.model_fields) == {"url", "b64_json", "revised_prompt"}
        assert item["url"] is None
        decoded_image(item["b64_json"])
    # Every stand-in protocol reports token counts, so each answer carries them in OpenAI's shape.
    assert typed.usage is not None
    assert_openai_usage(raw["usage"])


@pytest.mark.parametrize("operation", OPERATIONS)
def test_top_level_fields_the_provider_answered_reach_the_client(
    operation: str, live_server: Any, standin: StandIn, transactional_db: None
) -> None:
    raw = _answer(SERVED[0], operation, live_server.url, standin).json()

    typed = ImagesResponse.model_validate(raw)
    # What the OpenAI stand-in answers at the top level for a gpt-image model (contract §3.5).
    assert (typed.background, typed.output_format, typed.quality, typed.size) == (
        "opaque",
        "png",
        "medium",
        "1024x1024",
    )
