"""The circuit breaker's state is shared: every gunicorn worker sees the same breaker (database
store, no Redis), every instance too (Redis store), and a store that is down lets calls through."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from django.db import connection
from django.test import override_settings

from edits_api import resilience
from edits_api.errors import GatewayError
from edits_api.models import CircuitBreaker
from tests.gateway import Gateway, make_image_model, make_route
from tests.gunicorn import gunicorn
from tests.standin import StandIn, image_bytes

REDIS_TEST_URL = "redis://127.0.0.1:6379/13"  # a database of its own, keys under gateway:breaker:
PNG = image_bytes("png", (64, 64))
FAILURE = GatewayError(502, "OpenAI answered HTTP 500: boom.", type="upstream_error", code="upstream_error")


def open_circuit(image_model_id: str) -> None:
    """What a failed request does, from this process: one failure opens it (minimum 1)."""
    admission = resilience.breaker_admit(image_model_id)
    assert admission is not None
    with override_settings(BREAKER_MIN_REQUESTS=1):
        resilience.breaker_record(admission, fingerprint="f", error=FAILURE)


@pytest.fixture
def two_workers(transactional_db: None, standin: StandIn, tmp_path: Path) -> Iterator[str]:
    """gunicorn as `make run` serves it: two workers, no Redis, the test database."""
    make_route("served", ["127.0.0.1"], [make_image_model("img-openai", "openai", standin)], edit_fallback=False)
    with gunicorn(tmp_path, GUNICORN_WORKERS="2", REDIS_URL="") as url:
        yield url


def test_provider_health_is_the_same_on_every_reload_under_two_workers(
    two_workers: str, standin: StandIn, admin_user
) -> None:
    open_circuit("img-openai")
    # Logged in through the served admin: its SECRET_KEY is its own, so a session made here would not do.
    browser = requests.Session()
    login = browser.get(two_workers + "/admin/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert csrf is not None
    browser.post(
        two_workers + "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": csrf.group(1), "username": "admin", "password": "password"},
        headers={"Referer": two_workers + "/admin/login/"},
        timeout=10,
    )

    pages = [browser.get(two_workers + "/admin/edits_api/providerhealth/", timeout=10) for _ in range(8)]
    edits = [
        requests.post(
            two_workers + "/v1/images/edits", files={"image": ("p.png", PNG, "image/png")}, data={"prompt": "hat"}
        )
        for _ in range(6)
    ]

    assert {page.status_code for page in pages} == {200}
    assert all("open (" in page.text and "502 upstream_error: OpenAI answered HTTP 500: boom." in page.text
               for page in pages)  # fmt: skip
    assert {edit.status_code for edit in edits} == {503}
    assert standin.received == []

    # Closing it on one worker closes it for all.
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', pages[-1].text)
    assert token is not None
    closed = browser.post(
        two_workers + "/admin/edits_api/providerhealth/",
        data={"csrfmiddlewaretoken": token.group(1), "action": "close_circuit", "_selected_action": "img-openai"},
        headers={"Referer": two_workers + "/admin/edits_api/providerhealth/"},
        timeout=10,
    )
    assert closed.status_code == 200, closed.text[:300]  # redirected back to the list
    after = [
        requests.post(
            two_workers + "/v1/images/edits", files={"image": ("p.png", PNG, "image/png")}, data={"prompt": "hat"}
        )
        for _ in range(4)
    ]
    assert {edit.status_code for edit in after} == {200}
    browser.close()


@pytest.mark.django_db(transaction=True)
@override_settings(BREAKER_COOLDOWN_SECONDS=1)
def test_exactly_one_caller_gets_the_trial_call() -> None:
    open_circuit("img-trial")
    time.sleep(1.05)
    admissions: list[resilience.Admission | None] = []

    def admit() -> None:
        try:
            admissions.append(resilience.breaker_admit("img-trial"))
        finally:
            connection.close()  # this thread's own connection, or the test database stays in use

    threads = [threading.Thread(target=admit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(1 for admission in admissions if admission is not None and admission.trial) == 1
    assert sum(1 for admission in admissions if admission is None) == 7


@pytest.fixture
def redis_breaker() -> Iterator[str]:
    """An image model id whose breaker lives in Redis for the test, removed afterwards."""
    image_model_id = f"img-redis-{uuid.uuid4().hex[:8]}"
    with override_settings(REDIS_URL=REDIS_TEST_URL):
        yield image_model_id
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.delete(f"gateway:breaker:{image_model_id}", f"gateway:breaker:{image_model_id}:failed")


@pytest.mark.django_db
def test_the_redis_store_is_shared_by_every_instance(redis_breaker: str) -> None:
    other_instance = resilience._RedisStore(REDIS_TEST_URL)  # another process's own client

    with override_settings(BREAKER_MIN_REQUESTS=2, BREAKER_FAILURE_RATE=0.5):
        for fingerprint in ("same", "same", "other"):  # the same request twice counts once
            admission = resilience.breaker_admit(redis_breaker)
            assert admission is not None
            resilience.breaker_record(admission, fingerprint=fingerprint, error=FAILURE)

    seen = other_instance.read(redis_breaker)
    assert seen.open_until > time.time()
    assert (seen.failures, seen.requests) == (2, 2)
    assert resilience.breaker_admit(redis_breaker) is None
    assert not CircuitBreaker.objects.filter(pk=redis_breaker).exists()  # Redis, not the database

    resilience.breaker_close(redis_breaker)
    assert other_instance.read(redis_breaker).open_until == 0


def test_a_breaker_store_that_is_down_lets_calls_through(gateway: Gateway) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):  # nothing listens there
        response = gateway.edit(files=[("image", ("p.png", PNG, "image/png"))], data={"prompt": "hat"})

    assert response.status_code == 200, response.text
