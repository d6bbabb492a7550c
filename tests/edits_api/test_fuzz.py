"""Schemathesis against the live gateway, driven by the gateway's own /openapi.json: no input,
valid or not, gets a 5xx (the stand-in answers normally, so any 5xx is ours), and every error
answer is the OpenAI envelope the schema documents."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from entities.models import ImageModel, Route, RouteRef
from tests.gateway import Gateway
from tests.standin import image_bytes, mask_bytes

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # more for a deeper, slower run
# Random bytes are never an image; real ones take some cases past the checks to the stand-in.
REAL_IMAGES = [image_bytes("png"), image_bytes("jpeg"), image_bytes("webp"), image_bytes("png", (256, 256))]
REAL_MASKS = [mask_bytes((64, 64)), mask_bytes((32, 32))]
FUZZING = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def test_openapi_json_describes_only_the_public_image_operations_and_the_admin_api(gateway: Gateway) -> None:
    response = requests.get(gateway.url + "/openapi.json", timeout=10)

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    # The admin REST API is described too (tests/entities/test_api.py checks its operations).
    image_paths = [path for path in document["paths"] if not path.startswith("/api/v1/")]
    assert image_paths == ["/v1/images/edits", "/v1/images/generations"]
    operation = document["paths"]["/v1/images/edits"]["post"]
    form = document["components"]["schemas"]["ImageEditRequest"]
    assert list(operation["requestBody"]["content"]) == ["multipart/form-data"]
    assert form["required"] == ["prompt"]
    assert form["properties"]["image[]"]["items"]["format"] == "binary"
    expected = {"200", "400", "401", "403", "404", "405", "413", "415", "429", "502", "503", "504"}
    assert set(operation["responses"]) == expected
    generation = document["paths"]["/v1/images/generations"]["post"]
    assert list(generation["requestBody"]["content"]) == ["application/json"]
    body = document["components"]["schemas"]["ImageGenerationRequest"]
    assert body["required"] == ["prompt"]
    assert "xhigh" in document["components"]["schemas"]["QualityEnum"]["enum"]  # value sets: the SDK's types
    error = operation["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert error == "#/components/schemas/Error"


def test_docs_page_serves_swagger_ui_from_the_gateway_itself(gateway: Gateway) -> None:
    page = requests.get(gateway.url + "/docs", timeout=10)

    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assets = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assets += [part.split('"')[0] for part in page.text.split('href="')[1:]]
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    for asset in assets:
        assert requests.get(gateway.url + asset, timeout=10).status_code == 200, asset


def _with_real_files(case: Any, data: st.DataObject) -> Any:
    body = case.body
    if isinstance(body, dict) and data.draw(st.booleans()):
        body["image"] = data.draw(st.sampled_from(REAL_IMAGES))
        if "mask" in body and data.draw(st.booleans()):
            body["mask"] = data.draw(st.sampled_from(REAL_MASKS))
    if isinstance(body, dict) and isinstance(body.get("image[]"), list) and data.draw(st.booleans()):
        body["image[]"] = [data.draw(st.sampled_from(REAL_IMAGES)) for _ in body["image[]"]]
    return case


def test_fuzzed_edits_never_get_a_5xx_and_every_error_has_the_envelope(
    gateway: Gateway, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.MEDIA_ROOT = tmp_path  # response_format=url stores images
    schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json", timeout=10)
    operation = schema["/v1/images/edits"]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @FUZZING
    @given(case=cases, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        case = _with_real_files(case, data)
        response = case.call(base_url=gateway.url, session=session, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)
        if response.status_code >= 300:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, response.text
            assert isinstance(error["message"], str) and error["message"]
            codes[error["code"]] += 1

    with requests.Session() as session:
        run()

    with capsys.disabled():  # the figures show in every run's output
        print(f"\nfuzzed {sum(statuses.values())} requests; statuses {dict(statuses)}; error codes {dict(codes)}")
    assert sum(statuses.values()) >= MAX_EXAMPLES // 2
    assert not any(status >= 500 for status in statuses)
    assert statuses[200] > 0, "no fuzzed request reached the stand-in"


def test_fuzzed_generations_never_get_a_5xx_and_every_error_has_the_envelope(
    gateway: Gateway, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.MEDIA_ROOT = tmp_path
    openai = ImageModel.objects.get(id="img-openai")
    openai.generation = {"enabled": True}
    openai.save()
    Route.objects.filter(id=gateway.route.id).update(generation_plugin_enabled=True)
    RouteRef.objects.create(route=gateway.route, plugin=RouteRef.GENERATION, image_model=openai, position=0)
    schema = schemathesis.openapi.from_url(gateway.url + "/openapi.json", timeout=10)
    operation = schema["/v1/images/generations"]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: Counter[int] = Counter()
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @FUZZING
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call(base_url=gateway.url, session=session, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)
        if response.status_code >= 300:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, response.text
            assert isinstance(error["message"], str) and error["message"]

    with requests.Session() as session:
        run()

    with capsys.disabled():
        print(f"\nfuzzed {sum(statuses.values())} generations; statuses {dict(statuses)}")
    assert not any(status >= 500 for status in statuses)
    assert statuses[200] > 0, "no fuzzed generation reached the stand-in"
