"""Test connection in the admin: each selected image model's cheapest authenticated call against
stand-in providers, OK or the provider's error, what was called, and never the token."""

from __future__ import annotations

import re
import socket

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from entities.models import ImageModel
from tests.gateway import PROVIDER_TOKEN, make_image_model
from tests.standin import StandIn

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(get_user_model().objects.create_superuser("admin", password=None))
    return client


def run_action(client: Client, ids: list[str], changelist: str = "/admin/entities/imagemodel/") -> str:
    response = client.post(changelist, {"action": "test_connection", "_selected_action": ids})
    assert response.status_code == 200
    return response.content.decode()


def rows(page: str) -> dict[str, str]:
    """Each result row's text by image model id."""
    found = re.findall(r'<tr class="row\d" data-image-model="([^"]+)" data-ok="(true|false)">(.*?)</tr>', page, re.S)
    return {image_model: f"{ok} {re.sub(r'<[^>]+>', ' ', body)}" for image_model, ok, body in found}


@pytest.mark.parametrize("provider", ["openai", "gemini", "azure-openai", "x-ai", "luma"])
def test_each_protocol_is_probed_with_its_model_list_and_reported_ok(
    admin_client: Client, standin: StandIn, provider: str
) -> None:
    make_image_model("img-under-test", provider, standin, connection_extra=_extra(provider))

    page = run_action(admin_client, ["img-under-test"])

    row = rows(page)["img-under-test"]
    assert row.startswith("true") and " OK" in row
    assert f"GET {standin.url}" in row
    assert [(r.method, r.path in row) for r in standin.received] == [("GET", True)]  # one call, the one shown
    assert PROVIDER_TOKEN not in page


def _extra(provider: str) -> dict[str, str]:
    return (
        {"resource_name": "res", "deployment_id": "gpt-image-1", "api_version": "2025-04-01-preview"}
        if (provider == "azure-openai")
        else {}
    )


def test_a_refused_token_shows_the_providers_error_and_not_the_token(admin_client: Client, standin: StandIn) -> None:
    make_image_model("img-openai", "openai", standin)
    make_image_model("img-gemini", "gemini", standin)
    standin.fail_always("401")  # the stand-in echoes the rejected key in its message

    page = run_action(admin_client, ["img-openai", "img-gemini"])

    found = rows(page)
    assert set(found) == {"img-openai", "img-gemini"}
    assert all(row.startswith("false") and "Failed" in row for row in found.values())
    assert "OpenAI" in found["img-openai"] and "/v1/models" in found["img-openai"]
    assert PROVIDER_TOKEN not in page


def test_an_unreachable_provider_is_reported(admin_client: Client, standin: StandIn) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    make_image_model("img-away", "openai", standin, base_url=f"http://127.0.0.1:{closed_port}/v1")

    row = rows(run_action(admin_client, ["img-away"]))["img-away"]

    assert row.startswith("false")
    assert f"GET http://127.0.0.1:{closed_port}/v1/models" in row


def test_a_token_read_from_an_unset_variable_is_reported_without_a_call(
    admin_client: Client, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLAYGROUND_TEST_UNSET_KEY", raising=False)
    make_image_model("img-env", "openai", standin, token="${env.PLAYGROUND_TEST_UNSET_KEY}")

    row = rows(run_action(admin_client, ["img-env"]))["img-env"]

    assert row.startswith("false")
    assert "${env.PLAYGROUND_TEST_UNSET_KEY}, which is not set" in row and "nothing" in row
    assert standin.received == []


def test_the_action_is_on_provider_health_too(admin_client: Client, standin: StandIn) -> None:
    make_image_model("img-openai", "openai", standin)

    page = run_action(admin_client, ["img-openai"], changelist="/admin/edits_api/providerhealth/")

    assert rows(page)["img-openai"].startswith("true")
    assert 'href="/admin/edits_api/providerhealth/"' in page  # back to where the operator was


def test_the_action_is_offered_on_the_image_model_list(admin_client: Client, standin: StandIn) -> None:
    make_image_model("img-openai", "openai", standin)

    page = admin_client.get("/admin/entities/imagemodel/").content.decode()

    assert '<option value="test_connection">Test connection</option>' in page
    assert ImageModel.objects.count() == 1


def test_the_built_in_local_provider_needs_no_call(admin_client: Client, standin: StandIn) -> None:
    ImageModel.objects.create(id="img-local", name="Local", provider="local", edition={"enabled": True})

    row = rows(run_action(admin_client, ["img-local"]))["img-local"]

    assert row.startswith("true") and "built into the gateway" in row and "nothing" in row
    assert standin.received == []
