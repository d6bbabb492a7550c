"""The admin playground: a staff user runs an edit or a generation on a route through the real
service, against stand-in providers, and the page shows the images, who served and the answer."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from PIL import Image

from edits_api.models import UsageRecord
from entities.models import Route
from tests.gateway import PROVIDER_TOKEN, make_image_model, make_route
from tests.standin import StandIn, image_bytes, mask_bytes

pytestmark = pytest.mark.django_db
URL = "/admin/playground/"


@pytest.fixture
def admin_client(client: Client) -> Client:
    """A superuser's session (no password: hashing one costs a second per test)."""
    client.force_login(get_user_model().objects.create_superuser("admin", password=None))
    return client


@pytest.fixture
def route(standin: StandIn) -> Route:
    openai = make_image_model("img-openai", "openai", standin, edition={"enabled": True, "model": "gpt-image-1"})
    gemini = make_image_model("img-gemini", "gemini", standin, generation={"enabled": True})
    return make_route("images", ["localhost"], [openai, gemini], generation_refs=[gemini, openai])


def upload(name: str, data: bytes) -> io.BytesIO:
    file = io.BytesIO(data)
    file.name = name
    return file


def run(client: Client, **fields: Any) -> str:
    data = {"route": "images", "operation": "edit", "prompt": "add a red hat", "response_format": "b64_json", **fields}
    response = client.post(URL, data)
    assert response.status_code == 200
    return response.content.decode()


def data_images(page: str) -> list[Image.Image]:
    """Every data: image on the page, decoded."""
    found = re.findall(r'src="data:image/[a-z+]+;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(encoded))) for encoded in found]


def test_an_edit_runs_through_the_service_and_shows_the_original_beside_the_result(
    admin_client: Client, route: Route, standin: StandIn
) -> None:
    page = run(
        admin_client,
        images=[upload("photo.png", image_bytes("png", (640, 480))), upload("hat.jpg", image_bytes("jpeg"))],
        mask=upload("mask.png", mask_bytes((640, 480))),
        size="1024x1024",
        quality="hd",
        n="2",
    )

    sent = standin.last
    assert sent.path == "/v1/images/edits"
    assert sent.fields["prompt"] == "add a red hat"
    assert sent.fields["quality"] == "high"  # translated for gpt-image, as for a client
    assert [part.name for part in sent.files] == ["image[]", "image[]", "mask"]
    assert 'data-status="200"' in page
    assert 'id="playground-image-model">img-openai<' in page
    assert re.search(r'id="playground-latency">\d+ ms<', page)
    originals, results = page.split('id="playground-results"')
    assert len(data_images(originals)) == 3  # two images and the mask, downscaled
    assert max(data_images(originals)[0].size) <= 384
    assert [image.format for image in data_images(results)] == ["PNG", "PNG"]
    assert "Raw JSON" in page and "characters)" in page  # base64 shortened in the raw answer
    assert PROVIDER_TOKEN not in page


def test_a_run_is_a_ledger_row_in_the_playground_channel(admin_client: Client, route: Route) -> None:
    page = run(admin_client, images=[upload("photo.png", image_bytes())])

    record = UsageRecord.objects.get()
    assert (record.channel, record.endpoint, record.route_id, record.image_model_id, record.status) == (
        "playground", "edits", "images", "img-openai", 200,
    )  # fmt: skip
    assert record.api_key_id == ""
    assert record.images == 1 and record.attempts == 1 and record.request_bytes > 0
    assert f'id="playground-request-id">{record.request_id}<' in page


def test_a_generation_uses_the_generation_refs(admin_client: Client, route: Route, standin: StandIn) -> None:
    page = run(admin_client, operation="generation", prompt="a lighthouse at dusk", n="1")

    assert ":generateContent" in standin.last.path
    assert 'id="playground-image-model">img-gemini<' in page
    assert 'id="playground-originals"' not in page
    assert len(data_images(page.split('id="playground-results"')[1])) == 1
    assert UsageRecord.objects.get().endpoint == "generations"


def test_naming_a_ref_sends_the_request_to_it(admin_client: Client, route: Route, standin: StandIn) -> None:
    page = run(admin_client, images=[upload("photo.png", image_bytes())], ref="img-gemini")

    assert ":generateContent" in standin.last.path
    assert 'id="playground-image-model">img-gemini<' in page


def test_signed_links_are_shown_as_images_on_the_gateway(admin_client: Client, route: Route) -> None:
    page = run(admin_client, images=[upload("photo.png", image_bytes())], response_format="url")

    links = re.findall(r'<img src="(http://testserver/images/[^"]+)"', page)
    assert len(links) == 1
    image = admin_client.get(links[0].removeprefix("http://testserver").replace("&amp;", "&"))
    assert image.status_code == 200 and image["Content-Type"] == "image/png"


def test_bad_input_shows_the_gateways_message_and_calls_no_provider(
    admin_client: Client, route: Route, standin: StandIn
) -> None:
    page = run(admin_client, images=[upload("photo.png", image_bytes())], size="13x13")

    assert 'data-status="400"' in page
    error = re.search(r'id="playground-error">(.*?)<br>', page, re.S)
    assert error is not None and "size" in error.group(1)
    assert "<code>invalid_value</code>" in page and "<code>size</code>" in page
    assert standin.received == []
    assert UsageRecord.objects.get().error_code == "invalid_value"


def test_an_edit_without_an_image_gets_the_apis_refusal(admin_client: Client, route: Route) -> None:
    page = run(admin_client)

    assert "&#x27;image&#x27; is required" in page
    assert "<code>missing_required_parameter</code>" in page


def test_a_file_that_is_not_an_image_is_refused_by_content(admin_client: Client, route: Route) -> None:
    page = run(admin_client, images=[upload("photo.png", b"GIF89a" + b"\0" * 200)])

    assert "<code>invalid_image</code>" in page
    assert "not an image that can be shown" in page


def test_uploads_over_the_routes_limit_are_refused(admin_client: Client, route: Route, standin: StandIn) -> None:
    Route.objects.filter(pk="images").update(max_size_upload=1000)

    page = run(admin_client, images=[upload("photo.png", image_bytes("png", (256, 256)) + b"\0" * 2000)])

    assert 'data-status="413"' in page and "<code>file_too_large</code>" in page
    assert standin.received == []


def test_a_provider_failure_names_the_provider_and_never_shows_the_token(
    admin_client: Client, route: Route, standin: StandIn
) -> None:
    standin.fail_always("401")  # the stand-in echoes the rejected key, as careless upstreams do

    page = run(admin_client, images=[upload("photo.png", image_bytes())], ref="img-openai")

    assert 'data-status="502"' in page and "<code>upstream_auth_error</code>" in page  # contract §6
    error = re.search(r'id="playground-error">(.*?)<br>', page, re.S)
    assert error is not None and "OpenAI" in error.group(1)
    assert PROVIDER_TOKEN not in page
    assert PROVIDER_TOKEN[-8:] not in page


def test_a_disabled_route_is_refused_as_clients_would_be(admin_client: Client, route: Route) -> None:
    Route.objects.filter(pk="images").update(enabled=False)

    page = run(admin_client, images=[upload("photo.png", image_bytes())])

    assert "is disabled: clients get 404 route_not_found" in page
    assert "<code>route_not_found</code>" in page


def test_the_form_lists_routes_and_marks_each_ref_with_its_routes(admin_client: Client, route: Route) -> None:
    page = admin_client.get(URL + "?route=images").content.decode()

    assert re.search(r'<option value="images" selected>images — images</option>', page)
    assert re.search(r'<option value="img-gemini" data-routes="images">', page)


def test_the_admin_index_and_each_route_page_link_to_the_playground(admin_client: Client, route: Route) -> None:
    index = admin_client.get("/admin/").content.decode()
    route_page = admin_client.get("/admin/entities/route/images/change/").content.decode()

    assert f'href="{URL}"' in index
    assert f'href="{URL}?route=images"' in route_page


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_who_may_not_change_routes_cannot_run_it(client: Client, route: Route, standin: StandIn) -> None:
    viewer = get_user_model().objects.create_user("viewer", password=None, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_route"))
    client.force_login(viewer)

    response = client.post(URL, {"route": "images", "operation": "edit", "prompt": "x"})

    assert response.status_code == 403
    assert standin.received == []
    assert "playground" not in client.get("/admin/").content.decode().lower()
