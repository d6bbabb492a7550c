"""POST /v1/images/generations end to end: the official SDK and raw HTTP against the live gateway,
which calls the stand-in provider over real HTTP in each provider's own protocol."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import requests
from openai import OpenAI
from openai.types import ImagesResponse
from PIL import Image

from edits_api.models import UsageRecord
from entities.models import ImageModel, Route
from tests.gateway import PROVIDER_TOKEN, make_image_model, make_key, make_route
from tests.standin import StandIn

GENERATING = {"enabled": True}


@pytest.fixture
def generation(live_server: Any, standin: StandIn, transactional_db: None) -> dict[str, Any]:
    """A route `gen` on localhost whose generation plugin serves one image model of each provider (OpenAI
    first); no fallback, so each test sees its first provider's answer."""
    models = [
        make_image_model("gen-openai", "openai", standin, generation={"enabled": True, "model": "gpt-image-1.5"}),
        make_image_model("gen-gemini", "gemini", standin, generation=GENERATING),
        make_image_model("gen-ct", "cloud-temple", standin, generation=GENERATING),
        make_image_model(
            "gen-azure",
            "azure-openai",
            standin,
            generation=GENERATING,
            connection_extra={"resource_name": "r", "deployment_id": "img-deploy", "api_version": "2025-04-01-preview"},
        ),
        make_image_model("gen-xai", "x-ai", standin, generation=GENERATING),
        make_image_model("gen-luma", "luma", standin, generation=GENERATING),
        make_image_model("gen-hive", "hive", standin, generation=GENERATING),
    ]
    route = make_route("gen", ["localhost", "127.0.0.1"], [], generation_refs=models, generation_fallback=False)
    return {"url": live_server.url, "standin": standin, "route": route, "models": models}


def client(url: str, api_key: str = "unused") -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def post(url: str, body: Any, **headers: str) -> requests.Response:
    return requests.post(url + "/v1/images/generations", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("ref", "expected_path"),
    [
        ("gen-openai", "/v1/images/generations"),
        ("gen-ct", "/v1/images/generations"),
        ("gen-azure", "/openai/deployments/img-deploy/images/generations"),
        ("gen-gemini", "/v1beta/models/gemini-3.1-flash-image:generateContent"),
        ("gen-xai", "/xai/v1/images/generations"),
        ("gen-luma", "/luma/dream-machine/v1/generations/image"),
        ("gen-hive", "/hive/api/v3/black-forest-labs/flux-schnell"),
    ],
)
def test_sdk_generate_reaches_each_provider_in_its_protocol_and_parses_as_openai_types(
    generation: dict[str, Any], ref: str, expected_path: str
) -> None:
    result = client(generation["url"]).images.generate(prompt="a red bicycle", extra_body={"provider": ref})

    received = next(r for r in generation["standin"].received if r.method == "POST")
    assert received.path == expected_path
    assert len(result.data or []) == 1
    image = (result.data or [])[0]
    assert image.url is None and image.b64_json  # b64_json unless asked otherwise (contract §4)
    Image.open(io.BytesIO(base64.b64decode(image.b64_json))).verify()
    ImagesResponse.model_validate(result.model_dump())
    if ref == "gen-azure":
        assert received.headers["api-key"] == PROVIDER_TOKEN and "authorization" not in received.headers
        assert received.query["api-version"] == ["2025-04-01-preview"]
    if ref in ("gen-openai", "gen-ct", "gen-azure"):
        assert received.json["prompt"] == "a red bicycle"
        assert "response_format" not in received.json  # gpt-image models refuse it


def test_openai_generation_sends_what_the_sdk_sends_directly(generation: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = dict(
        prompt="a very specific prompt ✓",
        model="gpt-image-1.5",
        n=2,
        size="1536x1024",
        quality="high",
        background="transparent",
        output_format="webp",
        output_compression=70,
        moderation="low",
        user="user-42",
    )
    standin = generation["standin"]
    OpenAI(base_url=standin.openai_url, api_key="sk-direct", max_retries=0).images.generate(**kwargs)
    direct = standin.last
    result = client(generation["url"]).images.generate(**kwargs)
    through = standin.last

    assert through.json == direct.json
    assert through.content_length is not None and not through.chunked
    # The provider's top-level values come through, as the SDK exposes them when called directly.
    assert (result.background, result.output_format, result.quality, result.size) == (
        "transparent",
        "webp",
        "high",
        "1536x1024",
    )
    assert result.usage is not None and result.usage.input_tokens_details.text_tokens == 10


@pytest.mark.parametrize(
    ("model", "sent", "forwarded"),
    [
        ("gpt-image-1.5", "hd", "high"),
        ("gpt-image-1.5", "standard", "medium"),
        ("gpt-image-2", "hd", "high"),
        ("dall-e-3", "hd", "hd"),
        ("dall-e-3", "standard", "standard"),
        ("dall-e-2", "hd", "standard"),
    ],
)
def test_seed_quality_values_are_translated_into_each_family_s_own(
    generation: dict[str, Any], model: str, sent: str, forwarded: str
) -> None:
    response = post(generation["url"], {"prompt": "a cat", "model": model, "quality": sent})

    assert response.status_code == 200, response.text
    assert generation["standin"].last.json["quality"] == forwarded


def test_gemini_never_receives_a_quality(generation: dict[str, Any]) -> None:
    response = post(generation["url"], {"prompt": "a cat", "provider": "gen-gemini", "quality": "hd"})

    assert response.status_code == 200, response.text
    assert "quality" not in json.dumps(generation["standin"].last.json)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"prompt": "a cat", "quality": "ultra"}, "quality", "invalid_value"),
        ({"prompt": "a cat", "model": "dall-e-3", "n": 2}, "n", "invalid_value"),
        ({"prompt": "a cat", "style": "vivid"}, "style", "unsupported_parameter"),
        ({"prompt": "a cat", "size": "99x99"}, "size", "invalid_value"),
        ({"prompt": "a cat", "n": "2"}, "n", "invalid_type"),
        ({"prompt": "a cat", "colour": "red"}, "colour", "unknown_parameter"),
        ({"prompt": "a cat", "stream": True}, "stream", "invalid_value"),
        ({"prompt": "x" * 4001, "model": "dall-e-3"}, "prompt", "invalid_value"),
        ({"model": "gpt-image-1.5"}, "prompt", "missing_required_parameter"),
        ([1, 2], None, "invalid_request_body"),
    ],
)
def test_bad_generation_input_is_refused_before_any_provider_call(
    generation: dict[str, Any], body: Any, param: str | None, code: str
) -> None:
    response = post(generation["url"], body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert generation["standin"].received == []


def test_a_body_that_is_not_json_is_a_415_or_400_in_the_envelope(generation: dict[str, Any]) -> None:
    as_form = requests.post(generation["url"] + "/v1/images/generations", data={"prompt": "x"}, timeout=10)
    broken = post_json_bytes(generation["url"], b"{not json")
    # JSON that Python's parser reads but RFC 8259 does not allow.
    with_nan = post_json_bytes(generation["url"], b'{"prompt": "a cat", "n": NaN}')

    assert as_form.status_code == 415 and as_form.json()["error"]["code"] == "unsupported_media_type"
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_request_body"
    assert with_nan.status_code == 400 and with_nan.json()["error"]["code"] == "invalid_request_body"
    assert "NaN" in with_nan.json()["error"]["message"]
    assert generation["standin"].received == []


def post_json_bytes(url: str, data: bytes) -> requests.Response:
    return requests.post(
        url + "/v1/images/generations", data=data, headers={"Content-Type": "application/json"}, timeout=10
    )


def test_generation_disabled_and_not_supported_are_told_apart(generation: dict[str, Any]) -> None:
    ImageModel.objects.filter(id="gen-openai").update(generation={"enabled": False})
    route: Route = generation["route"]
    route.refs.exclude(image_model_id="gen-openai").delete()

    disabled = post(generation["url"], {"prompt": "a cat"})

    assert disabled.status_code == 403
    assert disabled.json()["error"]["code"] == "generation_disabled"


def test_a_route_without_the_generation_plugin_answers_404(generation: dict[str, Any], standin: StandIn) -> None:
    model = make_image_model("edit-only", "openai", standin)
    make_route("edits", ["localhost/edits"], [model])

    response = post(generation["url"] + "/edits", {"prompt": "a cat"})

    assert response.status_code == 404 and response.json()["error"]["code"] == "route_not_found"


def test_entity_response_format_url_gives_a_signed_link(
    generation: dict[str, Any], settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    ImageModel.objects.filter(id="gen-openai").update(generation={"enabled": True, "response_format": "url"})

    result = client(generation["url"]).images.generate(prompt="a cat")

    url = (result.data or [])[0].url
    assert url and url.startswith(generation["url"] + "/images/")
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"


def test_decode_answers_the_image_bytes_with_their_content_type(generation: dict[str, Any]) -> None:
    Route.objects.filter(id="gen").update(generation_decode=True)

    png = post(generation["url"], {"prompt": "a cat"})
    webp = post(generation["url"], {"prompt": "a cat", "output_format": "webp"})
    two = post(generation["url"], {"prompt": "a cat", "n": 2})

    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).format == "PNG"
    assert webp.headers["Content-Type"] == "image/webp"
    assert two.headers["Content-Type"] == "application/json" and len(two.json()["data"]) == 2


def test_generations_record_usage_and_name_who_served(generation: dict[str, Any]) -> None:
    response = post(generation["url"], {"prompt": "a cat", "n": 3})

    assert response.headers["X-Gateway-Route"] == "gen"
    assert response.headers["X-Gateway-Image-Model"] == "gen-openai"
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status, record.images, record.image_model_id) == (
        "generations",
        200,
        3,
        "gen-openai",
    )


def test_idempotency_key_replays_a_generation_without_a_second_call(generation: dict[str, Any]) -> None:
    first = post(generation["url"], {"prompt": "a cat"}, **{"Idempotency-Key": "gen-1"})
    second = post(generation["url"], {"prompt": "a cat"}, **{"Idempotency-Key": "gen-1"})
    other = post(generation["url"], {"prompt": "a dog"}, **{"Idempotency-Key": "gen-1"})

    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert len(generation["standin"].received) == 1


def test_the_same_idempotency_key_on_another_route_is_not_replayed(
    generation: dict[str, Any], standin: StandIn
) -> None:
    other_model = make_image_model("gen-other", "openai", standin, generation=GENERATING)
    other = make_route("other", ["localhost/other"], [], generation_refs=[other_model])
    key = make_key("k1", "client-secret-0123456789", [generation["route"], other])
    auth = {"Authorization": "Bearer client-secret-0123456789", "Idempotency-Key": "same"}

    first = post(generation["url"], {"prompt": "a cat"}, **auth)
    second = post(generation["url"] + "/other", {"prompt": "a cat"}, **auth)

    assert key.id == "k1"
    assert first.headers["X-Gateway-Route"] == "gen" and second.headers["X-Gateway-Route"] == "other"
    assert "Idempotent-Replayed" not in second.headers
    assert len(standin.received) == 2
