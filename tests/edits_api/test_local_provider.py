"""The built-in `local` demo provider: edits through the live gateway (same checks, ledger and answer
as any provider), with no token, no base URL and no network; generations from the adapter."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from openai import OpenAI
from PIL import Image

from edits_api.errors import GatewayError
from edits_api.models import UsageRecord
from edits_api.providers import ADAPTERS
from edits_api.providers.base import Connection, ImageRequest
from edits_api.providers.local import MAX_OUTPUT_SIDE
from entities.models import ImageModel, Route, RouteRef
from tests.standin import image_bytes, mask_bytes

RED = (200, 40, 40)


@dataclass
class Local:
    url: str

    def edit(self, prompt: str, image: bytes | None = None, **data: Any) -> requests.Response:
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("image", ("photo.png", image or image_bytes(), "image/png"))
        ]
        if "mask" in data:
            files.append(("mask", ("mask.png", data.pop("mask"), "image/png")))
        for extra in data.pop("more_images", []):
            files.append(("image", ("more.png", extra, "image/png")))
        return requests.post(f"{self.url}/v1/images/edits", files=files, data={"prompt": prompt, **data}, timeout=30)

    def images(self, response: requests.Response) -> list[Image.Image]:
        assert response.status_code == 200, response.text
        return [Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) for item in response.json()["data"]]


@pytest.fixture
def local(live_server: Any, transactional_db: None) -> Iterator[Local]:
    """A route on localhost whose only ref is a `local` image model with an empty connection."""
    image_model = ImageModel(
        id="demo-local", name="Local", provider="local", edition={"enabled": True}, generation={"enabled": True}
    )
    image_model.full_clean()
    image_model.save()
    route = Route(
        id="local",
        name="local",
        domains=["localhost", "127.0.0.1"],
        edit_plugin_enabled=True,
        generation_plugin_enabled=True,
    )
    route.full_clean()
    route.save()
    RouteRef.objects.create(route=route, plugin=RouteRef.EDIT, image_model=image_model, position=0)
    RouteRef.objects.create(route=route, plugin=RouteRef.GENERATION, image_model=image_model, position=0)
    yield Local(live_server.url)


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(image.convert("RGB").getpixel(xy))  # type: ignore[arg-type]


def test_grayscale_edit_needs_no_token_and_is_recorded_like_any_provider(local: Local) -> None:
    response = local.edit("make it grayscale")

    [image] = local.images(response)
    assert image.format == "PNG" and image.size == (64, 64)
    red, green, blue = pixel(image, (10, 10))
    assert red == green == blue and red not in (0, 255)
    body = response.json()
    assert body["data"][0]["url"] is None and "grayscale" in body["data"][0]["revised_prompt"]
    assert response.headers["X-Gateway-Image-Model"] == "demo-local"
    record = UsageRecord.objects.get()
    assert (record.provider, record.model, record.status, record.images) == ("local", "pillow", 200, 1)


def test_operations_apply_in_the_order_the_prompt_names_them(local: Local) -> None:
    two_tone = Image.new("RGB", (64, 32), RED)
    two_tone.paste((20, 20, 220), (0, 0, 16, 32))  # blue on the left quarter
    buffer = io.BytesIO()
    two_tone.save(buffer, format="PNG")

    [rotated] = local.images(local.edit("rotate 90", buffer.getvalue()))
    [mirrored] = local.images(local.edit("mirror it", buffer.getvalue()))
    [inverted] = local.images(local.edit("invert the colours", buffer.getvalue()))

    assert rotated.size == (32, 64)
    assert pixel(rotated, (16, 5)) == (20, 20, 220)  # clockwise: the left edge is now on top
    assert pixel(mirrored, (60, 16)) == (20, 20, 220) and pixel(mirrored, (2, 16)) == RED
    assert pixel(inverted, (40, 16)) == (55, 215, 215)


@pytest.mark.parametrize("prompt", ["blur it", "sharpen", "sepia tone please", "flip it upside down"])
def test_each_named_operation_changes_the_image(local: Local, prompt: str) -> None:
    source = Image.new("RGB", (64, 64), RED)
    source.paste((255, 255, 255), (20, 0, 44, 20))
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")

    [edited] = local.images(local.edit(prompt, buffer.getvalue()))

    assert edited.size == (64, 64)
    assert edited.convert("RGB").tobytes() != source.tobytes()


def test_a_prompt_naming_no_operation_is_written_onto_the_image(local: Local) -> None:
    response = local.edit("add a red hat to the person", image_bytes(size=(256, 256)))

    [image] = local.images(response)
    assert pixel(image, (128, 10)) == RED  # the top is untouched
    bottom = {pixel(image, (x, y)) for x in range(0, 256, 2) for y in range(200, 256, 2)}
    assert any(min(p) > 150 for p in bottom)  # white letters on a dark band
    assert "prompt written" in response.json()["data"][0]["revised_prompt"]


def test_only_the_pixels_where_the_mask_is_transparent_change(local: Local) -> None:
    [image] = local.images(local.edit("invert", mask=mask_bytes((64, 64))))

    assert pixel(image, (5, 32)) == (55, 215, 215)  # left half: transparent in the mask, edited
    assert pixel(image, (60, 32)) == RED  # right half: opaque in the mask, kept


def test_n_size_and_output_format_are_honoured(local: Local) -> None:
    response = local.edit("grayscale", n="3", size="256x128", output_format="jpeg", output_compression="80")

    images = local.images(response)
    assert len(images) == 3
    assert {(image.format, image.size) for image in images} == {("JPEG", (256, 128))}
    [webp] = local.images(local.edit("grayscale", output_format="webp"))
    assert webp.format == "WEBP"


def test_several_images_all_show_in_the_result(local: Local) -> None:
    blue = image_bytes(size=(64, 64), color=(20, 20, 220))

    [image] = local.images(local.edit("make it monochrome", image_bytes(size=(128, 128)), more_images=[blue]))

    assert image.size == (128, 128)
    corner = pixel(image, (120, 120))
    assert corner[0] == corner[1] == corner[2] and corner != pixel(image, (10, 10))  # the thumbnail, in gray


def test_the_official_sdk_gets_a_signed_url_to_the_edited_image(local: Local) -> None:
    client = OpenAI(base_url=f"{local.url}/v1", api_key="unused-on-an-open-route")

    result = client.images.edit(image=("photo.png", image_bytes(), "image/png"), prompt="sepia", response_format="url")

    assert result.data is not None and result.data[0].url is not None
    fetched = requests.get(result.data[0].url, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"size": f"{MAX_OUTPUT_SIDE * 2}x{MAX_OUTPUT_SIDE}"}, "size"),
        ({"prompt": "resize to 4000x4000"}, "prompt"),
    ],
)
def test_outputs_above_the_cap_are_refused_with_a_clear_400(local: Local, fields: dict[str, str], param: str) -> None:
    response = local.edit(fields.pop("prompt", "grayscale"), **fields)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and "local demo provider" in error["message"]
    assert str(MAX_OUTPUT_SIDE) in error["message"]


def test_inputs_above_16_megapixels_are_refused_before_decoding(local: Local) -> None:
    big = Image.new("RGB", (5000, 4000), RED)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG", compress_level=1)

    response = local.edit("grayscale", buffer.getvalue())

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"
    assert "16 megapixels" in response.json()["error"]["message"]


# -- generations ----------------------------------------------------------------------------------


def test_generation_through_the_gateway_answers_a_drawn_image_and_is_recorded(local: Local) -> None:
    client = OpenAI(base_url=f"{local.url}/v1", api_key="unused-on-an-open-route")

    result = client.images.generate(prompt="a lighthouse at dusk", size="512x512", n=2, output_format="jpeg")

    assert result.data is not None and len(result.data) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in result.data]
    assert {(image.format, image.size) for image in images} == {("JPEG", (512, 512))}
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.provider, record.status, record.images) == ("generations", "local", 200, 2)


CONNECTION = Connection(provider="local", provider_name="Local demo", base_url="", token="", timeout_s=10)


def generated(prompt: str, **fields: Any) -> list[bytes]:
    result = ADAPTERS["local"].generate(CONNECTION, ImageRequest(prompt=prompt, model="pillow", **fields))
    return [base64.b64decode(item.b64_json or "") for item in result.items]


def test_generation_draws_the_same_image_for_the_same_prompt() -> None:
    first, again, other = generated("a fox in the snow"), generated("a fox in the snow"), generated("a cat")

    assert first == again
    assert first != other
    image = Image.open(io.BytesIO(first[0]))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_generation_honours_n_size_and_output_format() -> None:
    images = generated("a fox", n=2, size="512x256", output_format="webp")

    assert len(images) == 2 and images[0] != images[1]  # n variations, not n copies
    assert {Image.open(io.BytesIO(data)).size for data in images} == {(512, 256)}
    assert Image.open(io.BytesIO(images[0])).format == "WEBP"


def test_generation_above_the_cap_is_refused() -> None:
    with pytest.raises(GatewayError) as refused:
        generated("a fox", size="4096x4096")
    assert (refused.value.status, refused.value.param) == (400, "size")
