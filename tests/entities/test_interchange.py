"""Import and export of entities, through the service and the seed/export commands."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from entities.catalog import PROVIDERS
from entities.interchange import (
    EDIT_PLUGIN,
    GENERATION_PLUGIN,
    ImportFailed,
    entities_export,
    entities_import,
)
from entities.models import ApiKey, ImageModel, Route, RouteRef

pytestmark = pytest.mark.django_db

EXAMPLE_FILE = Path("/work/shared/spec/entities.example.json")
MOBILE_SECRET = "gw-mobile-app-secret-from-env-0001"


@pytest.fixture
def example() -> dict[str, Any]:
    return json.loads(EXAMPLE_FILE.read_text())


@pytest.fixture
def mobile_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MOBILE_APP_GATEWAY_KEY", MOBILE_SECRET)
    return MOBILE_SECRET


@pytest.fixture
def imported(example: dict[str, Any], mobile_secret: str) -> dict[str, Any]:
    entities_import(data=example)
    return example


def write_json(tmp_path: Path, data: Any, name: str = "entities.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def db_state() -> dict[str, Any]:
    """Every stored row, timestamps and raw (encrypted) tokens included, to prove nothing was written."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, token FROM entities_imagemodel ORDER BY id")
        raw_tokens = cursor.fetchall()
    return {
        "image_models": list(ImageModel.objects.order_by("id").values()),
        "raw_tokens": raw_tokens,
        "routes": list(Route.objects.order_by("id").values()),
        "refs": list(RouteRef.objects.order_by("id").values()),
        "api_keys": list(ApiKey.objects.order_by("id").values()),
        "key_routes": list(ApiKey.routes.through.objects.order_by("id").values()),
    }


def import_error(data: Any) -> str:
    with pytest.raises(ImportFailed) as caught:
        entities_import(data=data)
    return str(caught.value)


def minimal_model(model_id: str = "m1", **fields: Any) -> dict[str, Any]:
    return {"id": model_id, "name": model_id.upper(), "provider": "openai", **fields}


def minimal_route(route_id: str = "r1", plugins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": route_id,
        "name": route_id.upper(),
        "frontend": {"domains": ["a.example.com"]},
        "plugins": plugins or [],
    }


def edit_plugin(refs: list[str], **config: Any) -> dict[str, Any]:
    return {"enabled": True, "plugin": EDIT_PLUGIN, "config": {"refs": refs, **config}}


# --- importing the example file ---------------------------------------------------------------------


def test_the_example_file_imports_as_is(example: dict[str, Any], mobile_secret: str) -> None:
    summary = entities_import(data=example)

    assert str(summary) == "imported 3 image models, 1 route, 1 API key (5 created, 0 updated)"
    openai = ImageModel.objects.get(id="image-model-openai")
    assert openai.token == "${env.OPENAI_API_KEY}"  # stored as written, resolved at call time
    assert openai.edition == {
        "enabled": True,
        "model": "gpt-image-1",
        "n": 1,
        "quality": "high",
        "size": "1024x1024",
    }
    assert ImageModel.objects.get(id="image-model-gemini").timeout_ms == 120000
    azure = ImageModel.objects.get(id="image-model-azure")
    assert azure.connection_extra == {
        "resource_name": "my-resource",
        "deployment_id": "gpt-image-1",
        "api_version": "2025-04-01-preview",
    }
    route = Route.objects.get(id="route-images")
    assert route.domains == ["myroute.oto.tools"]
    assert route.edit_plugin_enabled is True and route.generation_plugin_enabled is True
    assert route.max_size_upload == 104857600
    assert route.ref_ids(RouteRef.EDIT) == ["image-model-openai", "image-model-gemini"]
    assert route.ref_ids(RouteRef.GENERATION) == ["image-model-openai", "image-model-azure"]
    key = ApiKey.objects.get(id="key-mobile-app")
    assert key.secret_hash == hashlib.sha256(mobile_secret.encode()).hexdigest()
    assert [r.id for r in key.routes.all()] == ["route-images"]
    assert (key.requests_per_minute, key.images_per_day) == (60, None)


def test_seed_entities_with_a_file_imports_it_and_prints_one_summary_line(mobile_secret: str) -> None:
    output = run("seed_entities", str(EXAMPLE_FILE))

    assert output.strip().splitlines() == ["imported 3 image models, 1 route, 1 API key (5 created, 0 updated)"]
    assert ImageModel.objects.count() == 3


def test_importing_the_same_file_twice_changes_nothing(imported: dict[str, Any]) -> None:
    before = db_state()

    summary = entities_import(data=imported)

    assert str(summary) == "imported 3 image models, 1 route, 1 API key (0 created, 0 updated, 5 unchanged)"
    assert db_state() == before


def test_an_import_updates_entities_by_id(imported: dict[str, Any]) -> None:
    changed = copy.deepcopy(imported)
    changed["image_models"][1]["name"] = "Gemini, renamed"
    changed["routes"][0]["plugins"][0]["config"]["refs"] = ["image-model-gemini", "image-model-openai"]

    summary = entities_import(data=changed)

    assert (summary.created, summary.updated, summary.unchanged) == (0, 2, 3)
    assert ImageModel.objects.get(id="image-model-gemini").name == "Gemini, renamed"
    assert Route.objects.get(id="route-images").ref_ids(RouteRef.EDIT) == [
        "image-model-gemini",
        "image-model-openai",
    ]


# --- all or nothing ------------------------------------------------------------------------------------


def test_a_bad_last_entity_leaves_the_database_exactly_unchanged(imported: dict[str, Any]) -> None:
    before = db_state()
    changed = copy.deepcopy(imported)
    # Earlier entities would be updates and creations...
    changed["image_models"][0]["name"] = "OpenAI, renamed"
    changed["image_models"][0]["config"]["connection"]["token"] = "sk-a-new-literal-token"
    changed["image_models"].append(minimal_model("image-model-new"))
    changed["routes"][0]["frontend"]["domains"] = ["other.example.com"]
    changed["routes"][0]["plugins"][0]["config"]["refs"] = ["image-model-new"]
    changed["api_keys"].insert(0, {"id": "key-new", "name": "New", "secret": "gw-another-long-secret-0002"})
    # ...and the very last one is invalid.
    changed["api_keys"][-1]["rate_limit"] = {"requests_per_minute": 0}

    message = import_error(changed)

    assert message == (
        "api_keys[1] (key-mobile-app): rate_limit.requests_per_minute: must be at least 1 (leave empty for no limit)"
    )
    assert db_state() == before


def test_a_bad_file_through_the_command_exits_with_an_error_and_writes_nothing(
    tmp_path: Path, example: dict[str, Any], mobile_secret: str
) -> None:
    example["image_models"][2]["config"]["options"]["edition"]["enabled"] = True
    example["image_models"][2]["config"]["connection"]["api_version"] = "2024-02-01"

    with pytest.raises(CommandError) as caught:
        run("seed_entities", write_json(tmp_path, example))

    assert (
        "image_models[2] (image-model-azure): config.options.edition: Azure OpenAI edits images from api_version "
        "2025-04-01-preview on; this entity's api_version 2024-02-01 cannot edit"
    ) in str(caught.value)
    assert db_state() == {k: [] for k in db_state()}


@contextmanager
def another_connection_holding_sqlite(lock: str) -> Iterator[None]:
    """Another connection to the test database in a transaction that holds its lock: a read, or a
    write, which makes a BEGIN IMMEDIATE wait. This connection waits a tenth of a second for it, not
    the five of its setting."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        (busy_timeout,) = cursor.fetchone()
        cursor.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE" if lock == "write" else "BEGIN")
        other.execute("SELECT count(*) FROM entities_imagemodel").fetchall()  # takes the read lock
        yield
    finally:
        other.close()  # rolls its transaction back
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")


@pytest.mark.django_db(transaction=True)  # the import's own transaction commits, as in production
def test_a_database_busy_past_its_timeout_when_the_import_begins_is_an_error_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locks: a PostgreSQL transaction does not begin waiting on another")
    path = write_json(tmp_path, {"image_models": [minimal_model()]})

    with another_connection_holding_sqlite("write"), pytest.raises(CommandError) as caught:
        run("seed_entities", path)

    assert str(caught.value) == (
        f"nothing imported, {path} was refused:\nfile: the database could not store it just now (busy or "
        "unavailable); nothing was written, try again"
    )
    assert "database is locked" in caplog.text  # the database's own words go to the log only
    assert db_state() == {k: [] for k in db_state()}


@pytest.mark.django_db(transaction=True)
def test_a_reader_meanwhile_does_not_hold_the_import_back(tmp_path: Path) -> None:
    # SQLite runs in WAL mode (settings): with the rollback journal, a commit waited for every reader
    # to finish, and failed past the busy timeout.
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's journal mode")
    path = write_json(tmp_path, {"image_models": [minimal_model()]})

    with another_connection_holding_sqlite("read"):
        run("seed_entities", path)

    assert [m["id"] for m in db_state()["image_models"]] == ["m1"]


def test_the_error_names_the_entity_kind_its_id_and_the_field(example: dict[str, Any], mobile_secret: str) -> None:
    example["image_models"][2]["config"]["options"]["edition"]["enabled"] = True
    example["image_models"][2]["config"]["connection"]["api_version"] = "2024-02-01"

    message = import_error(example)

    assert message == (
        "image_models[2] (image-model-azure): config.options.edition: Azure OpenAI edits images from api_version "
        "2025-04-01-preview on; this entity's api_version 2024-02-01 cannot edit: turn editing off for this image model"
    )


def test_every_problem_of_a_kind_is_reported_at_once(example: dict[str, Any], mobile_secret: str) -> None:
    example["image_models"][0]["models"]["include"] = ["gpt-(1"]
    example["image_models"][1]["config"]["options"]["generation"]["n"] = 11
    example["image_models"][1]["config"]["connection"]["timeout"] = 0

    lines = import_error(example).splitlines()

    assert lines[0].startswith("image_models[0] (image-model-openai): models.include: 'gpt-(1' is not a valid")
    assert (
        "image_models[1] (image-model-gemini): config.options.generation: n: 'n' must be between 1 and 10, not 11."
    ) in lines
    assert any(line.startswith("image_models[1] (image-model-gemini): config.connection.timeout:") for line in lines)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(extra=[]), "file: extra: unknown key"),
        (lambda d: d.update(routes={}), "file: routes: must be a list"),
        (
            lambda d: d["image_models"][0].update(colour="red"),
            "image_models[0] (image-model-openai): colour: unknown key",
        ),
        (
            lambda d: d["image_models"][0]["config"]["connection"].update(timeout="180000"),
            "image_models[0] (image-model-openai): config.connection.timeout: must be a whole number",
        ),
        (
            lambda d: d["image_models"][0]["config"]["options"].update(variation={}),
            "image_models[0] (image-model-openai): config.options.variation: unknown key",
        ),
        (
            lambda d: d["image_models"][0]["config"]["options"]["edition"].update(colour="red"),
            "image_models[0] (image-model-openai): config.options.edition: unknown key 'colour'",
        ),
        (
            lambda d: d["image_models"][1]["config"]["connection"].update(deployment_id="x"),
            "image_models[1] (image-model-gemini): config.connection: Google Gemini takes no connection key",
        ),
        (
            lambda d: d["image_models"][0].update(provider="midjourney"),
            "image_models[0] (image-model-openai): provider: Value 'midjourney' is not a valid choice.",
        ),
        (lambda d: d["image_models"][0].update(id="bad id"), "image_models[0] (bad id): id: ids may hold"),
        (
            lambda d: d["image_models"][0].pop("provider"),
            "image_models[0] (image-model-openai): provider: is required",
        ),
        (
            lambda d: d["image_models"].append(d["image_models"][0]),
            "image_models[3] (image-model-openai): id: appears more",
        ),
        (
            lambda d: d["routes"][0].update(enabled="yes"),
            "routes[0] (route-images): enabled: must be true or false",
        ),
        (
            lambda d: d["routes"][0]["frontend"].update(domains=["bad host"]),
            "routes[0] (route-images): frontend.domains: 'bad host'",
        ),
        (
            lambda d: d["routes"][0]["plugins"][0]["config"].update(max_size_upload=0),
            "routes[0] (route-images): plugins[0].config.max_size_upload: must be a positive number of bytes",
        ),
        (
            lambda d: d["routes"][0]["plugins"][0]["config"].update(decode=True),
            "routes[0] (route-images): plugins[0].config.decode: unknown key",
        ),
        (
            lambda d: d["routes"][0]["plugins"][1]["config"].update(max_size_upload=3),
            "routes[0] (route-images): plugins[1].config.max_size_upload: unknown key",
        ),
        (
            lambda d: d["routes"][0]["plugins"].append(d["routes"][0]["plugins"][0]),
            "routes[0] (route-images): plugins[2].plugin: appears more than once",
        ),
        (
            lambda d: d["api_keys"][0].update(rate_limit={"requests_per_hour": 5}),
            "api_keys[0] (key-mobile-app): rate_limit.requests_per_hour: unknown key",
        ),
        (
            lambda d: d["api_keys"][0].update(secret="too-short"),
            "api_keys[0] (key-mobile-app): secret: a key secret must be at least 16 characters",
        ),
    ],
)
def test_malformed_or_invalid_entities_are_refused_naming_what_is_wrong(
    example: dict[str, Any], mobile_secret: str, mutate: Any, expected: str
) -> None:
    mutate(example)

    assert expected in import_error(example)
    assert ImageModel.objects.count() == 0


def test_a_file_that_is_not_an_object_is_refused() -> None:
    assert import_error([]) == "file: must be an object"  # type: ignore[arg-type]


# --- routes: plugins and refs ----------------------------------------------------------------------------


def test_an_unknown_plugin_id_is_refused(example: dict[str, Any], mobile_secret: str) -> None:
    example["routes"][0]["plugins"][0]["plugin"] = "cp:otoroshi_plugins.com.example.ImagesVariation"

    message = import_error(example)

    assert message.startswith(
        "routes[0] (route-images): plugins[0].plugin: "
        "unknown plugin 'cp:otoroshi_plugins.com.example.ImagesVariation' (known: "
    )
    assert Route.objects.count() == 0


def test_refs_to_a_missing_image_model_are_refused(example: dict[str, Any], mobile_secret: str) -> None:
    example["routes"][0]["plugins"][1]["config"]["refs"].append("image-model-nowhere")

    message = import_error(example)

    assert message == (
        "routes[0] (route-images): plugins[1].config.refs[2]: no image model 'image-model-nowhere' "
        "in the database or this file"
    )
    assert ImageModel.objects.count() == 0


def test_refs_may_name_image_models_already_in_the_database() -> None:
    entities_import(data={"image_models": [minimal_model("m1")]})

    entities_import(data={"routes": [minimal_route(plugins=[edit_plugin(["m1"])])]})

    assert Route.objects.get(id="r1").ref_ids(RouteRef.EDIT) == ["m1"]


def test_an_image_model_named_twice_in_one_plugin_is_refused() -> None:
    data = {
        "image_models": [minimal_model("m1")],
        "routes": [minimal_route(plugins=[edit_plugin(["m1", "m1"])])],
    }

    assert import_error(data).startswith("routes[0] (r1): plugins[0].config.refs[1]:")
    assert Route.objects.count() == 0


def test_a_plugin_left_out_is_absent_from_the_route() -> None:
    generation_only = {
        "enabled": False,
        "plugin": GENERATION_PLUGIN,
        "config": {"refs": ["m1"], "decode": True},
    }
    entities_import(data={"image_models": [minimal_model("m1")], "routes": [minimal_route(plugins=[generation_only])]})

    route = Route.objects.get(id="r1")
    assert route.edit_plugin_enabled is None
    assert (route.generation_plugin_enabled, route.generation_decode, route.generation_fallback) == (
        False,
        True,
        True,
    )
    exported = entities_export(with_secrets=False)["routes"][0]["plugins"]
    assert exported == [
        {
            "enabled": False,
            "plugin": GENERATION_PLUGIN,
            "config": {
                "refs": ["m1"],
                "decode": True,
                "fallback": True,
                "fallback_named": False,
                "retries": 1,
                "deadline": 600000,
            },
        }
    ]


def test_a_route_reimported_without_a_plugin_loses_it(imported: dict[str, Any]) -> None:
    imported["routes"][0]["plugins"] = imported["routes"][0]["plugins"][1:]

    entities_import(data=imported)

    route = Route.objects.get(id="route-images")
    assert route.edit_plugin_enabled is None
    assert route.ref_ids(RouteRef.EDIT) == []


def test_a_key_naming_a_missing_route_is_refused(example: dict[str, Any], mobile_secret: str) -> None:
    example["api_keys"][0]["routes"].append("route-nowhere")

    assert (
        import_error(example)
        == "api_keys[0] (key-mobile-app): routes: no route 'route-nowhere' in the database or this file"
    )


# --- tokens and secrets ----------------------------------------------------------------------------------


def test_an_image_model_imported_without_token_keeps_its_stored_token() -> None:
    entities_import(data={"image_models": [minimal_model(config={"connection": {"token": "sk-literal-stored-0001"}})]})

    entities_import(data={"image_models": [minimal_model(description="now described")]})

    stored = ImageModel.objects.get(id="m1")
    assert (stored.plain_token(), stored.description) == ("sk-literal-stored-0001", "now described")


def test_a_key_imported_without_secret_keeps_its_stored_hash(
    imported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    hash_before = ApiKey.objects.get(id="key-mobile-app").secret_hash
    del imported["api_keys"][0]["secret"]
    imported["api_keys"][0]["name"] = "Mobile app, renamed"
    monkeypatch.delenv("MOBILE_APP_GATEWAY_KEY")

    entities_import(data=imported)

    key = ApiKey.objects.get(id="key-mobile-app")
    assert (key.name, key.secret_hash) == ("Mobile app, renamed", hash_before)


def test_a_new_key_without_secret_is_refused() -> None:
    data = {"routes": [minimal_route()], "api_keys": [{"id": "k1", "name": "K1", "routes": ["r1"]}]}

    assert import_error(data) == "api_keys[0] (k1): secret: a key needs a secret"
    assert Route.objects.count() == 0


def test_an_env_key_secret_that_is_unset_is_refused_naming_the_key(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOBILE_APP_GATEWAY_KEY", raising=False)

    message = import_error(example)

    assert (
        message == "api_keys[0] (key-mobile-app): secret: ${env.MOBILE_APP_GATEWAY_KEY} is not set in the environment"
    )
    assert ImageModel.objects.count() == 0


def test_an_env_key_secret_is_read_at_import_time_and_only_its_hash_kept(imported: dict[str, Any]) -> None:
    key = ApiKey.objects.get(id="key-mobile-app")
    assert key.secret_hash == hashlib.sha256(MOBILE_SECRET.encode()).hexdigest()
    assert "MOBILE_APP_GATEWAY_KEY" not in json.dumps(list(ApiKey.objects.values()), default=str)


def test_two_keys_with_the_same_secret_are_refused() -> None:
    keys = [{"id": f"k{i}", "name": "K", "secret": "gw-one-secret-for-two-keys"} for i in (1, 2)]

    assert import_error({"api_keys": keys}).startswith("api_keys[1] (k2): secret:")


# --- export ------------------------------------------------------------------------------------------------


def test_export_without_secrets_leaves_out_literal_tokens_but_keeps_env_references() -> None:
    entities_import(
        data={
            "image_models": [
                minimal_model("m-env", config={"connection": {"token": "${env.OPENAI_API_KEY}"}}),
                minimal_model("m-literal", config={"connection": {"token": "sk-literal-secret-0002"}}),
            ]
        }
    )

    plain = {m["id"]: m["config"]["connection"] for m in entities_export(with_secrets=False)["image_models"]}
    secret = {m["id"]: m["config"]["connection"] for m in entities_export(with_secrets=True)["image_models"]}

    assert plain["m-env"]["token"] == "${env.OPENAI_API_KEY}"
    assert "token" not in plain["m-literal"]
    assert secret["m-literal"]["token"] == "sk-literal-secret-0002"
    assert "sk-literal-secret" not in run("export_entities")
    assert "sk-literal-secret-0002" in run("export_entities", "--with-secrets")


def test_export_never_carries_a_key_secret(imported: dict[str, Any]) -> None:
    exported = entities_export(with_secrets=True)

    assert exported["api_keys"] == [
        {
            "id": "key-mobile-app",
            "name": "Mobile app",
            "enabled": True,
            "routes": ["route-images"],
            "rate_limit": {"requests_per_minute": 60},
        }
    ]
    text = json.dumps(exported)
    assert MOBILE_SECRET not in text
    assert ApiKey.objects.get().secret_hash not in text


def test_export_is_sorted_by_id_in_a_fixed_key_order(imported: dict[str, Any]) -> None:
    exported = entities_export(with_secrets=False)

    assert list(exported) == ["image_models", "routes", "api_keys"]
    assert [m["id"] for m in exported["image_models"]] == [
        "image-model-azure",
        "image-model-gemini",
        "image-model-openai",
    ]
    assert list(exported["image_models"][0]) == [
        "id",
        "name",
        "description",
        "tags",
        "metadata",
        "provider",
        "config",
        "models",
    ]
    assert list(exported["image_models"][0]["config"]["connection"]) == [
        "token",
        "timeout",
        "api_version",
        "deployment_id",
        "resource_name",
    ]
    assert json.dumps(exported) == json.dumps(entities_export(with_secrets=False))


def test_export_entities_prints_the_json_with_an_indent_of_two(imported: dict[str, Any]) -> None:
    output = run("export_entities")

    assert json.loads(output) == entities_export(with_secrets=False)
    assert output.startswith('{\n  "image_models": [\n    {\n      "id": "image-model-azure"')


@pytest.mark.parametrize("with_secrets", [False, True])
def test_export_then_import_into_an_empty_database_gives_identical_json(
    tmp_path: Path, imported: dict[str, Any], with_secrets: bool
) -> None:
    # Literal and env tokens, a provider default and an explicit base_url, both plugins.
    entities_import(
        data={
            "image_models": [
                minimal_model(
                    "m-literal",
                    tags=["b", "a"],
                    metadata={"team": "images"},
                    config={
                        "connection": {
                            "token": "sk-literal-secret-0003",
                            "base_url": "http://127.0.0.1:9/v1",
                        },
                        "options": {"edition": {"enabled": True, "n": 2, "input_fidelity": "high"}},
                    },
                    models={"include": ["^gpt-"], "exclude": ["mini"]},
                )
            ],
            "routes": [minimal_route(plugins=[edit_plugin(["m-literal", "image-model-gemini"], fallback=False)])],
        }
    )
    ApiKey.objects.all().delete()  # an exported key has no secret, so it cannot be created anew
    first = run("export_entities", *(["--with-secrets"] if with_secrets else []))
    for model in (RouteRef, Route, ImageModel):
        model.objects.all().delete()

    run("seed_entities", write_json(tmp_path, json.loads(first)))

    assert run("export_entities", *(["--with-secrets"] if with_secrets else [])) == first


def test_export_then_reimport_with_keys_changes_nothing(imported: dict[str, Any]) -> None:
    before = db_state()
    exported = entities_export(with_secrets=False)

    summary = entities_import(data=exported)

    assert (summary.created, summary.updated, summary.unchanged) == (0, 0, 5)
    assert db_state() == before
    assert entities_export(with_secrets=False) == exported


# --- the demo set -----------------------------------------------------------------------------------------


def test_seed_entities_creates_one_demo_image_model_per_provider_and_two_demo_routes() -> None:
    output = run("seed_entities")

    assert output.strip().splitlines() == [
        "demo set: imported 8 image models, 2 routes, 0 API keys (10 created, 0 updated)"
    ]
    models = {m.provider: m for m in ImageModel.objects.all()}
    assert sorted(models) == sorted(PROVIDERS)
    for provider, model in models.items():
        assert model.id == f"demo-{provider}"
        assert model.edition_enabled == (provider in {"openai", "gemini", "cloud-temple", "azure-openai", "local"})
        if provider == "local":
            assert (model.token, model.base_url) == ("", "")  # built in: no key, no network
        else:
            assert model.token.startswith("${env.") and model.token.endswith("}")
    assert models["openai"].token == "${env.OPENAI_API_KEY}"
    assert models["openai"].effective_base_url == "https://api.openai.com/v1"
    assert "demo" in models["local"].name.lower() and "demo" in PROVIDERS["local"].name.lower()
    local_route = Route.objects.get(id="demo-route")
    assert local_route.domains == ["localhost", "127.0.0.1"]
    assert local_route.ref_ids(RouteRef.EDIT) == ["demo-local"]
    assert local_route.ref_ids(RouteRef.GENERATION) == ["demo-local"]
    providers_route = Route.objects.get(id="demo-providers")
    assert providers_route.domains == ["localhost/openai", "127.0.0.1/openai"]
    assert providers_route.ref_ids(RouteRef.EDIT) == ["demo-openai", "demo-gemini", "demo-cloud-temple"]
    assert providers_route.ref_ids(RouteRef.GENERATION) == ["demo-openai"]
    assert not ApiKey.objects.exists()  # the demo routes stay open


def test_seeding_twice_changes_nothing() -> None:
    first = run("seed_entities")
    before = db_state()

    second = run("seed_entities")

    assert first.strip() == "demo set: imported 8 image models, 2 routes, 0 API keys (10 created, 0 updated)"
    assert second.strip() == (
        "demo set: 0 created, 10 already there and left as they are (seed_entities --reset-demo restores them)"
    )
    assert db_state() == before


def test_seeding_keeps_an_operators_changes_to_demo_entities() -> None:
    run("seed_entities")
    Route.objects.filter(id="demo-providers").update(edit_retries=2)
    gemini = ImageModel.objects.get(id="demo-gemini")
    gemini.base_url = "https://gemini-proxy.example.com/v1beta"
    gemini.token = "AIza-operator-literal-token-1234"
    gemini.save()
    before = db_state()

    run("seed_entities")

    assert db_state() == before
    assert Route.objects.get(id="demo-providers").edit_retries == 2
    gemini = ImageModel.objects.get(id="demo-gemini")
    assert gemini.base_url == "https://gemini-proxy.example.com/v1beta"
    assert gemini.plain_token() == "AIza-operator-literal-token-1234"


def test_seeding_recreates_only_the_demo_entities_that_are_missing() -> None:
    run("seed_entities")
    Route.objects.filter(id="demo-providers").update(edit_retries=2)
    Route.objects.filter(id="demo-route").delete()

    output = run("seed_entities")

    assert output.strip() == (
        "demo set: 1 created, 9 already there and left as they are (seed_entities --reset-demo restores them)"
    )
    assert Route.objects.get(id="demo-route").ref_ids(RouteRef.EDIT) == ["demo-local"]
    assert Route.objects.get(id="demo-providers").edit_retries == 2


def test_reset_demo_restores_the_demo_entities_on_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "unused-here")
    run("seed_entities")
    pristine = entities_export(with_secrets=True)
    Route.objects.filter(id="demo-providers").update(edit_retries=2)
    ImageModel.objects.filter(id="demo-gemini").update(base_url="https://gemini-proxy.example.com/v1beta")
    gemini = ImageModel.objects.get(id="demo-gemini")
    gemini.token = "AIza-operator-literal-token-1234"
    gemini.save()

    output = run("seed_entities", "--reset-demo")

    assert (
        output.strip() == "demo set: imported 8 image models, 2 routes, 0 API keys (0 created, 2 updated, 8 unchanged)"
    )
    assert entities_export(with_secrets=True) == pristine


def test_reset_demo_takes_no_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--reset-demo restores the demo set; it takes no FILE"):
        run("seed_entities", "--reset-demo", write_json(tmp_path, {}))


def test_the_demo_openai_entity_points_at_demo_openai_base_url_when_created_or_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_OPENAI_BASE_URL", "http://127.0.0.1:8765/v1")
    run("seed_entities")
    assert ImageModel.objects.get(id="demo-openai").effective_base_url == "http://127.0.0.1:8765/v1"

    # Once it exists, a plain seed leaves it alone; a reset reads the variable again.
    monkeypatch.setenv("DEMO_OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    run("seed_entities")
    assert ImageModel.objects.get(id="demo-openai").effective_base_url == "http://127.0.0.1:8765/v1"
    run("seed_entities", "--reset-demo")
    assert ImageModel.objects.get(id="demo-openai").effective_base_url == "http://127.0.0.1:9999/v1"


def test_seeding_keeps_entities_that_are_not_part_of_the_demo(imported: dict[str, Any]) -> None:
    run("seed_entities")

    assert ImageModel.objects.count() == 11
    assert ApiKey.objects.filter(id="key-mobile-app").exists()


# --- the command's file handling ----------------------------------------------------------------------------


def test_a_file_that_is_not_json_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"image_models": [\n  {"id": "m1",}\n]}')

    with pytest.raises(CommandError, match=r"broken\.json is not valid JSON: .* at line 2, column"):
        run("seed_entities", str(path))


def test_a_missing_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read .*nowhere\.json"):
        run("seed_entities", str(tmp_path / "nowhere.json"))
