"""Every provider protocol against the stand-in: one contract over all adapters, what each
protocol puts on the wire, its errors, safety refusals and timeouts, the probe, and answers that
OpenAI's own types accept."""

from __future__ import annotations

import io
import json
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from openai import AzureOpenAI, OpenAI
from openai.types import ImagesResponse
from PIL import Image

from edits_api.errors import GatewayError
from edits_api.providers import ADAPTERS, http, shape
from edits_api.providers.base import Connection, ImageRequest, ImageResult
from edits_api.providers.gemini import call_usage
from edits_api.providers.luma import LumaAdapter
from edits_api.providers.xai import size_fields
from entities.catalog import PROVIDERS, Operation
from tests.standin import StandIn, image_file, mask_file

TOKEN = "sk-live-SECRET-0123456789abcdef"
# A model each provider generates with.
MODELS = {
    "openai": "gpt-image-1.5",
    "cloud-temple": "gpt-image-1",
    "azure-openai": "gpt-image-1",
    "gemini": "gemini-3.1-flash-image",
    "x-ai": "grok-imagine-image",
    "luma": "photon-1",
    "hive": "black-forest-labs/flux-schnell",
    "local": "pillow",
}
PROVIDER_KEYS = sorted(ADAPTERS)
# The providers reached over the network: the built-in local one has no wire, faults or key to refuse.
NETWORK_KEYS = [key for key in PROVIDER_KEYS if PROVIDERS[key].needs_network]


def openai_body(result: ImageResult) -> dict[str, Any]:
    """The answer as the gateway writes it (contract §3.4-5), from an adapter's result."""
    body: dict[str, Any] = {
        "created": result.created,
        "data": [{"url": i.url, "b64_json": i.b64_json, "revised_prompt": i.revised_prompt} for i in result.items],
    }
    if result.usage is not None:
        body["usage"] = result.usage
    for name in ("background", "output_format", "quality", "size"):
        if getattr(result, name) is not None:
            body[name] = getattr(result, name)
    return body


def valid_openai_answer(result: ImageResult) -> ImagesResponse:
    """The answer parses as the pinned SDK's ImagesResponse, with the same values."""
    body = openai_body(result)
    parsed = ImagesResponse.model_validate(body)
    assert parsed.model_dump(exclude_none=True) == _without_none(body)  # nothing lost or coerced
    return parsed


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def generation(provider: str, **fields: Any) -> ImageRequest:
    fields.setdefault("model", MODELS[provider])
    return ImageRequest(prompt="A lighthouse at dawn", **fields)


@pytest.fixture
def quick_luma(standin: StandIn) -> StandIn:
    """Luma generations finish at the first poll unless a test says otherwise."""
    standin.luma_polls_until_done = 1
    return standin


# -- the contract, over every adapter ----------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDER_KEYS)
def test_every_adapter_edits_or_refuses_before_any_call(provider: str, standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection(provider, token=TOKEN)
    request = ImageRequest(prompt="Add a red hat", model=MODELS[provider], images=[image_file(tmp_path)])
    adapter = ADAPTERS[provider]
    if not PROVIDERS[provider].can(Operation.EDIT, dict(connection.extra)):
        for refuse in (adapter.check_edit, adapter.edit):
            with pytest.raises(GatewayError) as refused:
                refuse(connection, request)
            assert (refused.value.status, refused.value.code) == (400, "edition_not_supported")
            assert PROVIDERS[provider].name in refused.value.message
        assert standin.received == []
        return
    adapter.check_edit(connection, request)
    result = adapter.edit(connection, request)
    assert len(standin.received) == (1 if PROVIDERS[provider].needs_network else 0) and len(result.items) == 1
    parsed = valid_openai_answer(result)
    assert parsed.data and parsed.data[0].b64_json
    assert TOKEN not in json.dumps(openai_body(result))


@pytest.mark.parametrize("provider", PROVIDER_KEYS)
def test_every_adapter_generates_an_answer_openai_clients_accept(provider: str, quick_luma: StandIn) -> None:
    connection = quick_luma.connection(provider, token=TOKEN)
    request = generation(provider, n=2)
    ADAPTERS[provider].check_generate(connection, request)
    result = ADAPTERS[provider].generate(connection, request)
    assert len(result.items) == 2
    for item in result.items:
        if item.url is not None:  # a provider URL the gateway fetches or passes on
            content, content_type = http.fetch_images(connection, [item.url])[0]
            assert Image.open(io.BytesIO(content)).format in ("PNG", "JPEG")
            assert item.content_type in (None, content_type)
        else:
            assert item.b64_json and item.content_type and item.content_type.startswith("image/")
    valid_openai_answer(result)
    assert TOKEN not in json.dumps(openai_body(result))
    assert all(TOKEN not in r.path for r in quick_luma.received)


@pytest.mark.parametrize("provider", PROVIDER_KEYS)
def test_every_adapter_probes_with_one_cheap_call_and_never_shows_the_token(provider: str, standin: StandIn) -> None:
    connection = standin.connection(provider, token=TOKEN)
    result = ADAPTERS[provider].probe(connection)
    if not PROVIDERS[provider].needs_network:  # built in: nothing to call, and that is fine
        assert (result.ok, result.called, standin.received) == (True, "", [])
        assert "built into the gateway" in result.detail
        return
    if provider == "hive":  # no documented free call: nothing is called, and it says so
        assert (result.ok, result.called) == (False, "")
        assert "no free authenticated call" in result.detail and standin.received == []
        return
    assert result.ok, result.detail
    (call,) = standin.received
    assert call.method == "GET"
    assert result.called == f"GET {standin.url}{call.path}" + (f"?{_query(call)}" if call.query else "")
    assert PROVIDERS[provider].name in result.detail
    assert TOKEN not in result.called + result.detail


@pytest.mark.parametrize("provider", sorted(set(NETWORK_KEYS) - {"hive"}))
def test_a_refused_key_fails_the_probe_without_echoing_it(provider: str, standin: StandIn) -> None:
    standin.fail_next("401")  # the stand-in echoes the rejected key, as careless upstreams do
    result = ADAPTERS[provider].probe(standin.connection(provider, token=TOKEN))
    assert not result.ok
    assert PROVIDERS[provider].name in result.detail
    assert TOKEN not in result.detail + result.called


def test_an_unreachable_provider_fails_the_probe(standin: StandIn) -> None:
    connection = Connection("openai", "OpenAI", "http://127.0.0.1:9/v1", TOKEN, 2.0)
    result = ADAPTERS["openai"].probe(connection)
    assert not result.ok and "could not be reached" in result.detail
    assert result.called == "GET http://127.0.0.1:9/v1/models"


def _query(call: Any) -> str:
    return "&".join(f"{k}={v}" for k, values in call.query.items() for v in values)


# Each provider's fault, as the client sees it: the statuses and codes the HTTP seam may give
# (a provider's 401 may be upstream_auth_error; a drop after the whole request, upstream_error).
GENERATION_FAULTS = [
    ("500", {502}, {"upstream_error"}),
    ("503", {502}, {"upstream_error"}),
    ("429", {429}, None),
    ("401", {401, 502}, None),
    ("garbage", {502}, {"upstream_bad_response"}),
    ("drop", {502}, {"upstream_unreachable", "upstream_error"}),
    ("moderation", {400}, {"moderation_blocked"}),
]


@pytest.mark.parametrize("provider", NETWORK_KEYS)
@pytest.mark.parametrize(("mode", "statuses", "codes"), GENERATION_FAULTS)
def test_every_provider_maps_its_faults_and_safety_refusals(
    provider: str, mode: str, statuses: set[int], codes: set[str] | None, quick_luma: StandIn
) -> None:
    quick_luma.fail_next(mode)
    connection = quick_luma.connection(provider, token=TOKEN)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS[provider].generate(connection, generation(provider))
    error = failed.value
    assert error.status in statuses, error.body()
    if codes is not None:
        assert error.code in codes, error.body()
    assert connection.provider_name in error.message
    assert TOKEN not in json.dumps(error.body()) + json.dumps(error.headers)


@pytest.mark.parametrize("provider", NETWORK_KEYS)
def test_every_provider_that_hangs_is_a_quick_504(provider: str, standin: StandIn) -> None:
    standin.fail_next("hang")
    connection = standin.connection(provider, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as timed_out:
        ADAPTERS[provider].generate(connection, generation(provider))
    assert (timed_out.value.status, timed_out.value.code) == (504, "upstream_timeout")
    assert connection.provider_name in timed_out.value.message
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("provider", ["gemini", "luma"])
def test_a_failure_after_part_of_the_request_was_billed_is_never_repeated(provider: str, quick_luma: StandIn) -> None:
    # Gemini: the first of two images is made, the second call fails. Luma: the generation is
    # created, then a poll fails. Retrying either would pay for the done part again.
    quick_luma.fail_next("slow")  # answers normally
    quick_luma.fail_next("503")
    with pytest.raises(GatewayError) as failed:
        ADAPTERS[provider].generate(
            quick_luma.connection(provider), generation(provider, n=2 if provider == "gemini" else 1)
        )
    error = failed.value
    assert (error.status, error.code) == (502, "upstream_error")
    assert not error.retryable
    assert "had already done part of this request, so it was not sent again" in error.message


@pytest.mark.parametrize("provider", ["gemini", "luma"])
def test_a_failure_before_anything_was_done_may_be_retried(provider: str, quick_luma: StandIn) -> None:
    quick_luma.fail_next("503")
    with pytest.raises(GatewayError) as failed:
        ADAPTERS[provider].generate(quick_luma.connection(provider), generation(provider, n=2))
    assert failed.value.retryable and "part of this request" not in failed.value.message


# -- OpenAI and Cloud Temple ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (
            "gpt-image-1.5",
            {"size": "1536x1024", "quality": "high", "background": "transparent", "moderation": "low", "n": 1},
        ),
        ("dall-e-3", {"size": "1792x1024", "quality": "hd", "style": "natural", "response_format": "b64_json", "n": 1}),
        ("dall-e-2", {"size": "512x512", "n": 2, "response_format": "url"}),
    ],
)
def test_openai_generation_is_sent_as_the_official_sdk_sends_it(
    model: str, fields: dict[str, Any], standin: StandIn
) -> None:
    ADAPTERS["openai"].generate(standin.connection(), ImageRequest(prompt="a fox", model=model, **fields))
    ours = standin.last
    OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0).images.generate(
        prompt="a fox", model=model, **fields
    )
    sdk = standin.last
    assert ours.path == sdk.path == "/v1/images/generations"
    assert ours.json == sdk.json
    assert ours.headers["content-type"] == sdk.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("model", "quality", "sent"),
    [("gpt-image-1", "hd", "high"), ("gpt-image-1", "standard", "medium"), ("dall-e-3", "hd", "hd")],
)
def test_seed_quality_values_reach_each_family_in_its_own_terms(
    model: str, quality: str, sent: str, standin: StandIn
) -> None:
    ADAPTERS["openai"].generate(standin.connection(), ImageRequest(prompt="p", model=model, quality=quality))
    assert standin.last.json["quality"] == sent


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [
        ("gpt-image-1", {"style": "vivid"}, "style"),
        ("dall-e-3", {"n": 2}, "n"),
        ("dall-e-3", {"background": "transparent"}, "background"),
        ("dall-e-2", {"output_format": "webp"}, "output_format"),
        ("dall-e-2", {"style": "vivid"}, "style"),
    ],
)
def test_openai_fields_a_family_refuses_never_reach_it(
    model: str, fields: dict[str, Any], param: str, standin: StandIn
) -> None:
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["openai"].check_generate(standin.connection(), ImageRequest(prompt="p", model=model, **fields))
    assert (refused.value.status, refused.value.param) == (400, param)
    with pytest.raises(GatewayError):
        ADAPTERS["openai"].generate(standin.connection(), ImageRequest(prompt="p", model=model, **fields))
    assert standin.received == []


def test_dall_e_3_cannot_edit(standin: StandIn, tmp_path: Path) -> None:
    request = ImageRequest(prompt="p", model="dall-e-3", images=[image_file(tmp_path)])
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["openai"].check_edit(standin.connection(), request)
    assert (refused.value.status, refused.value.param) == (400, "model")


def test_openai_top_level_fields_and_usage_pass_through(standin: StandIn, tmp_path: Path) -> None:
    request = ImageRequest(
        prompt="p",
        model="gpt-image-1.5",
        images=[image_file(tmp_path), image_file(tmp_path, "jpeg")],
        size="1024x1536",
        quality="low",
        background="transparent",
        output_format="webp",
    )
    result = ADAPTERS["openai"].edit(standin.connection(), request)
    assert (result.background, result.output_format, result.quality, result.size) == (
        "transparent",
        "webp",
        "low",
        "1024x1536",
    )
    assert result.usage == {
        "input_tokens": 90,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 80},
        "output_tokens": 50,
        "output_tokens_details": {"image_tokens": 50, "text_tokens": 0},
        "total_tokens": 140,
    }
    parsed = valid_openai_answer(result)
    assert parsed.usage and parsed.usage.input_tokens_details.image_tokens == 80


def test_values_openai_types_refuse_are_left_out_of_the_answer(standin: StandIn) -> None:
    # A compatible server echoing "auto" would break every client's ImagesResponse parse.
    request = ImageRequest(prompt="p", model="gpt-image-1", background="auto", quality="auto")
    result = ADAPTERS["cloud-temple"].generate(standin.connection("cloud-temple"), request)
    assert (result.background, result.quality) == (None, None)
    assert result.size == "1024x1024"
    valid_openai_answer(result)


def test_dall_e_3_revised_prompt_is_kept(standin: StandIn) -> None:
    result = ADAPTERS["openai"].generate(standin.connection(), ImageRequest(prompt="a fox", model="dall-e-3"))
    assert result.items[0].revised_prompt == "A detailed rendering of: a fox"


@pytest.mark.parametrize(("operation", "usage_expected"), [("edit", False), ("generate", True)])
def test_usage_without_a_split_is_derived_only_for_text_prompts(
    operation: str, usage_expected: bool, standin: StandIn, tmp_path: Path
) -> None:
    standin.fail_next("openai_usage_without_details")
    connection = standin.connection()
    if operation == "edit":
        result = ADAPTERS["openai"].edit(
            connection, ImageRequest(prompt="p", model="gpt-image-1", images=[image_file(tmp_path)])
        )
    else:
        result = ADAPTERS["openai"].generate(connection, ImageRequest(prompt="p", model="gpt-image-1"))
    if usage_expected:
        assert result.usage == {
            "input_tokens": 10,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
            "output_tokens": 50,
            "total_tokens": 60,
        }
    else:
        assert result.usage is None  # an image's share of the input is unknown: no invented split
    valid_openai_answer(result)


def test_shape_value_sets_match_the_pinned_sdk() -> None:
    fields = ImagesResponse.model_fields

    def literal_values(name: str) -> set[str]:
        return {v for arg in typing.get_args(fields[name].annotation) for v in typing.get_args(arg)}

    assert literal_values("background") == shape.BACKGROUNDS
    assert literal_values("output_format") == shape.OUTPUT_FORMATS
    assert literal_values("quality") == shape.QUALITIES


# -- Azure OpenAI -------------------------------------------------------------------------------------


def azure_sdk(standin: StandIn, api_version: str = "2025-04-01-preview") -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=standin.url, api_key="x", api_version=api_version, max_retries=0)


@pytest.mark.parametrize("image_count", [1, 2])
def test_azure_edit_is_sent_as_the_official_azure_client_sends_it(
    image_count: int, standin: StandIn, tmp_path: Path
) -> None:
    images = [image_file(tmp_path, fmt) for fmt in ("png", "jpeg")[:image_count]]
    mask = mask_file(tmp_path)
    request = ImageRequest(prompt="Add a hat", model="gpt-image-1", images=images, mask=mask, size="1024x1024")
    ADAPTERS["azure-openai"].edit(standin.connection("azure-openai", token=TOKEN), request)
    ours = standin.last
    paths = [Path(image.path or "") for image in images]
    azure_sdk(standin).images.edit(
        image=paths[0] if image_count == 1 else paths,
        mask=Path(mask.path or ""),
        prompt="Add a hat",
        model="gpt-image-1",  # the deployment
        size="1024x1024",
        n=1,
    )
    sdk = standin.last
    assert ours.path == sdk.path == "/openai/deployments/gpt-image-1/images/edits"
    assert ours.query == sdk.query == {"api-version": ["2025-04-01-preview"]}
    assert ours.headers["api-key"] == TOKEN and "authorization" not in ours.headers
    # The deployment names the model; the SDK repeats it in the form, which Azure ignores.
    assert ours.fields == {k: v for k, v in sdk.fields.items() if k != "model"}
    assert [(f.name, f.filename, f.content_type, f.sha256) for f in ours.files] == [
        (f.name, f.filename, f.content_type, f.sha256) for f in sdk.files
    ]


def test_azure_generation_is_sent_as_the_official_azure_client_sends_it(standin: StandIn) -> None:
    fields = {"size": "1536x1024", "quality": "high", "n": 2, "output_format": "jpeg"}
    result = ADAPTERS["azure-openai"].generate(
        standin.connection("azure-openai"), ImageRequest(prompt="a fox", model="gpt-image-1", **fields)
    )
    ours = standin.last
    azure_sdk(standin).images.generate(prompt="a fox", model="gpt-image-1", **fields)  # type: ignore[arg-type]
    sdk = standin.last
    assert (ours.path, ours.query) == (sdk.path, sdk.query)
    assert ours.path == "/openai/deployments/gpt-image-1/images/generations"
    assert ours.json == {k: v for k, v in sdk.json.items() if k != "model"}
    assert [item.content_type for item in result.items] == ["image/jpeg", "image/jpeg"]
    valid_openai_answer(result)


@pytest.mark.parametrize(("api_version", "query"), [("v1", {}), ("preview", {"api-version": ["preview"]})])
def test_azure_v1_api_puts_the_deployment_in_model(
    api_version: str, query: dict[str, list[str]], standin: StandIn, tmp_path: Path
) -> None:
    connection = standin.connection("azure-openai", api_version=api_version, deployment_id="my-image-deploy")
    ADAPTERS["azure-openai"].edit(
        connection, ImageRequest(prompt="p", model="gpt-image-1", images=[image_file(tmp_path)])
    )
    edit = standin.last
    assert (edit.path, edit.query, edit.fields["model"]) == ("/openai/v1/images/edits", query, "my-image-deploy")
    ADAPTERS["azure-openai"].generate(connection, ImageRequest(prompt="p", model="gpt-image-1"))
    made = standin.last
    assert (made.path, made.query, made.json["model"]) == ("/openai/v1/images/generations", query, "my-image-deploy")
    assert ADAPTERS["azure-openai"].probe(connection).called.startswith(f"GET {standin.azure_url}/v1/models")


def test_azure_base_url_can_point_anywhere(standin: StandIn) -> None:
    connection = standin.connection("azure-openai")
    moved = Connection(**{**connection.__dict__, "base_url": f"{standin.url}/proxy/openai"})
    ADAPTERS["azure-openai"].generate(moved, ImageRequest(prompt="p", model="gpt-image-1"))
    assert standin.last.path == "/proxy/openai/deployments/gpt-image-1/images/generations"


def test_azure_edit_on_an_old_api_version_is_refused_naming_it(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection("azure-openai", api_version="2024-02-01")
    request = ImageRequest(prompt="p", model="gpt-image-1", images=[image_file(tmp_path)])
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["azure-openai"].edit(connection, request)
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "edition_not_supported", "api_version")
    assert "2024-02-01" in error.message and "2025-04-01-preview" in error.message
    assert standin.received == []
    ADAPTERS["azure-openai"].generate(connection, ImageRequest(prompt="p", model="gpt-image-1"))
    assert standin.last.query == {"api-version": ["2024-02-01"]}  # generations still work


def test_azure_content_filter_is_moderation_blocked(standin: StandIn, tmp_path: Path) -> None:
    standin.fail_next("moderation")
    connection = standin.connection("azure-openai")
    request = ImageRequest(prompt="p", model="gpt-image-1", images=[image_file(tmp_path)])
    with pytest.raises(GatewayError) as blocked:
        ADAPTERS["azure-openai"].edit(connection, request)
    assert (blocked.value.status, blocked.value.code) == (400, "moderation_blocked")
    assert blocked.value.message.startswith("Azure OpenAI")
    assert "safety system" in blocked.value.message


# -- Gemini ------------------------------------------------------------------------------------------


def test_gemini_usage_maps_the_modality_split_summed_over_n(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection("gemini")
    images = [image_file(tmp_path), image_file(tmp_path, "jpeg")]
    request = ImageRequest(prompt="p", model="gemini-2.5-flash-image", images=images, n=2)
    result = ADAPTERS["gemini"].edit(connection, request)
    assert len(standin.received) == 2
    assert result.usage == {
        "input_tokens": 2 * (12 + 2 * 258),
        "input_tokens_details": {"text_tokens": 2 * 12, "image_tokens": 2 * 2 * 258},
        "output_tokens": 2 * 1296,
        "output_tokens_details": {"text_tokens": 2 * 6, "image_tokens": 2 * 1290},
        "total_tokens": 2 * (12 + 2 * 258 + 1296),
    }
    assert all(item.revised_prompt is None for item in result.items)
    valid_openai_answer(result)


@pytest.mark.parametrize(("operation", "expected"), [("edit", None), ("generate", "derived")])
def test_gemini_usage_without_a_modality_split(
    operation: str, expected: str | None, standin: StandIn, tmp_path: Path
) -> None:
    standin.fail_next("gemini_usage_without_details")
    connection = standin.connection("gemini")
    if operation == "edit":
        request = ImageRequest(prompt="p", model="gemini-2.5-flash-image", images=[image_file(tmp_path)])
        result = ADAPTERS["gemini"].edit(connection, request)
    else:
        result = ADAPTERS["gemini"].generate(connection, ImageRequest(prompt="p", model="gemini-2.5-flash-image"))
    if expected is None:
        assert result.usage is None
    else:
        assert result.usage == {
            "input_tokens": 12,
            "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
            "output_tokens": 1296,
            "total_tokens": 12 + 1296,
        }
    valid_openai_answer(result)


def test_gemini_usage_is_left_out_when_one_of_the_n_calls_has_none(standin: StandIn) -> None:
    standin.fail_next("slow")  # the first call answers normally
    standin.fail_next("gemini_no_usage")
    result = ADAPTERS["gemini"].generate(
        standin.connection("gemini"), ImageRequest(prompt="p", model="gemini-3-pro-image", n=2)
    )
    assert len(result.items) == 2 and result.usage is None
    valid_openai_answer(result)


def test_gemini_usage_mapping_reads_snake_case_and_unspecified_modality() -> None:
    payload = {
        "usage_metadata": {
            "prompt_token_count": 30,
            "candidates_token_count": 1290,
            "prompt_tokens_details": [
                {"modality": "MODALITY_UNSPECIFIED", "token_count": 10},
                {"modality": "IMAGE", "token_count": 20},
            ],
        }
    }
    assert call_usage(payload, text_only_input=False) == {
        "input_tokens": 30,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 20},
        "output_tokens": 1290,
        "total_tokens": 1320,
    }


def test_gemini_text_without_image_is_a_502_quoting_the_model(standin: StandIn) -> None:
    standin.fail_next("gemini_no_image")
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["gemini"].generate(standin.connection("gemini"), generation("gemini"))
    assert (failed.value.status, failed.value.code) == (502, "upstream_bad_response")
    assert "I will not draw it" in failed.value.message


# -- xAI ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x1024", {"aspect_ratio": "1:1", "resolution": "1k"}),
        ("1536x1024", {"aspect_ratio": "3:2", "resolution": "1.5k"}),
        ("1024x1536", {"aspect_ratio": "2:3", "resolution": "1.5k"}),
        ("1792x1024", {"aspect_ratio": "16:9", "resolution": "2k"}),
        ("2048x1152", {"aspect_ratio": "16:9", "resolution": "2k"}),
        ("512x1024", {"aspect_ratio": "1:2", "resolution": "1k"}),
        ("auto", {}),
        (None, {}),
    ],
)
def test_openai_size_maps_to_xai_aspect_ratio_and_resolution(size: str | None, expected: dict[str, str]) -> None:
    assert size_fields(size, "Grok (xAI)") == expected


def test_xai_generation_is_sent_in_xai_fields(standin: StandIn) -> None:
    request = ImageRequest(prompt="a fox", model="grok-imagine-image", n=3, size="1536x1024", quality="hd", user="u1")
    result = ADAPTERS["x-ai"].generate(standin.connection("x-ai", token=TOKEN), request)
    sent = standin.last
    assert (sent.method, sent.path) == ("POST", "/xai/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json == {
        "model": "grok-imagine-image",
        "prompt": "a fox",
        "n": 3,
        "aspect_ratio": "3:2",
        "resolution": "1.5k",
        "quality": "high",
        "response_format": "b64_json",  # the gateway's default answer: bytes
        "user": "u1",
    }
    assert [item.content_type for item in result.items] == ["image/jpeg"] * 3
    assert all(item.revised_prompt is None for item in result.items)
    assert result.usage is None  # per-image billing: no tokens to report
    valid_openai_answer(result)


def test_xai_url_answers_and_grok_2_revised_prompts_pass_through(standin: StandIn) -> None:
    request = ImageRequest(prompt="a fox", model="grok-2-image", response_format="url")
    result = ADAPTERS["x-ai"].generate(standin.connection("x-ai"), request)
    assert standin.last.json["response_format"] == "url"
    (item,) = result.items
    assert item.url and item.url.startswith(standin.url) and item.b64_json is None
    assert item.revised_prompt == "A vivid illustration of a fox"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "1000x300"}, "size"),
        ({"size": "4096x4096"}, "size"),
        ({"style": "vivid"}, "style"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "png"}, "output_format"),
        ({"output_compression": 50}, "output_compression"),
        ({"quality": "xhigh"}, "quality"),
        ({"moderation": "low"}, "moderation"),
    ],
)
def test_xai_refuses_what_it_cannot_carry_before_any_call(fields: dict[str, Any], param: str, standin: StandIn) -> None:
    connection = standin.connection("x-ai")
    for call in (ADAPTERS["x-ai"].check_generate, ADAPTERS["x-ai"].generate):
        with pytest.raises(GatewayError) as refused:
            call(connection, generation("x-ai", **fields))
        assert (refused.value.status, refused.value.param, refused.value.code) == (400, param, "invalid_value")
        assert "Grok (xAI)" in refused.value.message
    assert standin.received == []


# -- Luma ------------------------------------------------------------------------------------------------


def test_luma_creates_then_polls_at_a_bounded_growing_interval(standin: StandIn) -> None:
    standin.luma_polls_until_done = 3  # dreaming, dreaming, completed
    connection = standin.connection("luma", token=TOKEN)
    started = time.monotonic()
    result = ADAPTERS["luma"].generate(connection, generation("luma", size="1920x1080", output_format="png"))
    elapsed = time.monotonic() - started
    create, *polls = standin.received
    assert (create.method, create.path) == ("POST", "/luma/dream-machine/v1/generations/image")
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.json == {
        "prompt": "A lighthouse at dawn",
        "model": "photon-1",
        "aspect_ratio": "16:9",
        "format": "png",
    }
    assert [p.method for p in polls] == ["GET"] * 3
    assert len({p.path for p in polls}) == 1 and polls[0].path.startswith("/luma/dream-machine/v1/generations/")
    # No busy loop: 0.25 s, then 0.5 s, then 1 s between looks.
    first, cap = LumaAdapter.first_poll_s, LumaAdapter.max_poll_s
    assert elapsed >= first + 2 * first + 4 * first - 0.05 and cap >= 4 * first
    (item,) = result.items
    assert item.url and item.content_type == "image/png" and item.b64_json is None
    content, content_type = http.fetch_images(connection, [item.url])[0]
    assert content_type == "image/png" and Image.open(io.BytesIO(content)).format == "PNG"


def test_luma_n_images_are_n_generations_polled_together(quick_luma: StandIn) -> None:
    result = ADAPTERS["luma"].generate(quick_luma.connection("luma"), generation("luma", n=3))
    methods = [r.method for r in quick_luma.received]
    assert methods == ["POST"] * 3 + ["GET"] * 3
    assert len({item.url for item in result.items}) == 3
    assert all(item.content_type == "image/jpeg" for item in result.items)


def test_luma_polling_stops_at_the_connection_timeout(standin: StandIn) -> None:
    standin.luma_polls_until_done = 0  # never completes
    connection = standin.connection("luma", timeout_s=1.2)
    started = time.monotonic()
    with pytest.raises(GatewayError) as timed_out:
        ADAPTERS["luma"].generate(connection, generation("luma"))
    assert (timed_out.value.status, timed_out.value.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 1.5
    assert len(standin.received) <= 4  # a create and a few spaced polls, not a busy loop
    assert not timed_out.value.retryable  # the generation was created and runs on: never create it twice


def test_luma_failed_generation_is_an_upstream_error_naming_its_reason(quick_luma: StandIn) -> None:
    quick_luma.fail_next("luma_failed")
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["luma"].generate(quick_luma.connection("luma"), generation("luma"))
    error = failed.value
    assert (error.status, error.code) == (502, "upstream_error")
    assert error.message.startswith("Luma's generation failed: Generation failed: internal error;")
    assert not error.retryable  # whether Luma bills a failed generation is not documented: no second try


def test_luma_accepts_a_base_url_that_already_names_the_api_root(quick_luma: StandIn) -> None:
    connection = quick_luma.connection("luma")
    rooted = Connection(**{**connection.__dict__, "base_url": f"{quick_luma.luma_url}/dream-machine/v1"})
    ADAPTERS["luma"].generate(rooted, generation("luma"))
    assert quick_luma.received[0].path == "/luma/dream-machine/v1/generations/image"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": "1000x300"}, "size"),
        ({"output_format": "webp"}, "output_format"),
        ({"quality": "high"}, "quality"),
        ({"style": "natural"}, "style"),
        ({"background": "transparent"}, "background"),
    ],
)
def test_luma_refuses_what_it_cannot_carry_before_any_call(
    fields: dict[str, Any], param: str, standin: StandIn
) -> None:
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["luma"].generate(standin.connection("luma"), generation("luma", **fields))
    assert (refused.value.status, refused.value.param) == (400, param)
    assert standin.received == []


@pytest.mark.parametrize("provider", ["luma", "hive"])
@pytest.mark.parametrize("quality", ["standard", "hd", "auto"])
def test_seed_quality_values_are_accepted_by_providers_without_quality(
    provider: str, quality: str, quick_luma: StandIn
) -> None:
    result = ADAPTERS[provider].generate(quick_luma.connection(provider), generation(provider, quality=quality))
    assert len(result.items) == 1
    (sent,) = [r for r in quick_luma.received if r.method == "POST"]
    assert "quality" not in (sent.json.get("input", sent.json))


# -- Hive -------------------------------------------------------------------------------------------------


def test_hive_generation_is_sent_in_hive_v3_fields(standin: StandIn) -> None:
    request = generation("hive", n=4, size="1024x768", output_format="png", output_compression=90)
    result = ADAPTERS["hive"].generate(standin.connection("hive", token=TOKEN), request)
    sent = standin.last
    assert (sent.method, sent.path) == ("POST", "/hive/api/v3/black-forest-labs/flux-schnell")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json == {
        "input": {
            "prompt": "A lighthouse at dawn",
            "num_images": 4,
            "image_size": {"width": 1024, "height": 768},
            "output_format": "png",
            "output_quality": 90,
        }
    }
    assert len(result.items) == 4 and all(i.url and i.content_type == "image/png" for i in result.items)
    valid_openai_answer(result)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 7}, "n"),
        ({"output_format": "webp"}, "output_format"),
        ({"size": "wide"}, "size"),
        ({"style": "vivid"}, "style"),
    ],
)
def test_hive_refuses_what_it_cannot_carry_before_any_call(
    fields: dict[str, Any], param: str, standin: StandIn
) -> None:
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["hive"].check_generate(standin.connection("hive"), generation("hive", **fields))
    assert (refused.value.status, refused.value.param) == (400, param)
    assert standin.received == []
