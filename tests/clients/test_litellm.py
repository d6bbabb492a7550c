"""LiteLLM as a client of the live gateway: `litellm.image_edit` and `litellm.image_generation` with
`api_base` on the gateway and model `openai/<X/model>` (LiteLLM's OpenAI provider, the gateway's
`X/model` routing), on an OpenAI-wire and a Gemini-wire image model.

LiteLLM parses each answer into its own types and raises APIConnectionError on one OpenAI's types
refuse (a `usage` without `input_tokens_details` did), after the provider has billed the call: a
call that returns is the first check, then what it parsed.

LiteLLM must not reach the network: tests/clients/conftest.py sets LITELLM_LOCAL_MODEL_COST_MAP
(its cost map read from the package, not fetched at import) and LITELLM_OFFLINE_MODE before the
import below.
"""

from __future__ import annotations

import io
from typing import Any

import litellm
import pytest
from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info

from tests.clients.conftest import CLIENT_KEY, GEMINI_WIRE, OPENAI_WIRE, assert_openai_usage, decoded_image
from tests.standin import StandIn, image_bytes

PHOTO = image_bytes("png", (64, 64))
# wire -> (the model a LiteLLM user writes, the image model that serves it)
WIRES = {"openai": (f"openai/{OPENAI_WIRE}", "img-openai"), "gemini": (f"openai/{GEMINI_WIRE}", "img-gemini")}


def _check(answer: Any, *, image_model: str, count: int) -> None:
    """LiteLLM's ImageResponse: served by `image_model`, `count` real images, OpenAI's usage."""
    assert isinstance(answer, litellm.ImageResponse)
    # LiteLLM hands back the answer's headers (prefixed) as its docs describe.
    headers = answer._hidden_params["additional_headers"]
    assert headers["llm_provider-x-gateway-image-model"] == image_model
    assert len(answer.data) == count
    for item in answer.data:
        assert item.url is None
        decoded_image(item.b64_json)
    # LiteLLM fills what the answer lacked with its own defaults (zeros), so the counts must add up.
    assert_openai_usage(answer.usage.model_dump())


@pytest.mark.parametrize("wire", WIRES)
def test_litellm_image_edit_parses_the_gateways_answer(wire: str, both_wires: str, standin: StandIn) -> None:
    model, image_model = WIRES[wire]
    photo = io.BytesIO(PHOTO)
    photo.name = "photo.png"

    answer = litellm.image_edit(
        image=photo, prompt="make it night", model=model, api_base=both_wires, api_key=CLIENT_KEY, size="1024x1024"
    )

    _check(answer, image_model=image_model, count=1)
    sent = standin.last
    if wire == "openai":
        assert sent.path == "/v1/images/edits"
        assert (sent.fields["model"], sent.fields["prompt"], sent.fields["size"]) == (
            "gpt-image-1",
            "make it night",
            "1024x1024",
        )
        assert [part.size for part in sent.files] == [len(PHOTO)]
    else:
        assert sent.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
        assert [image.size for image in sent.inline_images] == [len(PHOTO)]


@pytest.mark.parametrize("wire", WIRES)
def test_litellm_image_generation_parses_the_gateways_answer(wire: str, both_wires: str, standin: StandIn) -> None:
    model, image_model = WIRES[wire]

    answer = litellm.image_generation(
        prompt="a lighthouse", model=model, api_base=both_wires, api_key=CLIENT_KEY, n=2, size="1536x1024"
    )

    _check(answer, image_model=image_model, count=2)
    calls = [request for request in standin.received if request.method == "POST"]
    if wire == "openai":
        [call] = calls
        assert call.path == "/v1/images/generations"
        assert {name: call.json.get(name) for name in ("model", "prompt", "n", "size")} == {
            "model": "gpt-image-1",
            "prompt": "a lighthouse",
            "n": 2,
            "size": "1536x1024",
        }
    else:
        assert len(calls) == 2  # Gemini has no `n`: one generateContent call per image
        assert all(call.json["contents"][0]["parts"] == [{"text": "a lighthouse"}] for call in calls)


def test_litellm_loaded_its_cost_map_from_the_package_without_fetching_it() -> None:
    info = get_model_cost_map_source_info()

    assert (info["source"], info["url"], info["is_env_forced"]) == ("local", None, True)
