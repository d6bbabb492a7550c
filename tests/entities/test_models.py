"""Every rule on an entity, as `full_clean()` enforces it for the admin and the importer alike."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from entities.catalog import PROVIDERS, Operation
from entities.models import ApiKey, ImageModel, Route, RouteRef, mask_secret, resolve_secret

pytestmark = pytest.mark.django_db

EDITING_PROVIDERS = [key for key, provider in PROVIDERS.items() if provider.can(Operation.EDIT)]
NON_EDITING_PROVIDERS = [key for key, provider in PROVIDERS.items() if not provider.can_edit]


def image_model(**fields: Any) -> ImageModel:
    fields.setdefault("id", "m1")
    fields.setdefault("name", "M1")
    fields.setdefault("provider", "openai")
    if fields["provider"] == "azure-openai":
        fields.setdefault("connection_extra", {"resource_name": "res"})
    return ImageModel(**fields)


def route(**fields: Any) -> Route:
    fields.setdefault("id", "r1")
    fields.setdefault("name", "R1")
    fields.setdefault("domains", ["api.example.com"])
    return Route(**fields)


def errors_of(instance: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


def raw_row(table: str, column: str, pk: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


# --- image models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_a_minimal_image_model_is_valid_for_every_provider(provider: str) -> None:
    image_model(provider=provider, generation={"enabled": True}).full_clean()


@pytest.mark.parametrize("bad_id", ["", "has space", "a/b", "é", "x" * 201, "semi;colon"])
def test_ids_outside_the_allowed_characters_are_refused(bad_id: str) -> None:
    assert "id" in errors_of(image_model(id=bad_id))
    assert "id" in errors_of(route(id=bad_id))


def test_ids_may_hold_letters_digits_and_the_four_separators() -> None:
    image_model(id="Model_1.v2:eu-west").full_clean()


def test_unknown_provider_is_refused() -> None:
    assert "provider" in errors_of(image_model(provider="midjourney"))


def test_unknown_option_keys_are_refused_naming_the_key() -> None:
    errors = errors_of(image_model(edition={"enabled": True, "colour": "red"}, generation={"steps": 3}))
    assert "unknown key 'colour'" in errors["edition"][0]
    assert "unknown key 'steps'" in errors["generation"][0]


def test_style_is_a_generation_option_only() -> None:
    image_model(generation={"model": "dall-e-3", "style": "vivid"}).full_clean()
    assert "unknown key 'style'" in errors_of(image_model(edition={"style": "vivid"}))["edition"][0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"enabled": "yes"}, "enabled must be a boolean"),
        ({"model": 3}, "model must be a string"),
        ({"n": "2"}, "n must be a whole number"),
        ({"n": True}, "n must be a whole number"),
        ({"n": 1.5}, "n must be a whole number"),
        ({"output_compression": "high"}, "output_compression must be a whole number"),
    ],
)
def test_options_of_the_wrong_type_are_refused(options: dict[str, Any], message: str) -> None:
    assert message in errors_of(image_model(edition=options))["edition"][0]


@pytest.mark.parametrize("n", [0, 11, -1])
def test_n_outside_1_to_10_is_refused(n: int) -> None:
    assert f"n: 'n' must be between 1 and 10, not {n}." in errors_of(image_model(edition={"n": n}))["edition"][0]
    image_model(edition={"n": 1}, generation={"n": 10}).full_clean()


def test_output_compression_outside_0_to_100_is_refused() -> None:
    errors = errors_of(image_model(generation={"output_compression": 101}))
    assert "'output_compression' must be between 0 and 100, not 101." in errors["generation"][0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("response_format", "gif"),
        ("output_format", "bmp"),
        ("background", "green"),
        ("input_fidelity", "medium"),
    ],
)
def test_enumerated_options_refuse_unknown_values(key: str, value: str) -> None:
    message = errors_of(image_model(edition={key: value}))["edition"][0]
    assert message.startswith(f"{key}: Invalid value for '{key}': '{value}'. Supported by gpt-image-1: ")


def test_options_must_be_an_object() -> None:
    assert errors_of(image_model(edition=["enabled"]))["edition"] == ["must be an object"]


@pytest.mark.parametrize("provider", NON_EDITING_PROVIDERS)
def test_edition_enabled_is_refused_on_a_provider_that_cannot_edit(provider: str) -> None:
    message = errors_of(image_model(provider=provider, edition={"enabled": True}))["edition"][0]
    assert f"({provider}) cannot edit images" in message
    assert PROVIDERS[provider].name in message


@pytest.mark.parametrize("provider", NON_EDITING_PROVIDERS)
def test_edition_disabled_is_accepted_on_a_provider_that_cannot_edit(provider: str) -> None:
    image_model(provider=provider, edition={"enabled": False}).full_clean()


@pytest.mark.parametrize("provider", EDITING_PROVIDERS)
def test_edition_enabled_is_accepted_on_a_provider_that_can_edit(provider: str) -> None:
    image_model(provider=provider, edition={"enabled": True, "n": 2}).full_clean()


def test_the_providers_that_edit_are_openai_gemini_cloud_temple_and_the_local_demo() -> None:
    assert sorted(EDITING_PROVIDERS) == ["cloud-temple", "gemini", "local", "openai"]


@pytest.mark.parametrize("api_version", ["2025-04-01-preview", "2025-06-01", "v1"])
def test_azure_edits_from_api_version_2025_04_01_preview_on(api_version: str) -> None:
    extra = {"resource_name": "res", "deployment_id": "gpt-image-1", "api_version": api_version}
    image_model(provider="azure-openai", connection_extra=extra, edition={"enabled": True}).full_clean()


@pytest.mark.parametrize("api_version", ["2024-02-01", "2025-03-01-preview", ""])
def test_azure_editing_on_an_older_api_version_is_refused_naming_the_version(api_version: str) -> None:
    extra = {"resource_name": "res", "deployment_id": "gpt-image-1", "api_version": api_version}
    message = errors_of(image_model(provider="azure-openai", connection_extra=extra, edition={"enabled": True}))
    assert "from api_version 2025-04-01-preview on" in message["edition"][0]
    assert f"api_version {api_version or '(none)'} cannot edit" in message["edition"][0]


@pytest.mark.parametrize("field", ["models_include", "models_exclude"])
def test_an_invalid_regular_expression_in_include_or_exclude_is_refused(field: str) -> None:
    message = errors_of(image_model(**{field: ["gpt-.*", "dall-e-(2"]}))[field][0]
    assert "'dall-e-(2' is not a valid regular expression" in message


def test_include_and_exclude_must_be_lists_of_strings() -> None:
    errors = errors_of(image_model(models_include="gpt-.*", models_exclude=[1]))
    assert errors["models_include"] == ["must be a list of regular expressions"]
    assert errors["models_exclude"] == ["must be a list of regular expressions"]


def test_tags_must_be_strings_and_metadata_values_strings() -> None:
    errors = errors_of(image_model(tags=["ok", 2], metadata={"team": 7}))
    assert errors["tags"] == ["must be a list of strings"]
    assert errors["metadata"] == ["must be an object of strings"]


def test_a_connection_key_the_provider_does_not_take_is_refused() -> None:
    errors = errors_of(image_model(provider="gemini", connection_extra={"deployment_id": "x"}))
    assert "Google Gemini takes no connection key deployment_id" in errors["connection_extra"][0]


def test_azure_needs_a_resource_name_or_a_base_url() -> None:
    errors = errors_of(image_model(provider="azure-openai", connection_extra={"deployment_id": "d"}))
    assert "resource_name" in errors["connection_extra"][0]
    image_model(provider="azure-openai", connection_extra={}, base_url="https://custom.example.com/openai").full_clean()


@pytest.mark.parametrize("timeout_ms", [0, 3_600_001])
def test_a_timeout_outside_1ms_to_one_hour_is_refused(timeout_ms: int) -> None:
    assert "timeout_ms" in errors_of(image_model(timeout_ms=timeout_ms))


def test_a_base_url_that_is_not_a_url_is_refused() -> None:
    assert "base_url" in errors_of(image_model(base_url="not a url"))


def test_the_effective_base_url_is_the_provider_default_unless_set() -> None:
    assert image_model().effective_base_url == "https://api.openai.com/v1"
    assert image_model(base_url="http://127.0.0.1:9999/v1/").effective_base_url == "http://127.0.0.1:9999/v1"
    azure = image_model(provider="azure-openai", connection_extra={"resource_name": "res"})
    assert azure.effective_base_url == "https://res.openai.azure.com/openai"


def test_an_env_token_is_stored_as_written_and_resolved_only_when_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_PROVIDER_TOKEN", "sk-from-the-environment")
    image_model(token="${env.TEST_PROVIDER_TOKEN}").save()

    stored = ImageModel.objects.get(id="m1").token
    assert stored == "${env.TEST_PROVIDER_TOKEN}"
    assert "sk-from-the-environment" not in raw_row("entities_imagemodel", "token", "m1")
    assert resolve_secret(stored) == "sk-from-the-environment"
    monkeypatch.delenv("TEST_PROVIDER_TOKEN")
    assert resolve_secret(stored) == ""


def test_a_literal_token_is_encrypted_at_rest() -> None:
    image_model(token="sk-literal-provider-token-9876").save()

    raw = raw_row("entities_imagemodel", "token", "m1")
    assert "sk-literal" not in raw
    assert "9876" not in raw
    assert ImageModel.objects.get(id="m1").plain_token() == "sk-literal-provider-token-9876"


def test_secrets_are_masked_to_their_last_four_characters() -> None:
    assert mask_secret("sk-literal-provider-token-9876") == "…9876"
    assert mask_secret("short") == "…"
    assert mask_secret("${env.OPENAI_API_KEY}") == "${env.OPENAI_API_KEY}"


# --- routes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domains",
    [
        ["api.example.com"],
        ["api.example.com/v1"],
        ["*"],
        ["*/tenant/images"],
        ["localhost", "127.0.0.1"],
        ["myroute.oto.tools"],
    ],
)
def test_host_and_host_prefix_domains_are_accepted(domains: list[str]) -> None:
    route(domains=domains).full_clean()


@pytest.mark.parametrize(
    "domains",
    [
        [],
        "api.example.com",
        [3],
        ["bad host"],
        ["under_score.example.com"],
        ["-leading.example.com"],
        ["api.example.com/"],
        ["api.example.com//v1"],
        ["api.example.com/v1 space"],
        ["https://api.example.com"],
        ["*.example.com"],
    ],
)
def test_bad_domains_are_refused(domains: Any) -> None:
    assert "domains" in errors_of(route(domains=domains))


@pytest.mark.parametrize("size", [0, -1])
def test_a_zero_or_negative_max_size_upload_is_refused(size: int) -> None:
    assert "max_size_upload" in errors_of(route(max_size_upload=size))


def test_an_image_model_appears_once_per_plugin_of_a_route() -> None:
    image_model().save()
    saved = route()
    saved.save()
    RouteRef.objects.create(route=saved, plugin=RouteRef.EDIT, image_model_id="m1", position=0)
    RouteRef(route=saved, plugin=RouteRef.GENERATION, image_model_id="m1", position=0).full_clean()
    with pytest.raises(ValidationError):
        RouteRef(route=saved, plugin=RouteRef.EDIT, image_model_id="m1", position=1).full_clean()


def test_a_ref_to_a_missing_image_model_is_refused() -> None:
    saved = route()
    saved.save()
    ref = RouteRef(route=saved, plugin=RouteRef.EDIT, image_model_id="missing", position=0)
    assert "image_model" in errors_of(ref)


# --- API keys --------------------------------------------------------------------------------------


def test_a_key_secret_is_stored_hashed_and_never_in_clear() -> None:
    key = ApiKey(id="k1", name="K1")
    key.set_secret("gw-a-long-client-secret-0042")
    key.full_clean()
    key.save()

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM entities_apikey WHERE id = 'k1'")
        row = cursor.fetchone()
    assert not any(isinstance(v, str) and "a-long-client-secret" in v for v in row)
    stored = ApiKey.objects.get(id="k1")
    assert stored.secret_hash == hashlib.sha256(b"gw-a-long-client-secret-0042").hexdigest()
    assert stored.secret_hint == "…0042"


def test_a_key_secret_shorter_than_16_characters_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        ApiKey(id="k1", name="K1").set_secret("too-short")
    assert "secret" in caught.value.message_dict


def test_a_key_without_a_secret_is_refused() -> None:
    assert "a key needs a secret" in errors_of(ApiKey(id="k1", name="K1"))["secret"]


def test_two_keys_cannot_share_a_secret() -> None:
    first = ApiKey(id="k1", name="K1")
    first.set_secret("gw-the-same-secret-for-both")
    first.save()
    second = ApiKey(id="k2", name="K2")
    second.set_secret("gw-the-same-secret-for-both")
    assert "secret_hash" in errors_of(second)


@pytest.mark.parametrize("field", ["requests_per_minute", "images_per_day"])
def test_a_zero_rate_limit_is_refused_and_empty_means_no_limit(field: str) -> None:
    key = ApiKey(id="k1", name="K1", **{field: 0})
    key.set_secret("gw-a-long-client-secret-0042")
    assert field in errors_of(key)
    setattr(key, field, None)
    key.full_clean()


@pytest.mark.parametrize("bad_id", ["img\n", "img\nx", " img", "img/1", ""])
def test_an_id_with_a_trailing_newline_or_a_foreign_character_is_refused(bad_id: str) -> None:
    assert "id" in errors_of(image_model(id=bad_id))
