"""The admin as operators use it: through the test client, logged in as a staff superuser."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import path, reverse

from entities.models import ApiKey, ImageModel, Route, RouteRef, hash_secret

# This module is its own URLconf: the admin is tested apart from the API views' imports.
urlpatterns = [path("admin/", admin.site.urls)]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

TOKEN = "sk-test-literal-abcdefghijklmnop-WXYZ"


@pytest.fixture
def openai_model() -> ImageModel:
    return ImageModel.objects.create(
        id="img-openai",
        name="OpenAI images",
        provider="openai",
        token=TOKEN,
        edition={"enabled": False, "model": "gpt-image-1"},
        generation={"enabled": True},
    )


@pytest.fixture
def azure_model() -> ImageModel:
    return ImageModel.objects.create(
        id="img-azure",
        name="Azure images",
        provider="azure-openai",
        token="${env.AZURE_OPENAI_KEY}",
        connection_extra={"resource_name": "res", "deployment_id": "gpt-image-1"},
        generation={"enabled": True},
    )


def _image_model_form(**overrides: Any) -> dict[str, Any]:
    """A complete change-form POST for an image model, all options empty."""
    data: dict[str, Any] = {
        "name": "OpenAI images",
        "description": "",
        "provider": "openai",
        "base_url": "",
        "new_token": "",
        "timeout_ms": "180000",
        "resource_name": "",
        "deployment_id": "",
        "api_version": "",
        "models_include": "",
        "models_exclude": "",
        "tags": "",
        "metadata": "{}",
    }
    for group, keys in {
        "edition": [
            "model",
            "n",
            "size",
            "quality",
            "background",
            "response_format",
            "output_format",
            "output_compression",
            "input_fidelity",
        ],
        "generation": [
            "model",
            "n",
            "size",
            "quality",
            "style",
            "background",
            "moderation",
            "response_format",
            "output_format",
            "output_compression",
        ],
    }.items():
        for key in keys:
            data[f"{group}_{key}"] = ""
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not False}


def _changelist(model: str) -> str:
    return reverse(f"admin:entities_{model}_changelist")


def _change(model: str, pk: str) -> str:
    return reverse(f"admin:entities_{model}_change", args=[pk])


@pytest.mark.parametrize("model", ["imagemodel", "route", "apikey"])
def test_list_and_add_pages_render_for_every_entity(admin_client, openai_model, model):
    Route.objects.create(id="r1", name="R1", domains=["a.example.com"])
    ApiKey.objects.create(id="k1", name="K1", secret_hash="0" * 64, secret_hint="…abcd")

    assert admin_client.get(_changelist(model)).status_code == 200
    assert admin_client.get(reverse(f"admin:entities_{model}_add")).status_code == 200


def test_list_filters_on_editing_flag_inside_json(admin_client, openai_model, azure_model):
    ImageModel.objects.create(id="img-bare", name="Bare", provider="gemini")
    openai_model.edition = {"enabled": True}
    openai_model.save()

    on = admin_client.get(_changelist("imagemodel"), {"editing": "on"})
    off = admin_client.get(_changelist("imagemodel"), {"editing": "off"})

    assert [m.pk for m in on.context["cl"].result_list] == ["img-openai"]
    assert [m.pk for m in off.context["cl"].result_list] == ["img-azure", "img-bare"]


def test_enable_editing_action_turns_edition_on(admin_client, openai_model):
    response = admin_client.post(
        _changelist("imagemodel"),
        {"action": "enable_editing", "_selected_action": [openai_model.pk]},
        follow=True,
    )

    assert response.status_code == 200
    openai_model.refresh_from_db()
    assert openai_model.edition == {"enabled": True, "model": "gpt-image-1"}

    admin_client.post(_changelist("imagemodel"), {"action": "disable_editing", "_selected_action": [openai_model.pk]})
    openai_model.refresh_from_db()
    assert openai_model.edition["enabled"] is False


def test_enable_editing_refuses_whole_selection_when_one_provider_cannot_edit(admin_client, openai_model, azure_model):
    response = admin_client.post(
        _changelist("imagemodel"),
        {"action": "enable_editing", "_selected_action": [openai_model.pk, azure_model.pk]},
        follow=True,
    )

    assert "cannot edit images: img-azure: Azure OpenAI edits images from api_version 2025-04-01-preview on" in (
        response.content.decode()
    )
    openai_model.refresh_from_db()
    azure_model.refresh_from_db()
    assert openai_model.edition == {"enabled": False, "model": "gpt-image-1"}
    assert azure_model.edition == {}


def test_token_is_masked_on_list_and_change_pages(admin_client, openai_model, azure_model):
    listing = admin_client.get(_changelist("imagemodel")).content.decode()
    change = admin_client.get(_change("imagemodel", openai_model.pk)).content.decode()

    for html in (listing, change):
        assert TOKEN not in html
        assert "sk-test-literal" not in html
        assert "…WXYZ" in html
    assert "${env.AZURE_OPENAI_KEY}" in listing


def test_saving_with_empty_token_keeps_the_stored_one_and_clear_removes_it(admin_client, openai_model):
    url = _change("imagemodel", openai_model.pk)

    response = admin_client.post(url, _image_model_form())
    assert response.status_code == 302
    openai_model.refresh_from_db()
    assert openai_model.plain_token() == TOKEN

    admin_client.post(url, _image_model_form(new_token="sk-new-token-0000000001234"))
    openai_model.refresh_from_db()
    assert openai_model.plain_token() == "sk-new-token-0000000001234"

    admin_client.post(url, _image_model_form(clear_token="on"))
    openai_model.refresh_from_db()
    assert openai_model.token == ""


def test_structured_option_fields_compose_the_json_and_omit_empty_keys(admin_client, openai_model):
    response = admin_client.post(
        _change("imagemodel", openai_model.pk),
        _image_model_form(
            edition_enabled="on",
            edition_model="gpt-image-1",
            edition_n="2",
            edition_size="1024x1024",
            edition_background="transparent",
            edition_output_compression="80",
            edition_input_fidelity="high",
            generation_model="dall-e-3",
            generation_style="vivid",
        ),
    )

    assert response.status_code == 302
    openai_model.refresh_from_db()
    assert openai_model.edition == {
        "enabled": True,
        "model": "gpt-image-1",
        "n": 2,
        "size": "1024x1024",
        "background": "transparent",
        "output_compression": 80,
        "input_fidelity": "high",
    }
    assert openai_model.generation == {"enabled": False, "model": "dall-e-3", "style": "vivid"}


def test_change_page_shows_options_as_fields_not_json(admin_client, openai_model):
    html = admin_client.get(_change("imagemodel", openai_model.pk)).content.decode()

    assert 'name="edition_enabled"' in html
    assert 'name="edition_model"' in html and 'value="gpt-image-1"' in html
    assert 'name="generation_moderation"' in html
    assert 'name="edition"' not in html


def test_option_out_of_range_is_shown_on_its_field(admin_client, openai_model):
    response = admin_client.post(_change("imagemodel", openai_model.pk), _image_model_form(edition_n="11"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["edition_n"] == ["'n' must be between 1 and 10, not 11."]


def test_turning_azure_to_an_api_version_that_cannot_edit_shows_the_model_error(admin_client):
    azure = ImageModel.objects.create(
        id="img-azure-edits",
        name="Azure edits",
        provider="azure-openai",
        connection_extra={"resource_name": "res", "api_version": "2025-04-01-preview"},
        edition={"enabled": True},
    )

    response = admin_client.post(
        _change("imagemodel", azure.pk),
        _image_model_form(
            name="Azure edits",
            provider="azure-openai",
            resource_name="res",
            api_version="2024-10-21",
            edition_enabled="on",
        ),
    )

    assert response.status_code == 200
    assert "this entity&#x27;s api_version 2024-10-21 cannot edit" in response.content.decode()
    azure.refresh_from_db()
    assert azure.connection_extra["api_version"] == "2025-04-01-preview"


def test_azure_connection_fields_are_stored_in_connection_extra(admin_client):
    response = admin_client.post(
        reverse("admin:entities_imagemodel_add"),
        _image_model_form(
            id="img-azure-new",
            name="Azure",
            provider="azure-openai",
            new_token="${env.AZURE_KEY}",
            resource_name="my-resource",
            api_version="2025-04-01-preview",
            generation_enabled="on",
        ),
    )

    assert response.status_code == 302
    created = ImageModel.objects.get(pk="img-azure-new")
    assert created.connection_extra == {"resource_name": "my-resource", "api_version": "2025-04-01-preview"}
    assert created.token == "${env.AZURE_KEY}"
    assert created.generation == {"enabled": True}


def test_creating_an_api_key_shows_the_secret_once_and_stores_only_its_hash(admin_client):
    Route.objects.create(id="r1", name="R1", domains=["a.example.com"])

    response = admin_client.post(
        reverse("admin:entities_apikey_add"),
        {"id": "k1", "name": "Key one", "enabled": "on", "routes": ["r1"], "requests_per_minute": "60"},
        follow=True,
    )

    html = response.content.decode()
    secrets_shown = re.findall(r"gw-[A-Za-z0-9_-]{40,}", html)
    assert len(secrets_shown) == 1
    secret = secrets_shown[0]
    key = ApiKey.objects.get(pk="k1")
    assert key.secret_hash == hash_secret(secret)
    assert key.secret_hint == "…" + secret[-4:]
    assert list(key.routes.values_list("pk", flat=True)) == ["r1"]

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert secret not in dump.getvalue()

    assert secret not in admin_client.get(_change("apikey", "k1")).content.decode()
    assert secret not in admin_client.get(_changelist("apikey")).content.decode()


def test_regenerate_secret_action_replaces_the_hash_and_shows_the_new_secret(admin_client):
    key = ApiKey(id="k1", name="K1")
    key.set_secret("old-secret-0123456789")
    key.save()

    response = admin_client.post(
        _changelist("apikey"), {"action": "regenerate_secret", "_selected_action": ["k1"]}, follow=True
    )

    (secret,) = re.findall(r"gw-[A-Za-z0-9_-]{40,}", response.content.decode())
    key.refresh_from_db()
    assert key.secret_hash == hash_secret(secret)
    assert key.secret_hash != hash_secret("old-secret-0123456789")


def test_non_staff_user_is_sent_to_the_admin_login(client):
    user = get_user_model().objects.create_user("plain", password="not-staff-password")
    client.force_login(user)

    for model in ("imagemodel", "route", "apikey"):
        response = client.get(_changelist(model))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def _route_form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Images",
        "enabled": "on",
        "domains": "images.example.com\napi.example.com/v1",
        "edit_plugin_enabled": "true",
        "max_size_upload": "1",
        "edit_fallback": "on",
        "edit_retries": "1",
        "edit_deadline_ms": "600000",
        "generation_plugin_enabled": "unknown",
        "generation_fallback": "on",
        "refs-TOTAL_FORMS": "0",
        "refs-INITIAL_FORMS": "0",
        "refs-MIN_NUM_FORMS": "0",
        "refs-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_route_form_saves_domains_and_refs_in_position_order(admin_client, openai_model, azure_model):
    gemini = ImageModel.objects.create(id="img-gemini", name="Gemini", provider="gemini")
    refs = [("edit", gemini.pk, 1), ("edit", openai_model.pk, 0), ("generation", azure_model.pk, 0)]
    data = _route_form(id="route-images", **{"refs-TOTAL_FORMS": str(len(refs))})
    for i, (plugin, image_model, position) in enumerate(refs):
        data.update(
            {
                f"refs-{i}-plugin": plugin,
                f"refs-{i}-image_model": image_model,
                f"refs-{i}-position": str(position),
            }
        )

    response = admin_client.post(reverse("admin:entities_route_add"), data)

    assert response.status_code == 302
    route = Route.objects.get(pk="route-images")
    assert route.domains == ["images.example.com", "api.example.com/v1"]
    assert route.edit_plugin_enabled is True
    assert route.generation_plugin_enabled is None
    assert route.ref_ids(RouteRef.EDIT) == ["img-openai", "img-gemini"]
    assert route.ref_ids(RouteRef.GENERATION) == ["img-azure"]
    listing = admin_client.get(_changelist("route")).content.decode()
    assert "img-openai → img-gemini" in listing


def test_route_form_rejects_bad_domains_with_the_model_message(admin_client):
    response = admin_client.post(reverse("admin:entities_route_add"), _route_form(id="r-bad", domains="bad host!"))

    assert response.status_code == 200
    assert "is not a host name" in response.context["adminform"].form.errors["domains"][0]
    assert not Route.objects.filter(pk="r-bad").exists()


def test_route_refs_sharing_a_position_are_refused(admin_client, openai_model):
    gemini = ImageModel.objects.create(id="img-gemini", name="Gemini", provider="gemini")
    data = _route_form(id="r1", **{"refs-TOTAL_FORMS": "2"})
    for i, image_model in enumerate([openai_model.pk, gemini.pk]):
        data.update({f"refs-{i}-plugin": "edit", f"refs-{i}-image_model": image_model, f"refs-{i}-position": "0"})

    response = admin_client.post(reverse("admin:entities_route_add"), data)

    assert response.status_code == 200
    assert "share position 0" in response.content.decode()
    assert not Route.objects.filter(pk="r1").exists()


# --- forms that fit the provider -------------------------------------------------------------------


def _names(html: str) -> set[str]:
    return set(re.findall(r'name="([a-z_]+)"', html))


def _add(query: str = "") -> str:
    return reverse("admin:entities_imagemodel_add") + query


def test_only_the_chosen_providers_connection_fields_show(admin_client, openai_model, azure_model):
    local = ImageModel.objects.create(id="img-local", name="Local", provider="local")

    openai = _names(admin_client.get(_change("imagemodel", openai_model.pk)).content.decode())
    azure = _names(admin_client.get(_change("imagemodel", azure_model.pk)).content.decode())
    local_page = admin_client.get(_change("imagemodel", local.pk)).content.decode()

    assert {"base_url", "new_token", "timeout_ms"} <= openai
    assert not {"resource_name", "deployment_id", "api_version"} & openai
    assert {"base_url", "new_token", "resource_name", "deployment_id", "api_version"} <= azure
    assert not {"base_url", "new_token", "clear_token", "timeout_ms", "resource_name"} & _names(local_page)
    assert "Built into the gateway: no address, no token and no network needed." in local_page
    assert {"edition_enabled", "generation_enabled"} <= _names(local_page)


def test_editing_options_are_replaced_by_the_reason_where_the_provider_cannot_edit(admin_client, azure_model):
    xai = ImageModel.objects.create(id="img-xai", name="Grok", provider="x-ai", generation={"enabled": True})

    xai_page = admin_client.get(_change("imagemodel", xai.pk)).content.decode()
    azure_page = admin_client.get(_change("imagemodel", azure_model.pk)).content.decode()

    assert not any(name.startswith("edition_") for name in _names(xai_page))
    assert "Grok (xAI) (x-ai) cannot edit images through this gateway, so editing stays off." in xai_page
    assert {"generation_enabled", "generation_model"} <= _names(xai_page)
    assert not any(name.startswith("edition_") for name in _names(azure_page))
    assert "this entity&#x27;s api_version (none) cannot edit, so editing stays off" in azure_page


def test_a_hidden_editing_switch_cannot_be_posted_on(admin_client, azure_model):
    response = admin_client.post(
        _change("imagemodel", azure_model.pk),
        _image_model_form(name="Azure images", provider="azure-openai", resource_name="res", edition_enabled="on"),
    )

    assert response.status_code == 302
    azure_model.refresh_from_db()
    assert azure_model.edition_enabled is False


def test_the_add_page_asks_for_the_provider_first_then_shows_its_fields(admin_client):
    first = admin_client.get(_add()).content.decode()
    azure = admin_client.get(_add("?provider=azure-openai")).content.decode()

    assert _names(first) >= {"id", "name", "description", "provider"}
    assert not {"base_url", "new_token", "edition_enabled", "resource_name"} & _names(first)
    assert "Choose the provider first" in first and 'href="?provider=gemini"' in first
    assert {"resource_name", "api_version", "new_token"} <= _names(azure)
    assert '<option value="azure-openai" selected>' in azure
    assert "gateway/admin/image_model.js" in azure  # reloads the page for another provider


def test_saving_from_the_first_add_page_goes_on_to_the_providers_fields(admin_client):
    response = admin_client.post(_add(), {"id": "img-new", "name": "New", "description": "", "provider": "gemini"})

    assert response.status_code == 302
    assert response["Location"] == _change("imagemodel", "img-new")
    created = ImageModel.objects.get(pk="img-new")
    assert (created.provider, created.edition, created.generation) == ("gemini", {"enabled": False}, {"enabled": False})


def test_changing_the_provider_shows_the_new_providers_fields(admin_client, openai_model):
    page = admin_client.get(_change("imagemodel", openai_model.pk) + "?provider=azure-openai").content.decode()
    assert {"resource_name", "deployment_id", "api_version"} <= _names(page)
    assert '<option value="azure-openai" selected>' in page

    refused = admin_client.post(
        _change("imagemodel", openai_model.pk) + "?provider=azure-openai",
        _image_model_form(provider="azure-openai"),
    )
    assert refused.status_code == 200
    assert "Azure OpenAI needs resource_name (or a base_url)" in refused.content.decode()
    assert {"resource_name", "api_version"} <= _names(refused.content.decode())


def test_switching_to_the_local_provider_drops_the_old_connection(admin_client, openai_model):
    openai_model.base_url = "https://proxy.example.com/v1"
    openai_model.save()

    response = admin_client.post(
        _change("imagemodel", openai_model.pk) + "?provider=local", _image_model_form(provider="local")
    )

    assert response.status_code == 302
    openai_model.refresh_from_db()
    assert (openai_model.provider, openai_model.base_url, openai_model.token) == ("local", "", "")


def test_values_with_a_fixed_list_are_choices_and_open_ones_have_suggestions(admin_client, openai_model):
    openai_model.edition = {"enabled": False, "quality": "ultra"}  # imported, outside the list
    openai_model.save()

    html = admin_client.get(_change("imagemodel", openai_model.pk)).content.decode()

    quality = re.search(r'<select name="edition_quality".*?</select>', html, re.S)
    assert quality is not None
    for value in ("auto", "low", "medium", "high", "standard", "hd"):
        assert f'<option value="{value}"' in quality.group(0)
    assert '<option value="ultra" selected>ultra (stored)</option>' in quality.group(0)
    assert re.search(r'<select name="generation_response_format"[^>]*>.*a link to the image', html, re.S)
    assert re.search(r'<select name="edition_background"', html)
    assert 'list="edition_size_suggestions"' in html and '<option value="1536x1024">' in html
    assert 'list="edition_model_suggestions"' in html and '<option value="gpt-image-1">' in html


def test_operator_words_instead_of_json_paths(admin_client, openai_model):
    html = admin_client.get(_change("imagemodel", openai_model.pk)).content.decode()

    assert "options.edition" not in html and "options.generation" not in html
    for words in ("Editing", "More editing defaults", "Default model", "Images per request", "Answer with"):
        assert words in html
    assert "JSON" not in html


def test_model_patterns_are_edited_one_per_line(admin_client, openai_model):
    url = _change("imagemodel", openai_model.pk)

    response = admin_client.post(
        url, _image_model_form(models_include="gpt-image-.*\r\ndall-e-2\r\n", models_exclude="", tags="prod\nblue")
    )
    assert response.status_code == 302
    openai_model.refresh_from_db()
    assert (openai_model.models_include, openai_model.tags) == (["gpt-image-.*", "dall-e-2"], ["prod", "blue"])
    html = admin_client.get(url).content.decode()
    assert re.search(r'<textarea name="models_include"[^>]*>\s*gpt-image-.\*\ndall-e-2</textarea>', html)

    refused = admin_client.post(url, _image_model_form(models_include="ok\n[unclosed"))
    assert refused.status_code == 200
    errors = refused.context["adminform"].form.errors["models_include"]
    assert "'[unclosed' is not a valid regular expression" in errors[0]


def test_route_upload_limit_is_read_and_typed_in_megabytes(admin_client):
    admin_client.post(reverse("admin:entities_route_add"), _route_form(id="r-mb", max_size_upload="2.5"))
    route = Route.objects.get(pk="r-mb")
    assert route.max_size_upload == 2_621_440

    html = admin_client.get(_change("route", "r-mb")).content.decode()
    assert "Largest request (MB)" in html and 'name="max_size_upload" value="2.5"' in html

    Route.objects.filter(pk="r-mb").update(max_size_upload=600_000)  # not a round number of MB
    page = admin_client.get(_change("route", "r-mb")).content.decode()
    assert 'name="max_size_upload" value="0.572"' in page
    admin_client.post(_change("route", "r-mb"), _route_form(max_size_upload="0.572"))
    assert Route.objects.get(pk="r-mb").max_size_upload == 600_000  # untouched: kept to the byte

    refused = admin_client.post(_change("route", "r-mb"), _route_form(max_size_upload="lots"))
    assert refused.context["adminform"].form.errors["max_size_upload"] == [
        "Enter a number of megabytes, e.g. 100 or 0.5."
    ]
