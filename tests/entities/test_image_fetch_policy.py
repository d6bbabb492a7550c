"""The image model's fetch policy (`config.connection.image_hosts`, `allow_private_network`): import,
export, validation and the admin form, all with the same rules."""

from __future__ import annotations

from typing import Any

import pytest

from entities.interchange import ImportFailed, entities_export, entities_import
from entities.models import ImageModel
from tests.entities.test_admin import _image_model_form

pytestmark = pytest.mark.django_db


def model_json(**connection: Any) -> dict[str, Any]:
    return {"id": "m1", "name": "M1", "provider": "openai", "config": {"connection": connection}}


def test_the_fetch_policy_imports_and_exports_as_written() -> None:
    connection = {"image_hosts": ["cdn.example.com", "*.blob.example.net"], "allow_private_network": True}

    entities_import(data={"image_models": [model_json(**connection)]})

    stored = ImageModel.objects.get(pk="m1")
    assert (stored.image_hosts, stored.allow_private_network) == (connection["image_hosts"], True)
    exported = entities_export(with_secrets=False)["image_models"][0]["config"]["connection"]
    assert {key: exported[key] for key in connection} == connection


def test_an_entity_without_a_fetch_policy_exports_none_and_allows_no_private_network() -> None:
    entities_import(data={"image_models": [model_json()]})

    exported = entities_export(with_secrets=False)["image_models"][0]["config"]["connection"]
    assert "image_hosts" not in exported and "allow_private_network" not in exported
    assert ImageModel.objects.get(pk="m1").allow_private_network is False


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"image_hosts": ["https://cdn.example.com/x"]}, "config.connection.image_hosts"),
        ({"image_hosts": "cdn.example.com"}, "config.connection.image_hosts"),
        ({"allow_private_network": "yes"}, "config.connection.allow_private_network"),
    ],
)
def test_a_bad_fetch_policy_is_refused_naming_the_key(connection: dict[str, Any], message: str) -> None:
    with pytest.raises(ImportFailed) as refused:
        entities_import(data={"image_models": [model_json(**connection)]})

    assert message in str(refused.value)
    assert not ImageModel.objects.exists()


def test_the_admin_form_edits_the_fetch_policy(admin_client) -> None:
    entities_import(data={"image_models": [model_json()]})
    url = "/admin/entities/imagemodel/m1/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="image_hosts"' in page and 'name="allow_private_network"' in page

    saved = admin_client.post(
        url, _image_model_form(name="M1", image_hosts="cdn.example.com\n*.blob.example.net", allow_private_network="on")
    )
    refused = admin_client.post(url, _image_model_form(name="M1", image_hosts="http://cdn.example.com/"))

    assert saved.status_code == 302
    stored = ImageModel.objects.get(pk="m1")
    assert (stored.image_hosts, stored.allow_private_network) == (["cdn.example.com", "*.blob.example.net"], True)
    assert refused.status_code == 200 and "is not a host name" in refused.content.decode()
