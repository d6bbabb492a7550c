"""Provider adapters against the stand-in provider: wire fidelity, answers, faults and timeouts."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from edits_api.errors import GatewayError
from edits_api.providers import ADAPTERS, adapter_for, http
from edits_api.providers.base import Connection, ImageFile, ImageRequest
from edits_api.providers.formdata import FilePart, FileRange, FormData
from edits_api.providers.gemini import GenerateContentBody, image_config
from edits_api.providers.refusal import GenerationOnlyAdapter
from entities.catalog import PROVIDERS
from tests.hostile import PNG as HOSTILE_PNG
from tests.hostile import Hostile
from tests.standin import StandIn, image_file, mask_bytes, mask_file, tls_certificate

TOKEN = "sk-live-SECRET-0123456789abcdef"
GPT = "gpt-image-1.5"
GEMINI = "gemini-3.1-flash-image"


def sha256(image: ImageFile) -> str:
    with image.open() as f:
        return hashlib.sha256(f.read()).hexdigest()


def edit(connection: Connection, tmp_path: Path, **fields: object) -> ImageRequest:
    fields.setdefault("model", GEMINI if connection.provider == "gemini" else GPT)
    fields.setdefault("images", [image_file(tmp_path)])
    return ImageRequest(prompt="Add a red hat", **fields)  # type: ignore[arg-type]


def test_adapters_cover_the_catalog_exactly() -> None:
    assert set(ADAPTERS) == set(PROVIDERS)
    for key, provider in PROVIDERS.items():
        assert isinstance(adapter_for(key), GenerationOnlyAdapter) is not provider.can_edit, key
    with pytest.raises(LookupError):
        adapter_for("nope")


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_every_adapter_edits_or_refuses_without_network(provider: str, standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection(provider, token=TOKEN)
    request = edit(connection, tmp_path)
    if not PROVIDERS[provider].can_edit:
        with pytest.raises(GatewayError) as refused:
            ADAPTERS[provider].edit(connection, request)
        assert (refused.value.status, refused.value.code) == (400, "edition_not_supported")
        assert PROVIDERS[provider].name in refused.value.message
        assert standin.received == []
        return
    result = ADAPTERS[provider].edit(connection, request)
    # The built-in local provider edits in the gateway process: nothing goes out.
    assert len(standin.received) == (1 if PROVIDERS[provider].needs_network else 0)
    assert result.created > 0
    assert len(result.items) == 1
    item = result.items[0]
    assert item.content_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))).format == "PNG"


# -- OpenAI protocol --------------------------------------------------------------------------------


@pytest.mark.parametrize("image_count", [1, 3])
def test_openai_edit_is_sent_as_the_official_sdk_sends_it(image_count: int, standin: StandIn, tmp_path: Path) -> None:
    images = [image_file(tmp_path, fmt) for fmt in ("png", "jpeg", "webp")[:image_count]]
    mask = mask_file(tmp_path)
    request = ImageRequest(
        prompt="Add a red hat",
        model=GPT,
        images=images,
        mask=mask,
        n=2,
        size="1024x1024",
        quality="high",
        input_fidelity="high",
    )
    ADAPTERS["openai"].edit(standin.connection(), request)
    ours = standin.last
    client = OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0)
    sdk_images = [Path(image.path or "") for image in images]
    client.images.edit(
        image=sdk_images[0] if image_count == 1 else sdk_images,
        mask=Path(mask.path or ""),
        prompt="Add a red hat",
        model=GPT,
        n=2,
        size="1024x1024",
        quality="high",
        input_fidelity="high",
    )
    sdk = standin.last
    assert ours.path == sdk.path == "/v1/images/edits"
    assert ours.fields == sdk.fields
    assert [(f.name, f.filename, f.content_type, f.sha256) for f in ours.files] == [
        (f.name, f.filename, f.content_type, f.sha256) for f in sdk.files
    ]
    assert ours.files[0].name == ("image" if image_count == 1 else "image[]")
    assert ours.headers["authorization"] == "Bearer sk-standin-0000"


@pytest.mark.parametrize("in_memory", [False, True])
def test_openai_edit_streams_with_a_content_length(in_memory: bool, standin: StandIn, tmp_path: Path) -> None:
    image = image_file(tmp_path, size=(1500, 1500), in_memory=in_memory)
    ADAPTERS["openai"].edit(standin.connection(), ImageRequest(prompt="p", model=GPT, images=[image]))
    received = standin.last
    assert not received.chunked and "transfer-encoding" not in received.headers
    assert received.content_length == received.body_size
    assert received.files[0].size == image.size and received.files[0].sha256 == sha256(image)


@pytest.mark.parametrize(
    ("formats", "with_mask"), [(["png"], False), (["png", "jpeg", "webp"], False), (["png"], True)]
)
@pytest.mark.parametrize("in_memory", [False, True])
def test_openai_edit_body_holds_exactly_what_was_sent(
    formats: list[str], with_mask: bool, in_memory: bool, standin: StandIn, tmp_path: Path
) -> None:
    images = [image_file(tmp_path, fmt, size=(300, 200), in_memory=in_memory) for fmt in formats]
    mask = image_file(tmp_path, filename="mask.png", data=mask_bytes(), in_memory=in_memory) if with_mask else None
    prompt = 'a "quoted"\r\nprompt ✓'
    ADAPTERS["openai"].edit(standin.connection(), ImageRequest(prompt=prompt, model=GPT, images=images, mask=mask, n=2))
    received = standin.last
    assert received.fields == {"prompt": prompt, "model": GPT, "n": "2"}
    field = "image" if len(images) == 1 else "image[]"
    parts = [(field, image) for image in images] + ([("mask", mask)] if mask else [])
    assert [(f.name, f.filename, f.content_type, f.size, f.sha256) for f in received.files] == [
        (name, image.filename, image.content_type, image.size, sha256(image)) for name, image in parts
    ]
    assert received.content_length == received.body_size and not received.chunked
    assert "transfer-encoding" not in received.headers


def test_a_filename_with_quotes_and_line_breaks_arrives_escaped(standin: StandIn, tmp_path: Path) -> None:
    filename = 'a"b\r\nX-Injected: 1\r\n\r\nc.png'
    image = image_file(tmp_path, filename=filename, in_memory=True)
    ADAPTERS["openai"].edit(standin.connection(), ImageRequest(prompt="p", model=GPT, images=[image]))
    (received,) = standin.last.files
    # As browsers and httpx escape them: the quoted string cannot end early or start a header.
    assert received.disposition == 'form-data; name="image"; filename="a%22b%0D%0AX-Injected: 1%0D%0A%0D%0Ac.png"'
    assert received.filename == filename and received.sha256 == sha256(image)
    assert standin.last.fields == {"prompt": "p", "model": GPT, "n": "1"}


def _bytes_of(body: FormData) -> bytes:
    """The body's bytes in order, its file ranges read from their files."""
    out = []
    for segment in body:
        if isinstance(segment, FileRange):
            segment.file.seek(segment.offset)
            out.append(segment.file.read(segment.count))
        else:
            out.append(segment)
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024 - 1, 1024 * 1024 + 1, 3_000_000])
def test_form_data_is_what_httpx_writes_with_an_exact_length(size: int, tmp_path: Path) -> None:
    raw = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    on_disk = image_file(tmp_path, data=raw, filename="d.png")
    in_memory = image_file(tmp_path, data=raw[:1000], filename="m.png", in_memory=True)
    fields = [("prompt", 'a "quoted"\r\nprompt ✓'), ("n", "2")]
    odd_name = 'we"ird\r\nname\\\x01.png'
    with on_disk.open() as disk, in_memory.open() as memory:
        body = FormData(
            fields, [FilePart("image[]", odd_name, disk, "image/png"), FilePart("mask", "m.png", memory, "image/png")]
        )
        sent = _bytes_of(body)
        disk.seek(0)
        memory.seek(0)
        expected = httpx.Request(
            "POST",
            "http://provider/v1/images/edits",
            headers={"Content-Type": body.content_type},
            data=dict(fields),
            files=[("image[]", (odd_name, disk, "image/png")), ("mask", ("m.png", memory, "image/png"))],
        )
        assert sent == expected.read()
    assert len(body) == len(sent) == int(expected.headers["Content-Length"])
    assert body.content_type == f"multipart/form-data; boundary={body.boundary}"
    # The file on disk stays in its file; the in-memory one is in the bytes after it.
    assert [type(segment) for segment in body] == [bytes, FileRange, bytes]


def test_response_format_is_dropped_for_gpt_image_models(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection()
    result = ADAPTERS["openai"].edit(connection, edit(connection, tmp_path, response_format="url"))
    assert "response_format" not in standin.last.fields
    assert result.items[0].b64_json and result.items[0].url is None


def test_response_format_is_forwarded_to_dall_e_2_and_its_url_can_be_inlined(standin: StandIn, tmp_path: Path) -> None:
    connection = replace(standin.connection(), allow_private_network=True)  # the stand-in is on 127.0.0.1
    result = ADAPTERS["openai"].edit(connection, edit(connection, tmp_path, model="dall-e-2", response_format="url"))
    assert standin.last.fields["response_format"] == "url"
    url = result.items[0].url or ""
    assert url.startswith(standin.url) and result.items[0].b64_json is None
    content, content_type = http.fetch_images(connection, [url])[0]
    assert content_type == "image/png" and Image.open(io.BytesIO(content)).format == "PNG"
    assert standin.last.method == "GET" and standin.last.path.startswith("/files/")
    assert "authorization" not in standin.last.headers  # pre-signed URLs get no credentials


def test_fetch_images_failures_are_502(standin: StandIn) -> None:
    connection = replace(standin.connection(), allow_private_network=True)
    with pytest.raises(GatewayError) as missing:
        http.fetch_images(connection, [f"{standin.url}/files/gone.png"])
    assert (missing.value.status, missing.value.code) == (502, "upstream_bad_response")
    assert "HTTP 404" in missing.value.message and "not found" not in missing.value.message  # no body


def test_openai_generation_sends_json_with_generation_only_fields(standin: StandIn) -> None:
    request = ImageRequest(
        prompt="a lighthouse",
        model=GPT,
        n=2,
        moderation="low",
        input_fidelity="high",
        output_format="webp",
        output_compression=80,
        response_format="b64_json",
    )
    result = ADAPTERS["openai"].generate(standin.connection(), request)
    assert standin.last.path == "/v1/images/generations"
    assert standin.last.json == {
        "prompt": "a lighthouse",
        "model": GPT,
        "n": 2,
        "moderation": "low",
        "output_format": "webp",
        "output_compression": 80,
    }
    assert [item.content_type for item in result.items] == ["image/webp", "image/webp"]
    assert result.usage and result.usage["total_tokens"] == 10 + 2 * 50
    assert result.usage["input_tokens_details"] == {"text_tokens": 10, "image_tokens": 0}


# -- Gemini protocol --------------------------------------------------------------------------------


def test_gemini_edit_matches_the_documented_request(standin: StandIn, tmp_path: Path) -> None:
    images = [image_file(tmp_path, "png"), image_file(tmp_path, "jpeg", in_memory=True)]
    connection = standin.connection("gemini", token=TOKEN)
    ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path, images=images, size="1536x1024"))
    received = standin.last
    assert received.path == f"/v1beta/models/{GEMINI}:generateContent"
    assert received.headers["x-goog-api-key"] == TOKEN
    assert "authorization" not in received.headers and received.query == {}
    assert received.json["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "3:2", "imageSize": "2K"},
    }
    (content,) = received.json["contents"]
    assert content["role"] == "user"
    assert content["parts"][0] == {"text": "Add a red hat"}
    assert [part["inlineData"]["mimeType"] for part in content["parts"][1:]] == ["image/png", "image/jpeg"]
    assert [(i.size, i.sha256) for i in received.inline_images] == [(i.size, sha256(i)) for i in images]


def test_gemini_body_is_streamed_with_an_exact_content_length(standin: StandIn, tmp_path: Path) -> None:
    image = image_file(tmp_path, size=(900, 700))
    connection = standin.connection("gemini")
    ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path, images=[image]))
    received = standin.last
    assert not received.chunked and received.content_length == received.body_size


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 196608, 196609, 500_000])
def test_gemini_body_length_is_exact_for_any_file_size(size: int, tmp_path: Path) -> None:
    raw = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    image = image_file(tmp_path, data=raw, filename="f.png")
    with GenerateContentBody('a "quoted" prompt', [image, image], {"aspectRatio": "1:1"}) as body:
        pieces = []
        while chunk := body.read(1000):
            pieces.append(chunk)
    sent = b"".join(pieces)
    assert len(sent) == len(body)
    document = json.loads(sent)
    parts = document["contents"][0]["parts"]
    assert parts[0]["text"] == 'a "quoted" prompt'
    assert [base64.b64decode(part["inlineData"]["data"]) for part in parts[1:]] == [raw, raw]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x1024", {"aspectRatio": "1:1", "imageSize": "1K"}),
        ("1536x1024", {"aspectRatio": "3:2", "imageSize": "2K"}),
        ("1024x1536", {"aspectRatio": "2:3", "imageSize": "2K"}),
        ("1000x800", {"aspectRatio": "5:4", "imageSize": "1K"}),
        ("2048x1152", {"aspectRatio": "16:9", "imageSize": "2K"}),
        ("3840x2160", {"aspectRatio": "16:9", "imageSize": "4K"}),
        ("2520x1080", {"aspectRatio": "21:9", "imageSize": "4K"}),
        ("256x4096", {"aspectRatio": "9:16", "imageSize": "4K"}),
        ("auto", {}),
        (None, {}),
    ],
)
def test_openai_size_maps_to_gemini_image_config(size: str | None, expected: dict[str, str]) -> None:
    assert image_config(size) == expected


def test_unparseable_size_is_refused_before_gemini_is_called(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection("gemini")
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path, size="big"))
    assert (refused.value.status, refused.value.param) == (400, "size")
    assert standin.received == []


def test_gemini_refuses_a_mask_before_any_call(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection("gemini")
    with pytest.raises(GatewayError) as refused:
        ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path, mask=mask_file(tmp_path)))
    error = refused.value
    assert (error.status, error.param, error.code) == (400, "mask", "invalid_value")
    assert "Google Gemini has no mask support" in error.message
    assert standin.received == []


def test_gemini_skips_thought_parts_and_its_chat_text_is_no_revised_prompt(standin: StandIn, tmp_path: Path) -> None:
    connection = standin.connection("gemini")
    result = ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path, model="gemini-3-pro-image"))
    (item,) = result.items
    assert item.revised_prompt is None  # "Here is the edited image." is chat, not a rewritten prompt
    assert item.content_type == "image/png" and item.url is None
    assert result.usage == {
        "input_tokens": 12 + 258,
        "input_tokens_details": {"text_tokens": 12, "image_tokens": 258},
        "output_tokens": 1296 + 40,  # thinking is billed as output
        "output_tokens_details": {"text_tokens": 6 + 40, "image_tokens": 1290},
        "total_tokens": 12 + 258 + 1296 + 40,
    }


def test_gemini_snake_case_answers_are_understood(standin: StandIn, tmp_path: Path) -> None:
    standin.fail_next("gemini_snake_case")
    connection = standin.connection("gemini")
    result = ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path))
    assert len(result.items) == 1 and result.items[0].b64_json
    assert result.usage is not None
    assert result.usage["input_tokens_details"] == {"text_tokens": 12, "image_tokens": 258}


def test_gemini_n_images_are_repeated_calls_with_usage_summed(standin: StandIn) -> None:
    result = ADAPTERS["gemini"].generate(standin.connection("gemini"), ImageRequest(prompt="a fox", model=GEMINI, n=3))
    assert len(standin.received) == 3 and len(result.items) == 3
    assert all(r.inline_images == [] for r in standin.received)
    assert standin.last.json["contents"][0]["parts"] == [{"text": "a fox"}]
    assert "imageConfig" not in standin.last.json["generationConfig"]
    assert result.usage == {
        "input_tokens": 36,
        "input_tokens_details": {"text_tokens": 36, "image_tokens": 0},
        "output_tokens": 3 * (1296 + 40),  # gemini-3 models think, and thinking is output
        "output_tokens_details": {"text_tokens": 3 * (6 + 40), "image_tokens": 3 * 1290},
        "total_tokens": 36 + 3 * (1296 + 40),
    }


def test_gemini_n_calls_share_one_time_budget(standin: StandIn) -> None:
    standin.fail_always("slow", seconds=0.4)
    connection = standin.connection("gemini", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(GatewayError) as timed_out:
        ADAPTERS["gemini"].generate(connection, ImageRequest(prompt="a fox", model=GEMINI, n=4))
    assert timed_out.value.code == "upstream_timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(("mode", "reason"), [("moderation", "SAFETY"), ("gemini_output_blocked", "IMAGE_SAFETY")])
def test_gemini_safety_block_is_moderation_blocked(mode: str, reason: str, standin: StandIn, tmp_path: Path) -> None:
    standin.fail_next(mode)
    connection = standin.connection("gemini")
    with pytest.raises(GatewayError) as blocked:
        ADAPTERS["gemini"].edit(connection, edit(connection, tmp_path))
    error = blocked.value
    assert (error.status, error.type, error.code) == (400, "invalid_request_error", "moderation_blocked")
    assert reason in error.message and "Google Gemini" in error.message


# -- faults, timeouts and secrets, for both protocols ------------------------------------------------

FAULTS = [
    ("500", 502, "upstream_error"),
    ("503", 502, "upstream_error"),
    ("429", 429, None),  # the upstream's own code
    ("400", 400, None),
    ("401", 502, "upstream_auth_error"),  # the provider refused the gateway's own key (contract §6)
    ("moderation", 400, "moderation_blocked"),
    ("gemini_no_image", 502, "upstream_bad_response"),
    ("shapeless", 502, "upstream_bad_response"),
    ("garbage", 502, "upstream_bad_response"),
    ("drop", 502, "upstream_error"),  # dropped after the whole request arrived: lost, not unreachable
]
UPSTREAM_CODES = {
    ("openai", "429"): "rate_limit_exceeded",
    ("gemini", "429"): "resource_exhausted",
    ("openai", "400"): "invalid_value",
    ("gemini", "400"): "invalid_argument",
}


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.parametrize(("mode", "status", "code"), FAULTS)
def test_upstream_faults_map_to_the_gateway_error(
    provider: str, mode: str, status: int, code: str | None, standin: StandIn, tmp_path: Path
) -> None:
    standin.fail_next(mode)
    connection = standin.connection(provider, token=TOKEN)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS[provider].edit(connection, edit(connection, tmp_path))
    error = failed.value
    assert (error.status, error.code) == (status, code or UPSTREAM_CODES[provider, mode])
    assert connection.provider_name in error.message
    assert TOKEN not in json.dumps(error.body()) and TOKEN not in json.dumps(error.headers)


def test_upstream_4xx_keeps_message_type_and_param(standin: StandIn, tmp_path: Path) -> None:
    standin.fail_next("400")
    connection = standin.connection()
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(connection, edit(connection, tmp_path))
    assert failed.value.body() == {
        "error": {
            "message": "OpenAI: Invalid value for size",
            "type": "invalid_request_error",
            "param": "size",
            "code": "invalid_value",
        }
    }


@pytest.mark.parametrize(
    ("provider", "mode", "retry_after"),
    [("openai", "429", "20"), ("gemini", "429", "41"), ("openai", "503", "7")],
)
def test_retry_after_is_kept(provider: str, mode: str, retry_after: str, standin: StandIn, tmp_path: Path) -> None:
    standin.fail_next(mode)
    connection = standin.connection(provider)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS[provider].edit(connection, edit(connection, tmp_path))
    assert failed.value.headers == {"Retry-After": retry_after}


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_slow_upstream_is_a_quick_504(provider: str, mode: str, standin: StandIn, tmp_path: Path) -> None:
    # "trickle" keeps every single read short, so only the whole-call deadline can stop it.
    standin.fail_next(mode, seconds=5)
    connection = standin.connection(provider, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as timed_out:
        ADAPTERS[provider].edit(connection, edit(connection, tmp_path))
    error = timed_out.value
    assert (error.status, error.type, error.code) == (504, "upstream_error", "upstream_timeout")
    assert connection.provider_name in error.message
    assert time.monotonic() - started < 1.5


def test_refused_connection_is_502_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = Connection("openai", "OpenAI", f"http://127.0.0.1:{port}/v1", TOKEN, 2.0)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(connection, edit(connection, tmp_path))
    error = failed.value
    assert (error.status, error.code) == (502, "upstream_unreachable")
    assert error.message == "OpenAI could not be reached: the connection was refused."


class SlowBody:
    """An upload that produces its bytes slowly, as a client trickling a large file would."""

    def __init__(self) -> None:
        self.reads = 0

    def __len__(self) -> int:
        return 100 * 1024

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        time.sleep(0.1)
        return b"x" * 1024 if self.reads <= 100 else b""


def test_slow_upload_is_cut_at_the_deadline(standin: StandIn) -> None:
    connection = standin.connection(timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as timed_out:
        http.send(connection, "POST", f"{standin.openai_url}/images/edits", headers={}, data=SlowBody())
    assert timed_out.value.code == "upstream_timeout"
    assert time.monotonic() - started < 1.0


# -- large uploads: files on disk go from the file to the socket ------------------------------------


def spooled_image(directory: Path, size: int) -> tuple[ImageFile, str]:
    """A file on disk of `size` bytes (written 1 MiB at a time, never whole in memory), as Django
    spools a large upload, and its sha256."""
    path, digest = directory / "big.png", hashlib.sha256()
    with path.open("wb") as out:
        for start in range(0, size, 1024 * 1024):
            block = os.urandom(min(1024 * 1024, size - start))
            digest.update(block)
            out.write(block)
    return ImageFile("big.png", "image/png", size, 4000, 3000, path=str(path)), digest.hexdigest()


def rss_peak_growth(action: Callable[[], object]) -> int:
    """How many bytes above its RSS before `action` this process's RSS peaked while doing it."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the RSS now
    before = _status_bytes("VmRSS")
    action()
    return _status_bytes("VmHWM") - before


def _status_bytes(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(name)


def test_a_large_spooled_file_is_sent_whole_without_passing_through_memory(standin: StandIn, tmp_path: Path) -> None:
    size = 20 * 1024 * 1024 + 3
    image, digest = spooled_image(tmp_path, size)
    request = ImageRequest(prompt="p", model=GPT, images=[image], mask=mask_file(tmp_path))
    # The stand-in runs in this process too and hashes the upload as it arrives, 1 MiB at a time.
    growth = rss_peak_growth(lambda: ADAPTERS["openai"].edit(standin.connection(), request))
    received = standin.last
    assert [(f.name, f.size, f.sha256) for f in received.files] == [
        ("image", size, digest),
        ("mask", len(mask_bytes()), hashlib.sha256(mask_bytes()).hexdigest()),
    ]
    assert received.content_length == received.body_size and not received.chunked
    assert growth < size // 2, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_over_tls_a_file_on_disk_is_read_and_sent_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No sendfile through TLS: the file is read 1 MiB at a time (a short last block here).
    certificate = tls_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the provider's certificate is trusted
    image, digest = spooled_image(tmp_path, 3 * 1024 * 1024 + 5)
    with StandIn(certificate) as standin:
        assert standin.openai_url.startswith("https://")
        ADAPTERS["openai"].edit(standin.connection(), ImageRequest(prompt="p", model=GPT, images=[image]))
        received = standin.last
    assert [(f.size, f.sha256) for f in received.files] == [(image.size, digest)]
    assert received.fields == {"prompt": "p", "model": GPT, "n": "1"}
    assert received.content_length == received.body_size and not received.chunked


def test_a_provider_certificate_the_gateway_does_not_trust_is_refused(tmp_path: Path) -> None:
    # Certificates are verified: a self-signed one not in SSL_CERT_FILE fails the handshake.
    with StandIn(tls_certificate(tmp_path)) as standin:
        with pytest.raises(GatewayError) as failed:
            ADAPTERS["openai"].edit(
                standin.connection(), ImageRequest(prompt="p", model=GPT, images=[image_file(tmp_path)])
            )
        assert standin.received == []
    error = failed.value
    assert (error.status, error.code) == (502, "upstream_unreachable")
    assert error.message == "OpenAI could not be reached: the TLS handshake failed."


def test_a_file_sent_in_full_leaves_the_outcome_unknown(standin: StandIn, tmp_path: Path) -> None:
    # The provider reads the whole body, then never answers: it may have processed the edit.
    standin.fail_next("hang")
    image, _ = spooled_image(tmp_path, 3 * 1024 * 1024)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(standin.connection(timeout_s=0.5), ImageRequest(prompt="p", model=GPT, images=[image]))
    error = failed.value
    assert (error.status, error.code, error.outcome_unknown) == (504, "upstream_timeout", True)
    assert standin.last.files[0].size == image.size


def test_a_provider_that_stops_reading_mid_upload_is_cut_at_the_deadline(hostile: Hostile, tmp_path: Path) -> None:
    # More than the loopback socket buffers hold, so the upload stalls once they are full.
    image, _ = spooled_image(tmp_path, 32 * 1024 * 1024)
    connection = Connection("openai", "OpenAI", hostile.url + "/stall/v1", TOKEN, 1.0)
    started = time.monotonic()
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(connection, ImageRequest(prompt="p", model=GPT, images=[image]))
    elapsed = time.monotonic() - started
    # The stalled send times out at the deadline: the provider is too slow (504, as the contract's
    # upstream_timeout), and it never had the whole request (so another provider may take it).
    error = failed.value
    assert (error.status, error.code, error.outcome_unknown) == (504, "upstream_timeout", False)
    assert error.message == "OpenAI did not take the whole request within 1 s."
    assert error.retryable
    assert 0.9 < elapsed < 2.0


@pytest.mark.parametrize("base_url", ["ftp://example.com/v1", "no-scheme/v1"])
def test_malformed_base_url_is_502_unreachable(base_url: str, tmp_path: Path) -> None:
    connection = Connection("openai", "OpenAI", base_url, TOKEN, 2.0)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(connection, edit(connection, tmp_path))
    assert failed.value.code == "upstream_unreachable"
    assert failed.value.message == "OpenAI could not be reached: its URL is not a valid http(s) URL."


def test_calls_reuse_one_kept_alive_connection(standin: StandIn, tmp_path: Path) -> None:
    for provider in ("openai", "gemini", "openai"):
        connection = standin.connection(provider)
        ADAPTERS[provider].edit(connection, edit(connection, tmp_path))
    assert len({received.client_port for received in standin.received}) == 1


def test_a_kept_alive_connection_the_provider_closed_is_not_reused(hostile: Hostile, tmp_path: Path) -> None:
    # The provider closes its idle end without saying so; the next call must open a new connection
    # instead of failing on the dead one.
    connection = Connection("openai", "OpenAI", hostile.openai_url, TOKEN, 5.0)
    first = ADAPTERS["openai"].edit(connection, replace(edit(connection, tmp_path), prompt="close-when-idle"))
    time.sleep(0.5)
    second = ADAPTERS["openai"].edit(connection, edit(connection, tmp_path))
    assert len(first.items) == len(second.items) == 1
    assert hostile.api_calls == 2


def test_a_gzip_compressed_answer_is_decoded(hostile: Hostile, tmp_path: Path) -> None:
    connection = Connection("openai", "OpenAI", hostile.openai_url, TOKEN, 5.0)
    result = ADAPTERS["openai"].edit(connection, replace(edit(connection, tmp_path), prompt="gzip-answer"))
    assert [base64.b64decode(item.b64_json or "")[:8] for item in result.items] == [b"\x89PNG\r\n\x1a\n"]


@pytest.mark.parametrize("mode", ["chunked-answer", "unsized-answer"])
def test_an_answer_without_a_declared_length_is_read_to_its_end(mode: str, hostile: Hostile, tmp_path: Path) -> None:
    # Not read into a buffer sized by Content-Length (there is none): grown as the bytes come.
    connection = Connection("openai", "OpenAI", hostile.openai_url, TOKEN, 5.0)
    for _ in range(2):  # the chunked answer's connection is kept and serves the next call
        result = ADAPTERS["openai"].edit(connection, replace(edit(connection, tmp_path), prompt=mode))
        assert [base64.b64decode(item.b64_json or "") for item in result.items] == [HOSTILE_PNG]
    assert hostile.api_calls == 2


def test_an_answer_cut_short_of_its_length_is_a_lost_connection(hostile: Hostile, tmp_path: Path) -> None:
    # Not a truncated JSON parsed as if whole: the provider had the request, so the outcome is unknown.
    connection = Connection("openai", "OpenAI", hostile.openai_url, TOKEN, 5.0)
    with pytest.raises(GatewayError) as failed:
        ADAPTERS["openai"].edit(connection, replace(edit(connection, tmp_path), prompt="short-answer"))
    error = failed.value
    assert (error.status, error.code, error.outcome_unknown) == (502, "upstream_error", True)
    assert "closed the connection before answering" in error.message
