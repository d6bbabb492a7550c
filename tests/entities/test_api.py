"""The admin REST API (/api/v1/...) through real HTTP against the live gateway: CRUD on each entity
kind in the JSON form, the importer's validation with `param` naming the JSON path, secrets
write-only, and admin tokens (made by `create_admin_token`, stored hashed, revocable)."""

from __future__ import annotations

import copy
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from entities import services
from entities.interchange import EDIT_PLUGIN, GENERATION_PLUGIN
from entities.models import AdminToken, ApiKey, ImageModel, Route, hash_secret
from tests.entities.test_interchange import another_connection_holding_sqlite

PROVIDER_TOKEN = "sk-literal-provider-token-4821-abcdefgh"
KEY_SECRET = "gw-client-key-secret-for-tests-9317"


@dataclass
class AdminApi:
    """A client for /api/v1 on the live gateway that keeps every answer it got, to search for secrets."""

    url: str
    token: str
    answers: list[requests.Response] = field(default_factory=list)

    def call(self, method: str, path: str, json: Any = None, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {"Authorization": f"Bearer {self.token if token is None else token}"})
        answer = requests.request(method, self.url + path, json=json, headers=headers, timeout=30, **kwargs)
        self.answers.append(answer)
        return answer

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, json: Any, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, json, **kwargs)

    def put(self, path: str, json: Any, **kwargs: Any) -> requests.Response:
        return self.call("PUT", path, json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("DELETE", path, **kwargs)

    def everything_answered(self) -> str:
        return "\n".join(f"{a.headers}\n{a.text}" for a in self.answers)


@pytest.fixture
def admin_token(transactional_db: None) -> str:
    _, token = services.admin_token_create(name="tests")
    return token


@pytest.fixture
def admin_headers(admin_token: str) -> dict[str, str]:
    """The admin token as Django's test client sends it."""
    return {"HTTP_AUTHORIZATION": f"Bearer {admin_token}"}


@pytest.fixture
def api(live_server: Any, admin_token: str) -> Iterator[AdminApi]:
    client = AdminApi(url=live_server.url + "/api/v1", token=admin_token)
    yield client
    # Whatever a test did, no answer ever carried a secret it wrote.
    answered = client.everything_answered()
    assert PROVIDER_TOKEN not in answered
    assert KEY_SECRET not in answered
    assert admin_token not in answered


def image_model(id: str = "img-openai", **overrides: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": id,
        "name": "OpenAI images",
        "description": "gpt-image-1",
        "tags": ["prod"],
        "metadata": {"team": "imaging"},
        "provider": "openai",
        "config": {
            "connection": {"base_url": "https://api.openai.com/v1", "token": PROVIDER_TOKEN, "timeout": 60000},
            "options": {
                "generation": {"enabled": True, "model": "gpt-image-1"},
                "edition": {"enabled": True, "model": "gpt-image-1", "n": 1, "size": "1024x1024"},
            },
        },
        "models": {"include": ["^gpt-image"], "exclude": []},
    }
    entity.update(overrides)
    return entity


def route(id: str = "route-images", refs: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": id,
        "name": "Images",
        "enabled": True,
        "frontend": {"domains": ["images.example.com", "api.example.com/tenant"]},
        "plugins": [
            {
                "enabled": True,
                "plugin": EDIT_PLUGIN,
                "config": {"refs": refs if refs is not None else ["img-openai"], "max_size_upload": 10_000_000},
            },
            {"enabled": True, "plugin": GENERATION_PLUGIN, "config": {"refs": ["img-openai"]}},
        ],
    }
    entity.update(overrides)
    return entity


def api_key(id: str = "key-mobile", **overrides: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": id,
        "name": "Mobile app",
        "enabled": True,
        "secret": KEY_SECRET,
        "routes": ["route-images"],
        "rate_limit": {"requests_per_minute": 60},
    }
    entity.update(overrides)
    return entity


def without(entity: dict[str, Any], *paths: str) -> dict[str, Any]:
    """`entity` less the keys at dotted `paths` (what an answer leaves out: the secrets)."""
    result = copy.deepcopy(entity)
    for path in paths:
        *parents, last = path.split(".")
        holder = result
        for parent in parents:
            holder = holder[parent]
        holder.pop(last, None)
    return result


def assert_error(answer: requests.Response, status: int, code: str, param: str | None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"] and "ErrorDetail" not in error["message"]
    return error


def expected(entity: dict[str, Any]) -> dict[str, Any]:
    """What the API answers for an image model written as `entity`: everything but the literal token."""
    return without(entity, "config.connection.token")


# --- create, read, replace, delete ---------------------------------------------------------------


def test_an_image_model_is_created_read_replaced_and_deleted(api: AdminApi) -> None:
    created = api.post("/image-models", image_model())
    assert created.status_code == 201, created.text
    assert created.json() == expected(image_model())
    assert created.headers["Location"] == api.url + "/image-models/img-openai"

    assert api.get("/image-models/img-openai").json() == expected(image_model())
    assert api.get("/image-models").json() == {"image_models": [expected(image_model())]}

    changed = image_model(name="OpenAI (EU)", config={"connection": {"timeout": 30000}, "options": {}})
    replaced = api.put("/image-models/img-openai", changed)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "OpenAI (EU)"
    assert replaced.json()["config"] == {
        "connection": {"timeout": 30000},
        "options": {"generation": {}, "edition": {}},
    }
    assert api.get("/image-models/img-openai").json() == replaced.json()

    assert api.delete("/image-models/img-openai").status_code == 204
    assert_error(api.get("/image-models/img-openai"), 404, "not_found", None)
    assert not ImageModel.objects.exists()


def test_a_route_is_created_read_replaced_and_deleted(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/image-models", image_model("img-gemini", provider="gemini", config={}, models={}))

    created = api.post("/routes", route())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["frontend"] == {"domains": ["images.example.com", "api.example.com/tenant"]}
    assert [p["config"]["refs"] for p in body["plugins"]] == [["img-openai"], ["img-openai"]]
    assert api.get("/routes/route-images").json() == body
    assert api.get("/routes").json() == {"routes": [body]}

    # A replace is whole: the generation plugin left out is gone, the refs are the new ones in order.
    replacement = route(refs=["img-gemini", "img-openai"])
    replacement["plugins"] = replacement["plugins"][:1]
    replaced = api.put("/routes/route-images", replacement)
    assert replaced.status_code == 200, replaced.text
    assert [(p["plugin"], p["config"]["refs"]) for p in replaced.json()["plugins"]] == [
        (EDIT_PLUGIN, ["img-gemini", "img-openai"])
    ]
    assert Route.objects.get(pk="route-images").generation_plugin_enabled is None

    assert api.delete("/routes/route-images").status_code == 204
    assert_error(api.get("/routes/route-images"), 404, "not_found", None)
    # The image models it used are free to go now.
    assert api.delete("/image-models/img-openai").status_code == 204


def test_an_api_key_is_created_read_replaced_and_deleted(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/routes", route())

    created = api.post("/api-keys", api_key())
    assert created.status_code == 201, created.text
    assert created.json() == without(api_key(), "secret")
    assert ApiKey.objects.get(pk="key-mobile").secret_hash == hash_secret(KEY_SECRET)
    assert api.get("/api-keys/key-mobile").json() == created.json()
    assert api.get("/api-keys").json() == {"api_keys": [created.json()]}

    replaced = api.put("/api-keys/key-mobile", without(api_key(enabled=False, rate_limit={}), "secret"))
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == {
        "id": "key-mobile",
        "name": "Mobile app",
        "enabled": False,
        "routes": ["route-images"],
        "rate_limit": {},
    }
    # Replaced without a secret: the stored one still opens the route.
    assert ApiKey.objects.get(pk="key-mobile").secret_hash == hash_secret(KEY_SECRET)

    assert api.delete("/api-keys/key-mobile").status_code == 204
    assert_error(api.get("/api-keys/key-mobile"), 404, "not_found", None)
    assert_error(api.delete("/api-keys/key-mobile"), 404, "not_found", None)


def test_what_get_answers_can_be_put_back_unchanged(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/routes", route())
    api.post("/api-keys", api_key())
    stored_before = {
        "token": ImageModel.objects.get().token,
        "secret_hash": ApiKey.objects.get().secret_hash,
        "updated": [m.objects.get().updated_at for m in (ImageModel, Route, ApiKey)],
    }

    for path in ("/image-models/img-openai", "/routes/route-images", "/api-keys/key-mobile"):
        read = api.get(path).json()
        put_back = api.put(path, read)
        assert put_back.status_code == 200, put_back.text
        assert put_back.json() == read
        assert api.get(path).json() == read

    # Nothing was even rewritten: the import saw the same entity and the secrets were kept.
    assert stored_before == {
        "token": ImageModel.objects.get().token,
        "secret_hash": ApiKey.objects.get().secret_hash,
        "updated": [m.objects.get().updated_at for m in (ImageModel, Route, ApiKey)],
    }


def test_put_on_a_missing_id_creates_the_entity(api: AdminApi) -> None:
    answer = api.put("/image-models/img-new", without(image_model("img-new"), "id"))
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == "img-new"
    assert answer.headers["Location"] == api.url + "/image-models/img-new"
    assert ImageModel.objects.get(pk="img-new").plain_token() == PROVIDER_TOKEN


def test_an_image_model_replaced_without_token_keeps_the_stored_one(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    answer = api.put("/image-models/img-openai", without(image_model(name="renamed"), "config.connection.token"))
    assert answer.status_code == 200, answer.text
    assert ImageModel.objects.get().plain_token() == PROVIDER_TOKEN

    # A token sent is the new one; an env reference is not a secret and is answered as written.
    answer = api.put("/image-models/img-openai", image_model(config={"connection": {"token": "${env.OPENAI_KEY}"}}))
    assert answer.json()["config"]["connection"] == {"token": "${env.OPENAI_KEY}", "timeout": 180000}
    assert ImageModel.objects.get().token == "${env.OPENAI_KEY}"


# --- refusals --------------------------------------------------------------------------------------


def test_creating_an_existing_id_is_a_409_and_changes_nothing(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    error = assert_error(api.post("/image-models", image_model(name="other")), 409, "entity_exists", None)
    assert "img-openai" in error["message"]
    assert ImageModel.objects.get().name == "OpenAI images"


@contextmanager
def created_but_not_committed(
    entity: dict[str, Any], kind: services.EntityKind = services.IMAGE_MODELS
) -> Iterator[Callable[[], None]]:
    """Creates `entity` (an image model unless `kind` says otherwise) through the service, in a transaction
    of another connection that commits only when the yielded function is called: a concurrent create
    caught before its commit."""
    created, commit = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def winner() -> None:
        try:
            with transaction.atomic():
                services.entity_create(kind=kind, data=entity)
                created.set()
                commit.wait(timeout=60)
        except BaseException as exc:
            failures.append(exc)
        finally:
            created.set()
            connection.close()  # this thread's own connection, or the test database stays in use

    thread = threading.Thread(target=winner)
    thread.start()
    assert created.wait(timeout=60)
    try:
        yield commit.set
    finally:
        commit.set()
        thread.join(timeout=60)
    assert failures == []


def waits_for_the_held_transaction(answer: Future[requests.Response]) -> None:
    """Returns once the request waits on the other transaction's lock, or has answered. PostgreSQL
    shows the wait; SQLite's busy wait shows nowhere, so there it is given a second to get there."""
    if connection.vendor != "postgresql":
        wait([answer], timeout=1)
        return
    deadline = time.monotonic() + 30
    while not answer.done():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, "the request never reached the database"
        time.sleep(0.05)


def test_a_create_that_loses_the_race_for_its_id_is_a_409_and_changes_nothing(api: AdminApi) -> None:
    api.get("/image-models")  # the token's last use is written now, not by the racing request
    with created_but_not_committed(image_model(name="winner")) as commit, ThreadPoolExecutor(1) as pool:
        loser = pool.submit(api.post, "/image-models", image_model(name="loser"))
        waits_for_the_held_transaction(loser)
        commit()
        answer = loser.result(timeout=60)

    error = assert_error(answer, 409, "entity_exists", None)
    assert "img-openai" in error["message"]
    assert ImageModel.objects.get().name == "winner"


@pytest.mark.parametrize("race", range(4))  # four races: their windows are narrow
def test_racing_creates_of_one_id_give_one_201_and_409s(api: AdminApi, race: int) -> None:
    api.get("/image-models")  # the token's last use is written now, not by the racing requests
    start = threading.Barrier(6)

    def create(number: int) -> requests.Response:
        start.wait(timeout=30)
        return api.post("/image-models", image_model(name=f"racer {number}"))

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(create, range(6)))

    assert sorted(a.status_code for a in answers) == [201] + [409] * 5, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_error(answer, 409, "entity_exists", None)
    (winner,) = [a.json() for a in answers if a.status_code == 201]
    assert ImageModel.objects.get().name == winner["name"]


# What only the database says: PostgreSQL's and SQLite's wording, constraint and index names.
DATABASE_TEXT = (
    "DETAIL",
    "duplicate key",
    "unique constraint",
    "UNIQUE constraint",
    "database is locked",
    "_pkey",
    "secret_hash_key",
    "entities_",
    "foreign key",
    "FOREIGN KEY",
)


def assert_no_database_text(answer: requests.Response) -> None:
    for text in DATABASE_TEXT:
        assert text not in answer.text, answer.text


def test_a_put_that_loses_the_race_to_create_its_id_replaces_what_the_winner_created(api: AdminApi) -> None:
    api.get("/image-models")  # the token's last use is written now, not by the racing request
    with created_but_not_committed(image_model(name="winner")) as commit, ThreadPoolExecutor(1) as pool:
        loser = pool.submit(api.put, "/image-models/img-openai", image_model(name="loser"))
        waits_for_the_held_transaction(loser)
        commit()
        answer = loser.result(timeout=60)

    assert_no_database_text(answer)
    assert answer.status_code == 200, answer.text  # a replace of the winner's entity, as a later PUT would be
    assert answer.json() == expected(image_model(name="loser"))
    assert ImageModel.objects.get().name == "loser"


@pytest.mark.parametrize("race", range(4))  # four races: their windows are narrow
def test_racing_puts_of_one_new_id_give_one_201_and_replaces(api: AdminApi, race: int) -> None:
    api.get("/image-models")  # the token's last use is written now, not by the racing requests
    start = threading.Barrier(6)

    def put(number: int) -> requests.Response:
        start.wait(timeout=30)
        return api.put("/image-models/img-openai", image_model(name=f"racer {number}"))

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(put, range(6)))

    for answer in answers:
        assert_no_database_text(answer)
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    names = {a.json()["name"] for a in answers}
    assert names == {f"racer {number}" for number in range(6)}
    assert ImageModel.objects.get().name in names


def test_a_key_that_loses_the_race_for_its_secret_is_refused_without_the_database_text(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/routes", route())
    with created_but_not_committed(api_key("key-first"), services.API_KEYS) as commit, ThreadPoolExecutor(1) as pool:
        loser = pool.submit(api.post, "/api-keys", api_key("key-second"))
        waits_for_the_held_transaction(loser)
        commit()
        answer = loser.result(timeout=60)

    assert_no_database_text(answer)
    assert answer.status_code in (400, 409), answer.text
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert list(ApiKey.objects.values_list("id", flat=True)) == ["key-first"]


def deleted_meanwhile(
    kind: services.EntityKind, entity_id: str, before_insert_into: str
) -> AbstractContextManager[None]:
    """While in effect, this connection's first INSERT into the table `before_insert_into` is held until
    another connection has deleted the entity, through the service, and committed: an operator's DELETE
    that lands after the import checked its refs and before it commits."""
    deleted: list[str] = []

    def delete() -> None:
        try:
            services.entity_delete(kind=kind, entity_id=entity_id)
        finally:
            connection.close()  # this thread's own connection, or the test database stays in use

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if not deleted and sql.startswith(f'INSERT INTO "{before_insert_into}"'):
            with ThreadPoolExecutor(1) as pool:
                pool.submit(delete).result(timeout=30)
            deleted.append(entity_id)
        return execute(sql, params, many, context)

    return connection.execute_wrapper(wrapper)


def test_a_write_while_the_database_is_busy_is_a_503_with_retry_after(
    client: Client, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock: a PostgreSQL transaction does not begin waiting on another")
    # Django's test client, not the live server: the request runs on this thread's connection, whose
    # busy timeout the holder shortens to a tenth of a second.
    assert client.get("/api/v1/image-models", **admin_headers).status_code == 200  # the token's last use is written now

    with another_connection_holding_sqlite("write"):
        answer = client.post("/api/v1/image-models", image_model(), content_type="application/json", **admin_headers)

    # The contract's database_unavailable: the client may retry; it is not told its entity is wrong.
    error = assert_error(answer, 503, "database_unavailable", None)
    assert error["type"] == "server_error"
    assert answer.headers["Retry-After"] == "5"
    assert_no_database_text(answer)
    assert "database is locked" in caplog.text  # the database's own words go to the log only
    assert not ImageModel.objects.exists()


def test_a_route_whose_image_model_is_deleted_before_it_commits_is_refused_not_a_500(
    client: Client, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's writer holds the database lock: no other connection can delete meanwhile")
    # Django's test client, not the live server: the request runs on this thread's connection, so its
    # INSERT is where the test makes the delete happen.
    created = client.post("/api/v1/image-models", image_model(), content_type="application/json", **admin_headers)
    assert created.status_code == 201, created.text

    # One ref, so the deletion comes after every check of the importer's. PostgreSQL checks the ref's
    # foreign key when the transaction commits (Django declares it deferred).
    one_ref = route(plugins=route()["plugins"][:1])
    with deleted_meanwhile(services.IMAGE_MODELS, "img-openai", before_insert_into="entities_routeref"):
        answer = client.post("/api/v1/routes", one_ref, content_type="application/json", **admin_headers)

    # A conflict with another writer, not the client's mistake: 409, and the same request may pass later.
    error = assert_error(answer, 409, "entity_conflict", None)
    assert error["type"] == "invalid_request_error"
    assert "was deleted" in error["message"] and "nothing was written" in error["message"], error
    assert_no_database_text(answer)
    assert PROVIDER_TOKEN not in answer.text
    # The database's own words go to the log, with the entity they were for.
    assert "routes[0] (route-images)" in caplog.text and "foreign key" in caplog.text
    assert not Route.objects.exists() and not ImageModel.objects.exists()


def test_an_id_in_the_body_must_match_the_url(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    error = assert_error(api.put("/image-models/img-openai", image_model("img-other")), 400, "invalid_value", "id")
    assert "img-other" in error["message"] and "img-openai" in error["message"]
    assert list(ImageModel.objects.values_list("pk", flat=True)) == ["img-openai"]


def test_an_id_that_cannot_exist_is_a_404_or_refused_not_a_query(api: AdminApi) -> None:
    # A NUL byte would make PostgreSQL refuse the query itself.
    assert_error(api.get("/image-models/bad%00id"), 404, "not_found", None)
    assert_error(api.delete("/routes/bad%00id"), 404, "not_found", None)
    assert_error(api.post("/routes", route("bad\u0000id")), 400, "invalid_value", "id")
    error = assert_error(api.put("/api-keys/bad%00id", without(api_key(), "id")), 400, "invalid_value", "id")
    assert "letters, digits" in error["message"]


def test_deleting_an_image_model_a_route_uses_is_a_409_naming_the_routes(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/routes", route())
    api.post("/routes", route("route-other", frontend={"domains": ["other.example.com"]}))

    error = assert_error(api.delete("/image-models/img-openai"), 409, "entity_in_use", None)
    assert "route-images" in error["message"] and "route-other" in error["message"]
    assert ImageModel.objects.filter(pk="img-openai").exists()


@pytest.mark.parametrize(
    ("path", "entity", "param", "says"),
    [
        ("/image-models", without(image_model("img-new"), "id"), "id", "is required"),
        ("/image-models", image_model("bad id!"), "id", "letters, digits"),
        ("/image-models", image_model("img-new", provider="nope"), "provider", "nope"),
        (
            "/image-models",
            image_model("img-new", config={"options": {"edition": {"enabled": True, "colour": "red"}}}),
            "config.options.edition",
            "unknown key 'colour'",
        ),
        (
            "/image-models",
            image_model("img-new", provider="x-ai", config={"options": {"edition": {"enabled": True}}}),
            "config.options.edition",
            "cannot edit images",
        ),
        (
            "/image-models",
            image_model("img-new", models={"include": ["(unclosed"]}),
            "models.include",
            "regular expression",
        ),
        (
            "/image-models",
            image_model("img-new", config={"connection": {"timeout": "slow"}}),
            "config.connection.timeout",
            "whole number",
        ),
        (
            "/routes",
            route("route-new", refs=["img-missing"]),
            "plugins[0].config.refs[0]",
            "no image model 'img-missing'",
        ),
        ("/routes", route("route-new", frontend={"domains": []}), "frontend.domains", "cannot be blank"),
        ("/api-keys", api_key(secret="short"), "secret", "at least 16"),
        ("/api-keys", without(api_key(), "secret"), "secret", "needs a secret"),
        ("/api-keys", api_key(rate_limit={"requests_per_minute": 0}), "rate_limit.requests_per_minute", "at least 1"),
        ("/api-keys", api_key(routes=["route-missing"]), "routes", "route-missing"),
    ],
)
def test_an_invalid_entity_is_a_400_whose_param_is_the_json_path(
    api: AdminApi, path: str, entity: dict[str, Any], param: str, says: str
) -> None:
    api.post("/image-models", image_model("img-openai"))
    api.post("/routes", route())
    counts = [m.objects.count() for m in (ImageModel, Route, ApiKey)]

    error = assert_error(api.post(path, entity), 400, "invalid_value", param)
    assert says in error["message"]
    assert error["type"] == "invalid_request_error"
    assert [m.objects.count() for m in (ImageModel, Route, ApiKey)] == counts


def test_every_problem_is_in_the_message_and_the_first_is_the_param(api: AdminApi) -> None:
    entity = image_model(models={"include": ["("], "exclude": ["["]}, config={"connection": {"timeout": 0}})
    error = assert_error(api.post("/image-models", entity), 400, "invalid_value", "models.include")
    assert "models.exclude: " in error["message"] and "config.connection.timeout: " in error["message"]


def test_a_body_that_is_not_a_json_object_is_refused(api: AdminApi) -> None:
    assert_error(api.post("/image-models", [image_model()]), 400, "invalid_value", None)
    assert_error(
        api.post("/image-models", None, data="{not json", headers=_json_headers(api.token)),
        400,
        "invalid_request_body",
        None,
    )
    assert_error(
        api.post("/image-models", None, data="id=x", headers={"Authorization": f"Bearer {api.token}"}),
        415,
        "unsupported_media_type",
        None,
    )
    assert_error(api.call("PATCH", "/image-models", {}), 405, "method_not_allowed", None)


def _json_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_an_invalid_request_never_echoes_the_secrets_it_carried(api: AdminApi) -> None:
    # The fixture checks every answer; these refusals carry a token and a secret beside the fault.
    api.post("/image-models", image_model(provider="nope"))
    api.post("/image-models", image_model(config={"connection": {"token": PROVIDER_TOKEN, "bogus": 1}}))
    api.post("/api-keys", api_key(routes=["route-missing"]))
    api.post("/api-keys", api_key(rate_limit={"requests_per_minute": KEY_SECRET}))
    assert all(a.status_code == 400 for a in api.answers)


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer gwadm-not-a-token-we-made"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"api-key": "gwadm-not-a-token-we-made"},
    ],
    ids=["none", "empty", "wrong", "basic", "api-key-header"],
)
def test_without_a_valid_admin_token_every_endpoint_is_a_401(api: AdminApi, headers: dict[str, str]) -> None:
    ImageModel.objects.create(id="img-openai", name="x", provider="openai", token=PROVIDER_TOKEN)
    for method, path in [
        ("GET", "/image-models"),
        ("POST", "/image-models"),
        ("GET", "/image-models/img-openai"),
        ("PUT", "/image-models/img-openai"),
        ("DELETE", "/image-models/img-openai"),
        ("GET", "/routes"),
        ("GET", "/api-keys"),
    ]:
        answer = api.call(method, path, image_model(), headers=headers)
        assert_error(answer, 401, "invalid_api_key", None)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert ImageModel.objects.get().name == "x"


def test_a_client_key_secret_is_not_an_admin_token(api: AdminApi) -> None:
    api.post("/image-models", image_model())
    api.post("/routes", route())
    api.post("/api-keys", api_key())
    assert_error(api.get("/routes", token=KEY_SECRET), 401, "invalid_api_key", None)


def test_a_token_revoked_in_the_admin_is_refused_from_the_next_request(
    api: AdminApi, admin_token: str, admin_client: Client
) -> None:
    assert api.get("/routes").status_code == 200
    stored = AdminToken.objects.get(name="tests")

    changelist = admin_client.get("/admin/entities/admintoken/")
    assert changelist.status_code == 200
    page = changelist.content.decode()
    assert "tests" in page and stored.token_hint in page and admin_token not in page

    answer = admin_client.post(
        "/admin/entities/admintoken/", {"action": "revoke", "_selected_action": [stored.pk]}, follow=True
    )
    assert "Revoked 1 admin token" in answer.content.decode()

    error = assert_error(api.get("/routes"), 401, "invalid_api_key", None)
    assert "revoked" in error["message"]


def test_a_request_records_when_the_token_was_last_used(api: AdminApi) -> None:
    assert AdminToken.objects.get().last_used_at is None
    api.get("/routes")
    first_use = AdminToken.objects.get().last_used_at
    assert first_use is not None
    api.get("/routes")  # within the minute: not written again
    assert AdminToken.objects.get().last_used_at == first_use


def test_create_admin_token_prints_the_token_once_and_stores_only_its_hash(
    live_server: Any, transactional_db: None
) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_admin_token", "terraform-ci", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith("gwadm-") and len(token) > 40 and "\n" not in token
    assert "terraform-ci" in err.getvalue() and token not in err.getvalue()

    stored = AdminToken.objects.get()
    assert stored.name == "terraform-ci"
    assert stored.token_hash == hash_secret(token)
    assert token not in str(AdminToken.objects.values().get())  # the hash and a 4-character hint only
    answer = requests.get(live_server.url + "/api/v1/routes", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.json() == {"routes": []}

    # One live token per name; after a revoke the name may be used again, for a different token.
    with pytest.raises(CommandError, match="already named 'terraform-ci'"):
        call_command("create_admin_token", "terraform-ci", stdout=io.StringIO(), stderr=io.StringIO())
    services.admin_tokens_revoke(admin_tokens=[stored])
    again = io.StringIO()
    call_command("create_admin_token", "terraform-ci", stdout=again, stderr=io.StringIO())
    assert again.getvalue().strip() != token
    assert AdminToken.objects.count() == 2


def test_the_admin_cannot_make_a_token_it_could_not_show_only_once(admin_client: Client) -> None:
    assert admin_client.get("/admin/entities/admintoken/add/").status_code == 403


# --- OpenAPI -----------------------------------------------------------------------------------------


def test_the_openapi_description_has_the_admin_api_with_bearer_security(
    live_server: Any, transactional_db: None
) -> None:
    spec = requests.get(live_server.url + "/openapi.json", timeout=30).json()
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    operations = {
        (path, method): operation
        for path, methods in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in methods.items()
    }
    assert set(operations) == {
        (f"/api/v1/{kind}{item}", method)
        for kind in ("image-models", "routes", "api-keys")
        for item, methods in (("", ("get", "post")), ("/{entity_id}", ("get", "put", "delete")))
        for method in methods
    }
    for operation in operations.values():
        assert operation["tags"] == ["Admin API"]
        assert operation["security"] == [{"adminToken": []}]
        assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"] in (
            "#/components/schemas/Error"
        )
    assert "Error" in spec["components"]["schemas"]
    # Secrets are write-only: in the request shapes, never in the answers'.
    schemas = spec["components"]["schemas"]
    assert "token" in schemas["ConnectionRequest"]["properties"]
    assert "token" not in schemas["Connection"]["properties"]
    assert "secret" in schemas["ApiKeyRequest"]["properties"]
    assert "secret" not in schemas["ApiKey"]["properties"]
    # The image API keeps its own, client-key security.
    assert {"bearer": []} in spec["paths"]["/v1/images/edits"]["post"]["security"]


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))


def test_fuzzed_admin_requests_never_get_a_5xx_and_every_error_has_the_envelope(
    api: AdminApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """Schemathesis over every admin operation, valid and invalid bodies and ids, against entities
    that exist (so replaces and deletes meet real ones): no 5xx, answers as documented."""
    api.post("/image-models", image_model())
    api.post("/routes", route())
    api.post("/api-keys", api_key())
    base_url = api.url.removesuffix("/api/v1")
    document = requests.get(base_url + "/openapi.json", timeout=10).json()
    for methods in document["paths"].values():
        for operation in methods.values():
            # Else schemathesis spends cases leaving the token out; the 401s are tested above.
            operation.pop("security", None)
    schema = schemathesis.openapi.from_dict(document)
    operations = [
        schema[f"/api/v1/{kind}{item}"][method]
        for kind in ("image-models", "routes", "api-keys")
        for item, methods in (("", ("GET", "POST")), ("/{entity_id}", ("GET", "PUT", "DELETE")))
        for method in methods
    ]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    cases = st.one_of([operation.as_strategy(mode) for operation in operations for mode in modes])
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {api.token}"}

    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        api.answers.append(response)  # searched for secrets by the fixture
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)
        if response.status_code >= 300:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text

    with requests.Session() as session:
        run()

    with capsys.disabled():
        print(f"\nfuzzed {sum(statuses.values())} admin API requests; statuses {dict(sorted(statuses.items()))}")
    assert not any(status >= 500 for status in statuses)
    assert statuses[200] and statuses[400], statuses
