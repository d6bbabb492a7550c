"""Provider tokens at rest: stored and held encrypted, decrypted only for the provider connection.

No Django path that reads the model (dumpdata, serializers, the model's own fields) sees a
literal token; export --with-secrets, key rotation and the data migration keep working.
"""

from __future__ import annotations

import io
import json

import pytest
import requests
from cryptography.fernet import Fernet
from django.core import serializers
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.forms.models import model_to_dict

from entities import crypto
from entities.interchange import ImportFailed, entities_export, entities_import
from entities.models import ImageModel

LITERAL = "sk-literal-token-Q7vZ3kP9wX2mN8bR"
KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def stored(pk: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM entities_imagemodel WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def make(pk: str = "m1", token: str = LITERAL) -> ImageModel:
    image_model = ImageModel(id=pk, name=pk, provider="openai")
    image_model.set_token(token)
    image_model.full_clean()
    image_model.save()
    return image_model


@pytest.mark.django_db
def test_dumpdata_and_serializers_print_no_decrypted_token() -> None:
    make()
    out = io.StringIO()

    call_command("dumpdata", "entities", stdout=out)
    loaded = ImageModel.objects.get(pk="m1")

    assert LITERAL not in out.getvalue()
    assert LITERAL not in serializers.serialize("json", [loaded])
    assert LITERAL not in json.dumps(model_to_dict(loaded)) + repr(loaded.__dict__)
    assert loaded.token == stored("m1") and crypto.is_ciphertext(loaded.token)
    assert loaded.plain_token() == LITERAL


@pytest.mark.django_db
def test_a_dumpdata_fixture_loads_back_with_the_same_token() -> None:
    make()
    out = io.StringIO()
    call_command("dumpdata", "entities.imagemodel", stdout=out)
    ImageModel.objects.all().delete()
    fixture = io.StringIO(out.getvalue())

    serialized = list(serializers.deserialize("json", fixture))
    for obj in serialized:
        obj.save()

    assert ImageModel.objects.get(pk="m1").plain_token() == LITERAL


@pytest.mark.django_db
def test_a_literal_assigned_directly_is_encrypted_when_saved() -> None:
    ImageModel.objects.create(id="m1", name="M1", provider="openai", token=LITERAL)

    assert crypto.is_ciphertext(stored("m1"))
    assert ImageModel.objects.get(pk="m1").plain_token() == LITERAL


@pytest.mark.django_db
def test_env_references_are_stored_as_written_and_resolved_for_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_TOKEN_VAR", "sk-from-env-1234")
    make(token="${env.TEST_TOKEN_VAR}")

    image_model = ImageModel.objects.get(pk="m1")

    assert stored("m1") == "${env.TEST_TOKEN_VAR}" == image_model.token
    assert image_model.plain_token() == "sk-from-env-1234"
    assert image_model.masked_token() == "${env.TEST_TOKEN_VAR}"


@pytest.mark.django_db
def test_export_with_secrets_still_writes_the_literal_and_without_leaves_it_out() -> None:
    make()

    with_secrets = entities_export(with_secrets=True)["image_models"][0]["config"]["connection"]
    without = entities_export(with_secrets=False)["image_models"][0]["config"]["connection"]

    assert with_secrets["token"] == LITERAL
    assert "token" not in without


@pytest.mark.django_db
def test_importing_the_same_token_again_changes_nothing() -> None:
    entity = {"id": "m1", "name": "m1", "provider": "openai", "config": {"connection": {"token": LITERAL}}}
    entities_import(data={"image_models": [entity]})
    before = stored("m1")

    summary = entities_import(data={"image_models": [entity]})

    assert stored("m1") == before
    assert summary.unchanged == 1


@pytest.mark.django_db
def test_keys_rotate_without_losing_a_token(settings) -> None:
    settings.ENCRYPTION_KEYS = [KEY_A]
    make()
    settings.ENCRYPTION_KEYS = [KEY_B, KEY_A]  # the new key first; the old one still decrypts
    assert ImageModel.objects.get(pk="m1").plain_token() == LITERAL
    out = io.StringIO()

    call_command("rotate_tokens", stdout=out)
    settings.ENCRYPTION_KEYS = [KEY_B]  # the old key removed

    assert Fernet(KEY_B.encode()).decrypt(stored("m1").encode()).decode() == LITERAL
    assert ImageModel.objects.get(pk="m1").plain_token() == LITERAL
    assert out.getvalue().strip() == "Re-encrypted 1 token(s) with the first key."


@pytest.mark.django_db
def test_a_token_no_key_decrypts_is_reported_not_raised(settings) -> None:
    settings.ENCRYPTION_KEYS = [KEY_A]
    make()
    settings.ENCRYPTION_KEYS = [KEY_B]

    image_model = ImageModel.objects.get(pk="m1")
    out = io.StringIO()
    call_command("rotate_tokens", stdout=out)

    assert image_model.plain_token() == crypto.UNDECRYPTABLE
    assert image_model.masked_token() == "(cannot be decrypted: set it again)"
    assert "No key decrypts the token of: m1" in out.getvalue()
    assert "token" not in entities_export(with_secrets=True)["image_models"][0]["config"]["connection"]


@pytest.mark.django_db(transaction=True)
def test_the_data_migration_keeps_literals_encrypted_and_stores_references_as_written() -> None:
    before = [("entities", "0008_apikey_budget_expiry_models")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    # Rows as the previous version stored them: everything encrypted, references too.
    old_image_model = executor.loader.project_state(before).apps.get_model("entities", "ImageModel")
    for pk, token in (("lit", LITERAL), ("ref", "${env.SOME_KEY}")):
        old_image_model.objects.create(id=pk, name=pk, provider="openai", token=crypto.encrypt(token))

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert stored("ref") == "${env.SOME_KEY}"
    assert crypto.is_ciphertext(stored("lit")) and crypto.decrypt(stored("lit")) == LITERAL
    assert ImageModel.objects.get(pk="lit").plain_token() == LITERAL


# --- tokens an HTTP header cannot carry -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["sk-price-€-token-0001", "sk-line\nbreak-0001", "sk-☃-snow"])
def test_a_token_an_http_header_cannot_carry_is_refused_on_save(bad: str) -> None:
    image_model = ImageModel(id="m1", name="m1", provider="openai")
    image_model.set_token(bad)

    with pytest.raises(Exception) as caught:
        image_model.full_clean()

    assert "token" in caught.value.message_dict  # type: ignore[attr-defined]
    assert "HTTP header" in caught.value.message_dict["token"][0]  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_latin1_tokens_are_accepted() -> None:
    make(token="sk-latin1-é-ok-0001")

    assert ImageModel.objects.get(pk="m1").plain_token() == "sk-latin1-é-ok-0001"


@pytest.mark.django_db
def test_the_import_refuses_a_non_latin1_token_naming_the_field() -> None:
    entity = {"id": "m1", "name": "m1", "provider": "openai", "config": {"connection": {"token": "sk-€-0001"}}}

    with pytest.raises(ImportFailed) as caught:
        entities_import(data={"image_models": [entity]})

    assert "config.connection.token" in str(caught.value)
    assert not ImageModel.objects.exists()


@pytest.mark.django_db
@pytest.mark.urls("gateway_project.urls")
def test_the_admin_form_refuses_a_non_latin1_token_on_the_token_field(admin_client) -> None:
    image_model = make()
    url = f"/admin/entities/imagemodel/{image_model.pk}/change/"
    form = {
        "name": "m1",
        "description": "",
        "provider": "openai",
        "base_url": "",
        "new_token": "sk-new-€-0001",
        "timeout_ms": "180000",
        "models_include": "[]",
        "models_exclude": "[]",
        "tags": "[]",
        "metadata": "{}",
    }

    response = admin_client.post(url, form)

    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    assert "new_token" in errors and "HTTP header" in errors["new_token"][0]
    assert ImageModel.objects.get(pk="m1").plain_token() == LITERAL


def test_the_admin_api_refuses_a_non_latin1_token_naming_the_json_path(live_server, transactional_db) -> None:
    from entities.services import admin_token_create

    _, admin_token = admin_token_create(name="ops")
    entity = {"id": "m1", "name": "m1", "provider": "openai", "config": {"connection": {"token": "sk-€-0001"}}}

    answer = requests.post(
        live_server.url + "/api/v1/image-models",
        json=entity,
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=10,
    )

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "config.connection.token")
    assert "HTTP header" in error["message"] and "sk-€" not in error["message"]
    assert not ImageModel.objects.exists()
