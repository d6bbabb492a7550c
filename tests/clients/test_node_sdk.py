"""The official OpenAI Node SDK (tests/clients/node, `openai` pinned in its package-lock.json) against
the live gateway: edits sent with `toFile` and generations, on an OpenAI-wire and a Gemini-wire image
model. One node process runs every case of this module; the tests read what it printed and what the
stand-in provider received.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings
from openai.types import ImagesResponse

from edits_api.models import UsageRecord
from entities.models import ApiKey, ImageModel, Route
from tests.clients.conftest import (
    CLIENT_KEY,
    GEMINI_WIRE,
    OPENAI_WIRE,
    ROUTE_ID,
    assert_openai_usage,
    decoded_image,
    pinned_node_sdk,
    serve_both_wires,
)
from tests.gateway import PROVIDER_TOKEN
from tests.standin import Recorded, StandIn, image_bytes

PHOTO = image_bytes("png", (64, 64))

# Each case: one SDK call. Image counts and formats differ so that each answer is told apart.
CASES: list[dict[str, Any]] = [
    {
        "id": "openai-edit",
        "operation": "edit",
        "images": 2,  # sent by the SDK as `image[]` parts
        "params": {"model": OPENAI_WIRE, "prompt": "put the hat on the person", "size": "1024x1024", "quality": "high"},
    },
    {
        "id": "openai-generate",
        "operation": "generate",
        "params": {
            "model": OPENAI_WIRE,
            "prompt": "a lighthouse",
            "n": 2,
            "size": "1536x1024",
            "output_format": "webp",
        },
    },
    {
        "id": "gemini-edit",
        "operation": "edit",
        "images": 1,  # sent by the SDK as one `image` part
        "params": {"model": GEMINI_WIRE, "prompt": "make it night"},
    },
    {
        "id": "gemini-generate",
        "operation": "generate",
        "params": {"model": GEMINI_WIRE, "prompt": "a lighthouse", "size": "1536x1024"},
    },
    {
        "id": "wrong-key",
        "operation": "generate",
        "apiKey": "not-a-key-of-this-route",
        "params": {"model": OPENAI_WIRE, "prompt": "a lighthouse"},
    },
]
# case id -> (image model that serves it, images in the answer, their format)
EXPECTED = {
    "openai-edit": ("img-openai", 1, "PNG"),
    "openai-generate": ("img-openai", 2, "WEBP"),
    "gemini-edit": ("img-gemini", 1, "PNG"),
    "gemini-generate": ("img-gemini", 1, "PNG"),
}


@dataclass(frozen=True)
class NodeRun:
    results: dict[str, dict[str, Any]]  # case id -> what the SDK returned or raised
    received: list[Recorded]  # what the stand-in provider received, in order


@pytest.fixture(scope="module")
def node_run(
    django_db_setup: None, django_db_blocker: Any, live_server: Any, node_sdk: Path, tmp_path_factory: Any
) -> Iterator[NodeRun]:
    """Route `clients` in the test database, then every case in one node process.

    Module-scoped, so the entities are written outside any test's transaction (the live server reads
    them from another thread) and removed again here."""
    photo = tmp_path_factory.mktemp("node") / "photo.png"
    photo.write_bytes(PHOTO)
    command = ["node", str(node_sdk / "images.mjs"), live_server.url + "/v1", CLIENT_KEY, str(photo), json.dumps(CASES)]
    with StandIn() as standin, django_db_blocker.unblock(), override_settings(LEDGER_FLUSH_SECONDS=0):
        cache.clear()  # no breaker state left by earlier tests for these image model ids
        try:
            serve_both_wires(standin)
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            ApiKey.objects.filter(routes__id=ROUTE_ID).delete()
            Route.objects.filter(id=ROUTE_ID).delete()
            ImageModel.objects.filter(id__in=["img-openai", "img-gemini"]).delete()
            UsageRecord.objects.filter(route_id=ROUTE_ID).delete()
        received = standin.received
    assert done.returncode == 0, f"node failed:\n{done.stderr}"
    printed = json.loads(done.stdout)
    assert printed["sdkVersion"] == pinned_node_sdk()
    yield NodeRun(results=printed["results"], received=received)


def _provider_calls(run: NodeRun, path_end: str) -> list[Recorded]:
    return [request for request in run.received if request.method == "POST" and request.path.endswith(path_end)]


@pytest.mark.parametrize("case_id", EXPECTED)
def test_node_sdk_answers_are_openai_images_responses(case_id: str, node_run: NodeRun) -> None:
    result = node_run.results[case_id]
    image_model, count, image_format = EXPECTED[case_id]

    assert result["ok"], result
    assert result["headers"]["x-gateway-route"] == ROUTE_ID
    assert result["headers"]["x-gateway-image-model"] == image_model
    assert result["headers"]["content-type"] == "application/json"
    body = result["body"]
    typed = ImagesResponse.model_validate(body)
    assert typed.data is not None and len(typed.data) == count
    assert [decoded_image(item["b64_json"]).format for item in body["data"]] == [image_format] * count
    assert_openai_usage(body["usage"])


def test_node_sdk_edit_images_reach_each_provider_in_its_protocol(node_run: NodeRun) -> None:
    [openai_edit] = _provider_calls(node_run, "/images/edits")
    gemini_calls = _provider_calls(node_run, ":generateContent")

    # OpenAI: the SDK's two `image[]` parts forwarded as openai-python names several images.
    assert [part.name for part in openai_edit.files] == ["image[]", "image[]"]
    assert {part.filename for part in openai_edit.files} == {"photo-0.png", "photo-1.png"}
    assert {part.size for part in openai_edit.files} == {len(PHOTO)}
    sent = {name: openai_edit.fields.get(name) for name in ("prompt", "model", "size", "quality")}
    assert sent == {
        "prompt": "put the hat on the person",
        "model": "gpt-image-1",
        "size": "1024x1024",
        "quality": "high",
    }
    # The provider sees the gateway's own token, never the client's key.
    assert openai_edit.headers["authorization"] == f"Bearer {PROVIDER_TOKEN}"
    # Gemini: the one `image` part sent inline with the prompt to the named model.
    [gemini_edit] = [call for call in gemini_calls if call.inline_images]
    assert gemini_edit.path.endswith("/models/gemini-3.1-flash-image:generateContent")
    assert gemini_edit.json["contents"][0]["parts"][0] == {"text": "make it night"}
    assert [image.size for image in gemini_edit.inline_images] == [len(PHOTO)]
    assert gemini_edit.headers["x-goog-api-key"] == PROVIDER_TOKEN
    assert CLIENT_KEY not in json.dumps(gemini_edit.headers)


def test_node_sdk_generation_fields_reach_each_provider_in_its_protocol(node_run: NodeRun) -> None:
    [openai_generation] = _provider_calls(node_run, "/images/generations")
    [gemini_generation] = [call for call in _provider_calls(node_run, ":generateContent") if not call.inline_images]

    assert openai_generation.json["model"] == "gpt-image-1"
    assert (openai_generation.json["n"], openai_generation.json["size"]) == (2, "1536x1024")
    assert openai_generation.json["output_format"] == "webp"
    assert "response_format" not in openai_generation.json  # gpt-image models refuse it
    assert gemini_generation.json["contents"][0]["parts"] == [{"text": "a lighthouse"}]
    assert gemini_generation.json["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2", "imageSize": "2K"}


def test_node_sdk_sees_a_refused_key_as_its_authentication_error(node_run: NodeRun) -> None:
    error = node_run.results["wrong-key"]

    assert not error["ok"]
    # The SDK read the gateway's envelope: its own error class, the status and the code.
    assert (error["error"]["name"], error["error"]["status"], error["error"]["code"]) == (
        "AuthenticationError",
        401,
        "invalid_api_key",
    )
    assert "not valid for this route" in error["error"]["message"]
    # Refused before any provider call: only the four served cases reached the stand-in.
    assert len([request for request in node_run.received if request.method == "POST"]) == 4


def test_node_sdk_sees_a_request_id_on_every_answer(node_run: NodeRun) -> None:
    # The SDK exposes X-Request-Id as `_request_id` on answers and `requestID` on errors.
    seen = {case_id: result["requestId"] for case_id, result in node_run.results.items()}

    assert all(seen.values()) and len(set(seen.values())) == len(seen), seen  # contract §3.4: a new one each
