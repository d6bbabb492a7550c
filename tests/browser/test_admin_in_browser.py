"""The admin as an operator uses it, in Chromium, against the gateway served by gunicorn: log in,
toggle editing, meet a refusal, keep a route change across a restart, run the playground, test
connections, and open the home page and the API docs. Screenshots go to tests/browser/artifacts/."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from django.core.management import call_command
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from edits_api.models import UsageRecord
from entities.models import ImageModel, Route, RouteRef
from tests.browser.conftest import EXAMPLES, OPERATOR, PROVIDER_TOKEN, TOKEN_VARIABLE, Server, log_in, shoot
from tests.standin import StandIn

pytestmark = [pytest.mark.browser, pytest.mark.slow]
IMAGE_MODELS = "/admin/entities/imagemodel/"


def row(page: Page, image_model_id: str) -> object:
    """The change-list row of one image model."""
    return page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name=image_model_id, exact=True))


def run_action(page: Page, ids: list[str], action: str) -> None:
    for image_model_id in ids:
        row(page, image_model_id).locator("input.action-select").check()  # type: ignore[attr-defined]
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def editing_icon(page: Page, image_model_id: str) -> str | None:
    locator = row(page, image_model_id).locator("td.field-editing img")  # type: ignore[attr-defined]
    alt: str | None = locator.get_attribute("alt")
    return alt


def standin_image_model(id: str, standin: StandIn, **fields: object) -> ImageModel:
    values: dict[str, object] = {
        "name": f"Stand-in {id}",
        "provider": "openai",
        "base_url": standin.openai_url,
        "token": f"${{env.{TOKEN_VARIABLE}}}",
        "timeout_ms": 10_000,
        "edition": {"enabled": True, "model": "gpt-image-1"},
        **fields,
    }
    image_model = ImageModel(id=id, **values)
    image_model.full_clean()
    image_model.save()
    return image_model


def playground_route(standin: StandIn) -> Route:
    """A route whose edit plugin has one image model, at the stand-in."""
    route = Route(id="playground-demo", name="Playground demo", domains=["playground.example"])
    route.edit_plugin_enabled = True
    route.full_clean()
    route.save()
    image_model = standin_image_model("img-standin", standin)
    RouteRef.objects.create(route=route, plugin=RouteRef.EDIT, image_model=image_model, position=0)
    return route


def photo(path: Path) -> Path:
    """A small picture worth looking at in a screenshot: sky, sun, hills."""
    image = Image.new("RGB", (512, 384), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((360, 40, 440, 120), fill=(250, 210, 80))
    draw.polygon([(0, 300), (140, 190), (300, 300)], fill=(70, 140, 80))
    draw.polygon([(180, 320), (360, 170), (512, 320)], fill=(50, 115, 70))
    draw.rectangle((0, 300, 512, 384), fill=(90, 160, 90))
    image.save(path, format="PNG")
    return path


def test_editing_toggled_from_the_image_model_list_persists(page: Page, operator: tuple[str, str]) -> None:
    call_command("seed_entities", verbosity=0)
    log_in(page, operator)
    page.goto(IMAGE_MODELS)
    assert editing_icon(page, "demo-cloud-temple") == "True"

    run_action(page, ["demo-cloud-temple"], "disable_editing")

    expect(page.locator(".messagelist .success")).to_contain_text("Editing turned off for 1 image model(s)")
    page.reload()
    assert editing_icon(page, "demo-cloud-temple") == "False"
    assert ImageModel.objects.get(pk="demo-cloud-temple").edition_enabled is False

    run_action(page, ["demo-cloud-temple"], "enable_editing")

    expect(page.locator(".messagelist .success")).to_contain_text("Editing turned on for 1 image model(s)")
    page.goto(IMAGE_MODELS)
    assert editing_icon(page, "demo-cloud-temple") == "True"
    page.click("#toggle-nav-sidebar")  # the list gets the page's width
    shoot(page, "image-models", docs="admin-image-models.png")


def test_turning_editing_on_for_a_provider_that_cannot_edit_is_refused(page: Page, operator: tuple[str, str]) -> None:
    call_command("seed_entities", verbosity=0)
    log_in(page, operator)
    page.goto(IMAGE_MODELS)

    run_action(page, ["demo-x-ai"], "enable_editing")

    error = page.locator(".messagelist .error")
    expect(error).to_contain_text("Nothing changed")
    expect(error).to_contain_text("demo-x-ai: Grok (xAI)")
    expect(error).to_contain_text("cannot edit images")
    assert editing_icon(page, "demo-x-ai") == "False"
    assert ImageModel.objects.get(pk="demo-x-ai").edition_enabled is False
    shoot(page, "editing-refused")


def test_a_demo_route_changed_in_the_admin_is_kept_across_a_restart(
    page: Page, gateway: Server, operator: tuple[str, str]
) -> None:
    call_command("seed_entities", verbosity=0)  # as `make run` does before serving
    log_in(page, operator)
    page.goto("/admin/entities/route/demo-route/change/")
    page.fill("#id_edit_retries", "2")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")

    gateway.manage("seed_entities")  # `make run` again: migrate, seed, serve
    gateway.restart()

    page.goto("/admin/entities/route/demo-route/change/")
    expect(page.locator("#id_edit_retries")).to_have_value("2")
    assert Route.objects.get(pk="demo-route").edit_retries == 2
    shoot(page, "route-after-restart")


def test_a_playground_edit_shows_the_result_image(page: Page, operator: tuple[str, str]) -> None:
    call_command("seed_entities", verbosity=0)  # the demo route serves the built-in local provider
    log_in(page, operator)

    page.goto("/admin/entities/route/demo-route/change/")
    page.click("text=Open in playground")
    expect(page.locator("#id_route")).to_have_value("demo-route")
    page.set_input_files("#id_images", str(EXAMPLES / "photo.png"))
    page.set_input_files("#id_mask", str(EXAMPLES / "mask.png"))
    page.fill("#id_prompt", "make it black and white")
    page.click("#playground-run")

    expect(page.locator("#playground-result")).to_have_attribute("data-status", "200")
    expect(page.locator("#playground-image-model")).to_have_text("demo-local")
    expect(page.locator("#playground-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    answered = page.locator("img.playground-result-image")
    expect(answered).to_have_count(1)
    expect(answered).to_be_visible()
    assert answered.evaluate("img => img.complete && [img.naturalWidth, img.naturalHeight]") == [512, 512]
    expect(page.locator("#playground-originals img")).to_have_count(2)  # the photo and its mask
    page.click("#playground-raw summary")
    expect(page.locator("#playground-raw pre")).to_contain_text('"b64_json"')
    record = UsageRecord.objects.get(route_id="demo-route")
    assert (record.channel, record.image_model_id, record.status, record.images) == ("playground", "demo-local", 200, 1)
    shoot(page, "playground", docs="playground.png")


def test_a_playground_error_shows_the_gateways_message_and_calls_no_provider(
    page: Page, module_standin: StandIn, operator: tuple[str, str], tmp_path: Path
) -> None:
    playground_route(module_standin)
    log_in(page, operator)
    page.goto("/admin/")
    page.get_by_role("link", name="Playground", exact=True).click()

    page.set_input_files("#id_images", str(photo(tmp_path / "photo.png")))
    page.fill("#id_prompt", "anything")
    page.fill("#id_n", "11")
    page.click("#playground-run")

    expect(page.locator("#playground-result")).to_have_attribute("data-status", "400")
    expect(page.locator("#playground-error")).to_contain_text("'n'")
    assert module_standin.received == []


def test_test_connection_reports_each_image_model(
    page: Page, module_standin: StandIn, operator: tuple[str, str]
) -> None:
    standin_image_model("img-standin", module_standin)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    standin_image_model("img-offline", module_standin, base_url=f"http://127.0.0.1:{closed}/v1")
    log_in(page, operator)
    page.goto(IMAGE_MODELS)

    run_action(page, ["img-standin", "img-offline"], "test_connection")

    ok = page.locator('#connection-tests tr[data-image-model="img-standin"]')
    expect(ok).to_have_attribute("data-ok", "true")
    expect(ok.locator(".connection-called")).to_have_text(f"GET {module_standin.openai_url}/models")
    failed = page.locator('#connection-tests tr[data-image-model="img-offline"]')
    expect(failed).to_have_attribute("data-ok", "false")
    expect(failed.locator(".connection-called")).to_have_text(f"GET http://127.0.0.1:{closed}/v1/models")
    assert [(r.method, r.path) for r in module_standin.received] == [("GET", "/v1/models")]
    assert PROVIDER_TOKEN not in page.content()
    shoot(page, "test-connection")
    page.click("text=Back to the list")
    expect(page).to_have_url(re.compile(r"/admin/entities/imagemodel/$"))


def test_the_home_page_and_the_api_docs_open(page: Page, gateway: Server) -> None:
    response = page.goto("/")
    assert response is not None and response.status == 200
    assert "text/html" in response.headers["content-type"]
    expect(page.locator("a[href='/admin/']").first).to_be_visible()
    expect(page.locator("a[href='/docs']").first).to_be_visible()
    shoot(page, "home")

    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("AI image gateway")
    expect(page.locator("#operations-Images-createImageEdit")).to_be_visible()
    shoot(page, "docs")
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))


def test_a_wrong_password_is_refused_and_the_right_one_logs_in(page: Page, operator: tuple[str, str]) -> None:
    page.goto("/admin/")
    page.fill("#id_username", OPERATOR[0])
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()

    log_in(page, operator)

    expect(page.locator("#gateway-tools")).to_contain_text("Playground")
    shoot(page, "admin-index")
