"""POST /v1/images/edits end to end: the official SDK and raw HTTP against the live gateway,
which calls the stand-in provider over real HTTP."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from openai import OpenAI
from PIL import Image

from edits_api.models import UsageRecord
from tests.gateway import PROVIDER_TOKEN, Gateway, make_image_model, make_key, make_route
from tests.standin import image_bytes, mask_bytes

PNG = image_bytes("png", (64, 64))


def sdk(gateway: Gateway, api_key: str = "client-key-unused") -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def png_file(name: str = "photo.png", data: bytes = PNG) -> tuple[str, bytes, str]:
    return (name, data, "image/png")


# -- the official SDK as the client -------------------------------------------------------------


def test_sdk_edit_with_one_image_reaches_openai_with_prompt_and_image(gateway: Gateway) -> None:
    result = sdk(gateway).images.edit(image=("photo.png", PNG, "image/png"), prompt="add a red hat")

    assert result.data[0].b64_json
    Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).verify()
    sent = gateway.standin.last
    assert sent.path == "/v1/images/edits"
    assert sent.fields["prompt"] == "add a red hat"
    assert sent.fields["model"] == "gpt-image-1"  # the entity's default
    assert [(f.name, f.content_type) for f in sent.files] == [("image", "image/png")]
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_TOKEN}"
    assert result.usage is not None and result.usage.total_tokens == 100


def test_sdk_edit_with_several_images_and_a_mask_forwards_all_parts(gateway: Gateway) -> None:
    jpeg = image_bytes("jpeg", (64, 64))
    sdk(gateway).images.edit(
        image=[("a.png", PNG, "image/png"), ("b.jpg", jpeg, "image/jpeg")],
        mask=("mask.png", mask_bytes((64, 64)), "image/png"),
        prompt="merge them",
    )

    sent = gateway.standin.last
    assert [(f.name, f.content_type) for f in sent.files] == [
        ("image[]", "image/png"),
        ("image[]", "image/jpeg"),
        ("mask", "image/png"),
    ]


def test_sdk_edit_with_n_2_returns_two_images(gateway: Gateway) -> None:
    result = sdk(gateway).images.edit(image=("p.png", PNG, "image/png"), prompt="twice", n=2)

    assert len(result.data) == 2
    assert gateway.standin.last.fields["n"] == "2"


def test_sdk_response_format_url_gives_a_signed_link_on_the_gateway(gateway: Gateway) -> None:
    result = sdk(gateway).images.edit(image=("p.png", PNG, "image/png"), prompt="hat", response_format="url")

    url = result.data[0].url
    assert url and url.startswith(gateway.url + "/images/")
    assert result.data[0].b64_json is None
    assert "response_format" not in gateway.standin.last.fields  # gpt-image rejects it
    fetched = requests.get(url, timeout=10)  # no key needed
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    Image.open(io.BytesIO(fetched.content)).verify()
    tampered = requests.get(url[:-3] + "xyz", timeout=10)
    assert tampered.status_code == 404


def test_sdk_b64_json_from_a_url_provider_is_fetched_and_inlined(gateway: Gateway) -> None:
    result = sdk(gateway).images.edit(
        image=("p.png", PNG, "image/png"), prompt="hat", model="dall-e-2", response_format="b64_json"
    )

    assert result.data[0].url is None
    Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or ""))).verify()
    assert gateway.standin.received[0].fields["response_format"] == "b64_json"


def test_wire_fidelity_gateway_sends_what_the_sdk_sends_directly(gateway: Gateway) -> None:
    """The same edit straight from the SDK to the stand-in and through the gateway."""
    kwargs = dict(
        image=[("a.png", PNG, "image/png"), ("b.png", PNG, "image/png")],
        mask=("m.png", mask_bytes((64, 64)), "image/png"),
        prompt="a very specific prompt ✓",
        model="gpt-image-1",
        n=2,
        size="1024x1536",
        quality="high",
        background="opaque",
        output_format="webp",
        output_compression=80,
        input_fidelity="high",
        user="user-42",
    )
    OpenAI(base_url=gateway.standin.openai_url, api_key="sk-direct", max_retries=0).images.edit(**kwargs)
    direct = gateway.standin.last
    sdk(gateway).images.edit(**kwargs)
    through = gateway.standin.last

    assert through.fields == direct.fields
    assert [(f.name, f.content_type, f.sha256) for f in through.files] == [
        (f.name, f.content_type, f.sha256) for f in direct.files
    ]
    assert through.content_length is not None and not through.chunked


def test_model_prefix_sends_the_edit_to_gemini_natively(gateway: Gateway) -> None:
    response = gateway.edit(
        files=[("image", png_file())], data={"prompt": "hat", "model": "img-gemini/gemini-3.1-flash-image"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Image-Model"] == "img-gemini"
    sent = gateway.standin.last
    assert sent.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert sent.headers["x-goog-api-key"] == PROVIDER_TOKEN
    parts = sent.json["contents"][0]["parts"]
    assert parts[0] == {"text": "hat"}
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == PNG
    body = response.json()
    assert set(body["data"][0]) == {"url", "b64_json", "revised_prompt"}


def test_answer_names_route_and_image_model_and_is_recorded(gateway: Gateway) -> None:
    response = gateway.edit(files=[("image", png_file())], data={"prompt": "hat"})

    assert response.status_code == 200
    assert response.headers["X-Gateway-Route"] == "images"
    assert response.headers["X-Gateway-Image-Model"] == "img-openai"
    record = UsageRecord.objects.get()
    assert (record.route_id, record.image_model_id, record.status, record.images) == (
        "images",
        "img-openai",
        200,
        1,
    )
    assert record.usage["total_tokens"] == 100


# -- bad input: 4xx in the OpenAI shape, and the provider never called --------------------------

BOMB = bytes.fromhex("89504e470d0a1a0a0000000d494844520000fde80000fde80806000000")  # 65000x65000 header


@pytest.mark.parametrize(
    ("files", "data", "status", "code", "param"),
    [
        ([("image", png_file())], {}, 400, "missing_required_parameter", "prompt"),
        ([], {"prompt": "x"}, 400, "missing_required_parameter", "image"),
        ([("image", ("a.png", b"not an image at all", "image/png"))], {"prompt": "x"}, 400, "invalid_image", "image"),
        ([("image", ("a.gif", b"GIF89a" + b"\0" * 40, "image/gif"))], {"prompt": "x"}, 400, "invalid_image", "image"),
        ([("image", ("bomb.png", BOMB, "image/png"))], {"prompt": "x"}, 400, "invalid_image", "image"),
        (
            [("image", png_file()), ("mask", ("m.png", mask_bytes((32, 32)), "image/png"))],
            {"prompt": "x"}, 400, "invalid_image", "mask",
        ),
        (
            [("image", png_file()), ("mask", ("m.jpg", image_bytes("jpeg", (64, 64)), "image/jpeg"))],
            {"prompt": "x"}, 400, "invalid_image", "mask",
        ),
        ([("image", png_file())], {"prompt": "x", "n": "11"}, 400, "invalid_value", "n"),
        ([("image", png_file())], {"prompt": "x", "n": "two"}, 400, "invalid_value", "n"),
        ([("image", png_file())], {"prompt": "x", "size": "999x999"}, 400, "invalid_value", "size"),
        ([("image", png_file())], {"prompt": "x", "quality": "ultra"}, 400, "invalid_value", "quality"),
        ([("image", png_file())], {"prompt": "x", "background": "pink"}, 400, "invalid_value", "background"),
        ([("image", png_file())], {"prompt": "x", "output_format": "gif"}, 400, "invalid_value", "output_format"),
        (
            [("image", png_file())], {"prompt": "x", "output_format": "png", "output_compression": "50"},
            400, "invalid_value", "output_compression",
        ),
        (
            [("image", png_file())], {"prompt": "x", "output_format": "jpeg", "output_compression": "101"},
            400, "invalid_value", "output_compression",
        ),
        ([("image", png_file())], {"prompt": "x", "input_fidelity": "max"}, 400, "invalid_value", "input_fidelity"),
        (
            [("image", png_file())], {"prompt": "x", "model": "gpt-image-1-mini", "input_fidelity": "high"},
            400, "invalid_value", "input_fidelity",
        ),
        ([("image", png_file())], {"prompt": "x", "response_format": "jpeg"}, 400, "invalid_value", "response_format"),
        ([("image", png_file())], {"prompt": "x" * 32001}, 400, "invalid_value", "prompt"),
        ([("image", png_file())], {"prompt": "x" * 1001, "model": "dall-e-2"}, 400, "invalid_value", "prompt"),
        (
            [("image", png_file("w.png", image_bytes("png", (64, 32))))], {"prompt": "x", "model": "dall-e-2"},
            400, "invalid_image", "image",
        ),
        ([("image", png_file())], {"prompt": "x", "stream": "true"}, 400, "invalid_value", "stream"),
        ([("image", png_file())], {"prompt": "x", "colour": "red"}, 400, "unknown_parameter", "colour"),
        ([("image", png_file()), ("photo", png_file())], {"prompt": "x"}, 400, "unknown_parameter", "photo"),
        ([("image", png_file())] * 17, {"prompt": "x"}, 400, "invalid_value", "image"),
        (
            [("image", png_file()), ("mask", ("m.png", mask_bytes((64, 64)), "image/png"))],
            {"prompt": "x", "model": "img-gemini/gemini-3.1-flash-image"}, 400, "invalid_value", "mask",
        ),
        ([("image", png_file())], {"prompt": "x", "model": "nope###gpt-image-1"}, 404, "model_not_found", "model"),
        ([("image", png_file())], {"prompt": "x", "provider": "nope"}, 400, "invalid_value", "provider"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_any_provider_call(
    gateway: Gateway, files: list, data: dict, status: int, code: str, param: str
) -> None:
    # With no file, still send multipart (requests would fall back to urlencoded).
    form = files or [(key, (None, value)) for key, value in data.items()]
    response = gateway.edit(files=form, data=data if files else None)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"] and error["type"]
    assert gateway.standin.received == []


def test_json_body_gets_415(gateway: Gateway) -> None:
    response = requests.post(gateway.url + "/v1/images/edits", json={"prompt": "x"}, timeout=10)

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_get_gets_405_in_the_openai_shape(gateway: Gateway) -> None:
    response = requests.get(gateway.url + "/v1/images/edits", timeout=10)

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "POST"  # OPTIONS is refused as well: only POST is served
    assert requests.options(gateway.url + "/v1/images/edits", timeout=10).status_code == 405


def test_broken_multipart_body_gets_400(gateway: Gateway) -> None:
    response = requests.post(
        gateway.url + "/v1/images/edits",
        data=b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhat\r\n--xy',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=10,
    )

    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_edition_disabled_entity_gets_403_and_non_editing_provider_400(gateway: Gateway) -> None:
    off = make_image_model("img-off", "openai", gateway.standin, edition={"enabled": False})
    azure = make_image_model(
        "img-azure", "azure-openai", gateway.standin, base_url="", connection_extra={"resource_name": "r"}
    )
    make_route("off", ["localhost/off"], [off])
    make_route("azure", ["localhost/azure"], [azure])

    disabled = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, path="/off/v1/images/edits")
    refused = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, path="/azure/v1/images/edits")

    assert (disabled.status_code, disabled.json()["error"]["code"]) == (403, "edition_disabled")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "edition_not_supported")
    assert "Azure OpenAI" in refused.json()["error"]["message"]
    assert gateway.standin.received == []


def test_models_include_and_exclude_are_enforced(gateway: Gateway) -> None:
    limited = make_image_model(
        "img-limited",
        "openai",
        gateway.standin,
        models_include=["gpt-image-.*"],
        models_exclude=["gpt-image-1-mini"],
    )
    make_route("limited", ["localhost/limited"], [limited])

    for model, status in (("gpt-image-1", 200), ("gpt-image-1-mini", 403), ("dall-e-2", 403)):
        response = gateway.edit(
            files=[("image", png_file())],
            data={"prompt": "x", "model": model},
            path="/limited/v1/images/edits",
        )
        assert response.status_code == status, (model, response.text)
        if status == 403:
            assert response.json()["error"]["code"] == "model_not_allowed"


# -- routes ---------------------------------------------------------------------------------------


def test_longest_prefix_and_exact_host_win(gateway: Gateway) -> None:
    other = make_image_model("img-other", "openai", gateway.standin)
    make_route("tenant", ["localhost/tenant"], [other])
    make_route("tenant-deep", ["localhost/tenant/deep"], [other])
    make_route("anyhost", ["*/tenant"], [other])

    def route_of(path: str, host: str = "localhost") -> str | None:
        response = gateway.edit(data={"prompt": "x"}, files=[("image", png_file())], path=path,
                                headers={"Host": host})  # fmt: skip
        return response.headers.get("X-Gateway-Route") if response.status_code != 404 else None

    assert route_of("/v1/images/edits") == "images"
    assert route_of("/tenant/v1/images/edits") == "tenant"
    assert route_of("/tenant/deep/v1/images/edits") == "tenant-deep"
    assert route_of("/tenant/v1/images/edits", host="elsewhere.example") == "anyhost"
    assert route_of("/tenantx/v1/images/edits") is None
    assert route_of("/v1/images/edits", host="elsewhere.example") is None


def test_unknown_or_disabled_route_gets_404_route_not_found(gateway: Gateway) -> None:
    off = make_route("disabled", ["localhost/disabled"], [], enabled=False)
    assert not off.enabled

    for path in ("/disabled/v1/images/edits", "/nowhere/v1/images/edits"):
        response = gateway.edit(data={"prompt": "x"}, files=[("image", png_file())], path=path,
                                headers={"Host": "unknown.example"})  # fmt: skip
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "route_not_found"


def test_route_with_a_key_needs_it(gateway: Gateway) -> None:
    make_key("client", "gw-client-secret-0123456789", [gateway.route])
    files, data = [("image", png_file())], {"prompt": "x"}

    missing = gateway.edit(files=files, data=data)
    wrong = gateway.edit(files=files, data=data, headers={"Authorization": "Bearer gw-wrong-secret-000000000"})
    bearer = gateway.edit(files=files, data=data, headers={"Authorization": "Bearer gw-client-secret-0123456789"})
    api_key = gateway.edit(files=files, data=data, headers={"api-key": "gw-client-secret-0123456789"})

    assert [r.status_code for r in (missing, wrong, bearer, api_key)] == [401, 401, 200, 200]
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert "authorization" in gateway.standin.last.headers
    assert "gw-client-secret" not in str(gateway.standin.last.headers)  # the client's key stays here
    assert UsageRecord.objects.filter(api_key_id="client", status=200).count() == 2


# -- upstream faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("500", 502, "upstream_error"),
        ("503", 502, "upstream_error"),
        ("429", 429, None),
        ("400", 400, None),
        ("401", 502, "upstream_auth_error"),  # the provider refused the gateway's key, not the client's
        ("moderation", 400, "moderation_blocked"),
        ("garbage", 502, "upstream_bad_response"),
        ("shapeless", 502, "upstream_bad_response"),
        ("drop", 502, None),
    ],
)
def test_openai_faults_get_the_right_status_and_name_the_provider(
    gateway: Gateway, mode: str, status: int, code: str | None
) -> None:
    gateway.standin.fail_next(mode)

    response = gateway.edit(files=[("image", png_file())], data={"prompt": "x"})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code:
        assert error["code"] == code
    assert "OpenAI" in error["message"]
    assert PROVIDER_TOKEN not in response.text
    assert UsageRecord.objects.get().status == status


@pytest.mark.parametrize("mode", ["nan", "lone_surrogate"])
def test_an_odd_but_readable_answer_is_served_and_the_client_gets_strict_json(gateway: Gateway, mode: str) -> None:
    # Python's json.dumps writes NaN, which RFC 8259 does not allow; "\ud800" is a JSON escape of
    # a character UTF-8 cannot carry. The provider made (and billed) the image, so it is served;
    # what the client gets is JSON any strict parser reads.
    gateway.standin.fail_next(mode)
    headers = {"Idempotency-Key": f"odd-{mode}"}

    response = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, headers=headers)
    replayed = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, headers=headers)

    assert response.status_code == 200, response.text
    body = json.loads(response.content, parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG")
    assert set(UsageRecord.objects.values_list("status", flat=True)) == {200}  # served, then replayed
    # The answer kept for the Idempotency-Key reads back the same.
    assert replayed.status_code == 200, replayed.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert json.loads(replayed.content) == body
    assert len(gateway.standin.received) == 1


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("moderation", 400, "moderation_blocked"), ("gemini_output_blocked", 400, "moderation_blocked"),
     ("gemini_no_image", 502, "upstream_bad_response"), ("500", 502, "upstream_error")],
)  # fmt: skip
def test_gemini_faults(gateway: Gateway, mode: str, status: int, code: str) -> None:
    gateway.standin.fail_next(mode)

    response = gateway.edit(files=[("image", png_file())], data={"prompt": "x", "model": "img-gemini###"})

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "Gemini" in response.json()["error"]["message"]


def test_slow_provider_gets_504_within_the_entity_timeout(gateway: Gateway) -> None:
    fast = make_image_model("img-fast-timeout", "openai", gateway.standin, timeout_ms=500)
    make_route("slow", ["localhost/slow"], [fast])
    gateway.standin.fail_next("hang")

    response = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, path="/slow/v1/images/edits")

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.elapsed.total_seconds() < 3


def test_refused_port_gets_502_unreachable(gateway: Gateway) -> None:
    dead = make_image_model("img-dead", "openai", gateway.standin, base_url="http://127.0.0.1:9/v1")
    make_route("dead", ["localhost/dead"], [dead])

    response = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, path="/dead/v1/images/edits")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


# -- upload limits --------------------------------------------------------------------------------


def test_content_length_over_the_limit_gets_413_without_a_provider_call(gateway: Gateway) -> None:
    make_route("small", ["localhost/small"], [gateway.route.refs.first().image_model], max_size_upload=10_000)
    big = image_bytes("png", (400, 400))
    assert len(big) > 1000

    response = gateway.edit(
        files=[("image", png_file("big.png", big + b"\0" * 20_000))],
        data={"prompt": "x"},
        path="/small/v1/images/edits",
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert gateway.standin.received == []


def test_body_just_under_the_limit_passes(gateway: Gateway) -> None:
    files, data = [("image", png_file())], {"prompt": "x"}
    size = len(requests.Request("POST", "http://x", files=files, data=data).prepare().body)
    make_route("exact", ["localhost/exact"], [gateway.route.refs.first().image_model], max_size_upload=size)

    response = requests.Session().send(
        requests.Request("POST", gateway.url + "/exact/v1/images/edits", files=files, data=data).prepare()
    )

    assert response.status_code == 200, response.text


def test_a_token_that_cannot_be_decrypted_fails_only_its_own_entity(gateway: Gateway) -> None:
    from django.db import connection

    broken = make_image_model("img-broken", "openai", gateway.standin)
    make_route("broken", ["localhost/broken"], [broken])
    with connection.cursor() as cursor:  # as if written under an encryption key since lost
        cursor.execute("UPDATE entities_imagemodel SET token = 'gAAAAAnotavalidtoken' WHERE id = 'img-broken'")
    from edits_api.routing import invalidate_route_table

    invalidate_route_table()

    broken_answer = gateway.edit(files=[("image", png_file())], data={"prompt": "x"}, path="/broken/v1/images/edits")
    healthy_answer = gateway.edit(files=[("image", png_file())], data={"prompt": "x"})

    assert broken_answer.status_code == 502
    assert broken_answer.json()["error"]["code"] == "upstream_misconfigured"
    assert healthy_answer.status_code == 200


def test_purge_expired_deletes_old_images_and_keeps_fresh_ones(gateway: Gateway, settings, tmp_path) -> None:
    import os
    import time as clock

    from django.core.management import call_command

    settings.MEDIA_ROOT = str(tmp_path)
    result = sdk(gateway).images.edit(image=("p.png", PNG, "image/png"), prompt="hat", response_format="url")
    stored = next((tmp_path / "images").iterdir())
    old = stored.with_name("old.png")
    old.write_bytes(PNG)
    past = clock.time() - settings.SIGNED_URL_MAX_AGE - 60
    os.utime(old, (past, past))

    out = io.StringIO()
    call_command("purge_expired", stdout=out)

    assert "deleted 1 expired images" in out.getvalue()
    assert stored.exists() and not old.exists()
    assert requests.get(result.data[0].url or "", timeout=10).status_code == 200
