"""Fallback across refs, retries, the circuit breaker and idempotency, against real stand-ins."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from django.test import override_settings
from openai import OpenAI
from PIL import Image

from edits_api import resilience
from edits_api.models import UsageRecord
from entities.models import ImageModel
from tests.gateway import Gateway, make_image_model, make_route
from tests.hostile import Hostile
from tests.standin import StandIn, image_bytes, mask_bytes

PNG = image_bytes("png", (64, 64))
FILES = [("image", ("p.png", PNG, "image/png"))]


@pytest.fixture
def backup() -> Iterator[StandIn]:
    """A second provider, so a fallback is visible as a call to another server."""
    with StandIn() as server:
        yield server


def post(gateway: Gateway, path: str, data: dict | None = None, headers: dict | None = None, files=FILES):
    return requests.post(
        gateway.url + path, files=files, data=data or {"prompt": "hat"}, headers=headers or {}, timeout=30
    )


def test_fallback_from_a_refused_port_to_the_next_ref(gateway: Gateway, backup: StandIn) -> None:
    dead = make_image_model("img-dead", "openai", gateway.standin, base_url="http://127.0.0.1:9/v1")
    alive = make_image_model("img-backup", "openai", backup)
    make_route("fb", ["localhost/fb"], [dead, alive])

    response = post(gateway, "/fb/v1/images/edits")

    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Image-Model"] == "img-backup"
    assert response.headers["X-Gateway-Attempts"] == "2"
    assert len(backup.received) == 1


def test_fallback_from_openai_503_to_gemini_sends_gemini_its_own_request(gateway: Gateway, backup: StandIn) -> None:
    overloaded = make_image_model("img-overloaded", "openai", backup)
    gemini = make_image_model(
        "img-gem2", "gemini", gateway.standin, edition={"enabled": True, "model": "gemini-3-pro-image"}
    )
    make_route("fb", ["localhost/fb"], [overloaded, gemini])
    backup.fail_always("503")

    response = post(gateway, "/fb/v1/images/edits", data={"prompt": "hat", "size": "1536x1024", "quality": "high"})

    assert response.status_code == 200, response.text
    assert [r.path for r in backup.received] == ["/v1/images/edits"]
    sent = gateway.standin.last
    assert sent.path == "/v1beta/models/gemini-3-pro-image:generateContent"
    assert sent.json["generationConfig"]["imageConfig"]["aspectRatio"] == "3:2"


def test_no_fallback_on_a_moderation_block(gateway: Gateway, backup: StandIn) -> None:
    first = make_image_model("img-first", "openai", gateway.standin)
    second = make_image_model("img-second", "openai", backup)
    make_route("fb", ["localhost/fb"], [first, second])
    gateway.standin.fail_next("moderation")

    response = post(gateway, "/fb/v1/images/edits")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "moderation_blocked"
    assert backup.received == []


def test_a_named_ref_gets_no_fallback_unless_the_route_allows_it(gateway: Gateway, backup: StandIn) -> None:
    first = make_image_model("img-first", "openai", gateway.standin)
    second = make_image_model("img-second", "openai", backup)
    make_route("strict", ["localhost/strict"], [first, second])
    make_route("lenient", ["localhost/lenient"], [first, second], edit_fallback_named=True)
    gateway.standin.fail_always("500")
    named = {"prompt": "hat", "model": "img-first/gpt-image-1"}

    strict = post(gateway, "/strict/v1/images/edits", data=named)
    lenient = post(gateway, "/lenient/v1/images/edits", data=named)

    assert strict.status_code == 502
    assert "tried image models" not in strict.json()["error"]["message"]
    assert lenient.status_code == 200
    assert lenient.headers["X-Gateway-Image-Model"] == "img-second"


def test_retry_waits_for_retry_after_then_succeeds(gateway: Gateway) -> None:
    flaky = make_image_model("img-flaky", "openai", gateway.standin)
    make_route("retry", ["localhost/retry"], [flaky], edit_retries=2)
    gateway.standin.fail_next("503", seconds=0.6)

    started = time.monotonic()
    response = post(gateway, "/retry/v1/images/edits")

    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 0.6
    assert response.headers["X-Gateway-Attempts"] == "2"
    assert len(gateway.standin.received) == 2


def test_no_retry_when_retry_after_passes_the_deadline(gateway: Gateway) -> None:
    flaky = make_image_model("img-flaky", "openai", gateway.standin)
    make_route("tight", ["localhost/tight"], [flaky], edit_retries=3, edit_deadline_ms=1500)
    gateway.standin.fail_next("503", seconds=5)

    started = time.monotonic()
    response = post(gateway, "/tight/v1/images/edits")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert time.monotonic() - started < 1.5
    assert len(gateway.standin.received) == 1


@override_settings(BREAKER_MIN_REQUESTS=2, BREAKER_FAILURE_RATE=0.5, BREAKER_COOLDOWN_SECONDS=1)
def test_breaker_opens_after_failed_requests_then_closes_after_a_good_trial(gateway: Gateway) -> None:
    failing = make_image_model("img-failing", "openai", gateway.standin)
    make_route("br", ["localhost/br"], [failing])
    gateway.standin.fail_always("500")

    first = post(gateway, "/br/v1/images/edits", data={"prompt": "a hat"})
    second = post(gateway, "/br/v1/images/edits", data={"prompt": "a scarf"})
    while_open = post(gateway, "/br/v1/images/edits")

    assert [first.status_code, second.status_code] == [502, 502]
    assert while_open.status_code == 503
    assert while_open.json()["error"]["code"] == "upstream_unavailable"
    assert int(while_open.headers["Retry-After"]) >= 1
    assert len(gateway.standin.received) == 2  # the open circuit kept the third call away

    gateway.standin.reset()
    time.sleep(1.1)
    trial = post(gateway, "/br/v1/images/edits")
    after = post(gateway, "/br/v1/images/edits")

    assert (trial.status_code, after.status_code) == (200, 200)
    assert len(gateway.standin.received) == 2


@override_settings(BREAKER_MIN_REQUESTS=1, BREAKER_COOLDOWN_SECONDS=60)
def test_an_open_circuit_sends_traffic_to_the_next_ref(gateway: Gateway, backup: StandIn) -> None:
    first = make_image_model("img-first", "openai", gateway.standin)
    second = make_image_model("img-second", "openai", backup)
    make_route("fb", ["localhost/fb"], [first, second])
    gateway.standin.fail_next("500")

    post(gateway, "/fb/v1/images/edits")
    response = post(gateway, "/fb/v1/images/edits")

    assert response.headers["X-Gateway-Image-Model"] == "img-second"
    assert response.headers["X-Gateway-Attempts"] == "1"
    assert len(gateway.standin.received) == 1


def test_idempotent_replay_makes_one_provider_call(gateway: Gateway) -> None:
    headers = {"Idempotency-Key": "order-42"}

    first = post(gateway, "/v1/images/edits", headers=headers)
    second = post(gateway, "/v1/images/edits", headers=headers)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-Gateway-Image-Model"] == "img-openai"
    assert len(gateway.standin.received) == 1
    assert UsageRecord.objects.count() == 2


def test_idempotency_key_with_another_body_is_a_409(gateway: Gateway) -> None:
    headers = {"Idempotency-Key": "order-43"}

    post(gateway, "/v1/images/edits", headers=headers)
    other = post(gateway, "/v1/images/edits", data={"prompt": "a different hat"}, headers=headers)

    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(gateway.standin.received) == 1


def test_concurrent_duplicates_make_one_provider_call(gateway: Gateway) -> None:
    gateway.standin.fail_next("slow", seconds=1.0)
    headers = {"Idempotency-Key": "order-44"}
    answers: list[requests.Response] = []

    def send() -> None:
        answers.append(post(gateway, "/v1/images/edits", headers=headers))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.text for a in answers}) == 1
    assert len(gateway.standin.received) == 1


def test_a_failed_first_attempt_releases_the_idempotency_key(gateway: Gateway) -> None:
    gateway.standin.fail_next("500")
    headers = {"Idempotency-Key": "order-45"}

    failed = post(gateway, "/v1/images/edits", headers=headers)
    retried = post(gateway, "/v1/images/edits", headers=headers)

    assert (failed.status_code, retried.status_code) == (502, 200)
    assert len(gateway.standin.received) == 2


def test_fallback_skips_a_ref_that_cannot_take_the_request(gateway: Gateway, backup: StandIn) -> None:
    overloaded = make_image_model("img-overloaded", "openai", backup)
    gemini = make_image_model("img-gem2", "gemini", gateway.standin)
    make_route("fb", ["localhost/fb"], [overloaded, gemini])
    backup.fail_always("503")
    with_mask = [*FILES, ("mask", ("m.png", mask_bytes((64, 64)), "image/png"))]

    response = post(gateway, "/fb/v1/images/edits", files=with_mask)

    assert response.status_code == 502  # the OpenAI failure, not Gemini's mask refusal
    assert gateway.standin.received == []


@override_settings(BREAKER_MIN_REQUESTS=1, BREAKER_COOLDOWN_SECONDS=60)
def test_admin_shows_the_open_circuit_and_its_last_error(gateway: Gateway, admin_user, client) -> None:
    gateway.standin.fail_next("500")
    post(gateway, "/v1/images/edits")
    client.force_login(admin_user)

    page = client.get("/admin/edits_api/providerhealth/").content.decode()

    assert "open (" in page
    assert "502 upstream_error" in page
    assert "1 of 1" in page  # failed requests of the window that opened it
    assert "img-gemini" in page  # healthy ones are listed too, as closed
    closed = client.post(
        "/admin/edits_api/providerhealth/", {"action": "close_circuit", "_selected_action": ["img-openai"]}
    )
    assert closed.status_code == 302
    assert post(gateway, "/v1/images/edits").status_code == 200


def test_metrics_count_answers_by_route_and_status(gateway: Gateway) -> None:
    post(gateway, "/v1/images/edits")
    gateway.standin.fail_next("500")
    post(gateway, "/v1/images/edits")

    text = requests.get(gateway.url + "/metrics", timeout=10).text

    assert 'gateway_requests_total{endpoint="edits",image_model="img-openai",route="images",status="200"}' in text
    assert 'gateway_requests_total{endpoint="edits",image_model="img-openai",route="images",status="502"}' in text
    assert "gateway_request_seconds_bucket" in text


def test_when_every_ref_fails_the_error_names_them_all(gateway: Gateway, backup: StandIn) -> None:
    first = make_image_model("img-first", "openai", gateway.standin)
    second = make_image_model("img-second", "openai", backup)
    make_route("fb", ["localhost/fb"], [first, second])
    gateway.standin.fail_always("500")
    backup.fail_always("503")

    response = post(gateway, "/fb/v1/images/edits")

    assert response.status_code == 502
    assert "tried image models in turn: img-first, img-second" in response.json()["error"]["message"]


# -- never a second bill (contract §3.6) -----------------------------------------------------------


def hostile_model(id: str, gateway: Gateway, hostile: Hostile, **fields: Any) -> ImageModel:
    return make_image_model(id, "openai", gateway.standin, base_url=hostile.openai_url, **fields)


@pytest.mark.parametrize(("prompt", "status", "code"), [("hang-after-body", 504, "upstream_timeout"),
                                                        ("drop-after-body", 502, "upstream_error")])  # fmt: skip
def test_a_request_the_provider_had_in_full_is_never_sent_again(
    gateway: Gateway, hostile: Hostile, backup: StandIn, prompt: str, status: int, code: str
) -> None:
    silent = hostile_model("img-silent", gateway, hostile, timeout_ms=1000)
    make_route("once", ["localhost/once"], [silent, make_image_model("img-backup", "openai", backup)], edit_retries=2)

    started = time.monotonic()
    response = post(gateway, "/once/v1/images/edits", data={"prompt": prompt})

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "not sent again" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"
    assert (hostile.api_calls, len(backup.received)) == (1, 0)  # no retry, no fallback
    assert time.monotonic() - started < 3


def test_a_replay_of_the_idempotency_key_does_not_resend_a_request_the_provider_had(
    gateway: Gateway, hostile: Hostile
) -> None:
    make_route("once", ["localhost/once"], [hostile_model("img-silent", gateway, hostile, timeout_ms=800)])
    headers = {"Idempotency-Key": "order-in-doubt"}

    first = post(gateway, "/once/v1/images/edits", data={"prompt": "hang-after-body"}, headers=headers)
    again = post(gateway, "/once/v1/images/edits", data={"prompt": "hang-after-body"}, headers=headers)

    assert (first.status_code, again.status_code) == (504, 504)
    assert again.json() == first.json()
    assert (again.headers["Idempotent-Replayed"], again.headers["x-should-retry"]) == ("true", "false")
    assert hostile.api_calls == 1


def test_an_upload_the_provider_never_took_in_full_falls_back(
    gateway: Gateway, hostile: Hostile, backup: StandIn
) -> None:
    # The provider reads nothing, so the upload stalls once the socket buffers are full: the
    # provider never had the whole request and the next ref may take it.
    stalled = make_image_model("img-stalled", "openai", gateway.standin, base_url=hostile.url + "/stall/v1",
                               timeout_ms=1500)  # fmt: skip
    make_route("stall", ["localhost/stall"], [stalled, make_image_model("img-backup", "openai", backup)])
    large = noise_png(2000)
    assert len(large) > 10_000_000

    response = post(gateway, "/stall/v1/images/edits", files=[("image", ("big.png", large, "image/png"))])

    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Image-Model"] == "img-backup"
    assert backup.last.files[0].size == len(large)


def noise_png(side: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is about side*side*3 bytes."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


# -- what the answer tells a client about retrying, seen through the official SDK -------------------


def sdk(gateway: Gateway, prefix: str, **options: Any) -> OpenAI:
    return OpenAI(api_key="sk-client-unused", base_url=f"{gateway.url}/{prefix}/v1", **options)


def test_the_sdk_does_not_multiply_the_gateways_own_retries(gateway: Gateway, hostile: Hostile) -> None:
    refs = [hostile_model(f"img-h{index}", gateway, hostile) for index in range(3)]
    make_route("many", ["localhost/many"], refs, edit_retries=1)

    with pytest.raises(openai.APIStatusError) as failed:
        sdk(gateway, "many").images.edit(image=("p.png", PNG, "image/png"), prompt="fail-500")  # max_retries=2

    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert hostile.api_calls == 6  # 3 refs x 2 attempts, once: not 18
    assert UsageRecord.objects.count() == 1


def test_the_sdk_retries_a_timeout_never(gateway: Gateway, hostile: Hostile) -> None:
    make_route("slow", ["localhost/slow"], [hostile_model("img-h", gateway, hostile, timeout_ms=800)])

    with pytest.raises(openai.APIStatusError) as failed:
        sdk(gateway, "slow").images.edit(image=("p.png", PNG, "image/png"), prompt="hang-after-body")

    assert failed.value.status_code == 504
    assert hostile.api_calls == 1


def test_the_sdk_retries_after_a_rate_limit_when_told_to(gateway: Gateway, hostile: Hostile) -> None:
    make_route("rl", ["localhost/rl"], [hostile_model("img-h", gateway, hostile)])

    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as failed:
        sdk(gateway, "rl").images.edit(image=("p.png", PNG, "image/png"), prompt="rate-limited")

    headers = failed.value.response.headers
    assert (headers["x-should-retry"], headers["Retry-After"]) == ("true", "1")
    assert hostile.api_calls == 3  # the SDK's two retries, each after the provider's Retry-After
    assert time.monotonic() - started >= 2


def test_a_single_failed_attempt_the_route_would_not_retry_leaves_the_retry_to_the_client(
    gateway: Gateway, hostile: Hostile
) -> None:
    make_route("one", ["localhost/one"], [hostile_model("img-h", gateway, hostile)], edit_retries=0)

    response = post(gateway, "/one/v1/images/edits", data={"prompt": "fail-500"})

    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "true"


@override_settings(BREAKER_MIN_REQUESTS=1, BREAKER_COOLDOWN_SECONDS=1)
def test_the_sdk_waits_for_an_open_circuit(gateway: Gateway, hostile: Hostile) -> None:
    make_route("br", ["localhost/br"], [hostile_model("img-h", gateway, hostile)])
    post(gateway, "/br/v1/images/edits", data={"prompt": "fail-500"})  # opens the circuit

    with pytest.raises(openai.APIStatusError) as failed:
        sdk(gateway, "br", max_retries=1).images.edit(image=("p.png", PNG, "image/png"), prompt="fail-500 again")

    # The SDK waited out the cooldown, and its retry was the trial call (which failed again).
    headers = failed.value.response.headers
    assert failed.value.status_code == 502
    first_answer = UsageRecord.objects.order_by("created_at")[1]
    assert (first_answer.status, first_answer.error_code) == (503, "upstream_unavailable")
    assert hostile.api_calls == 2
    assert headers["x-should-retry"] == "true"  # one attempt, no fallback: the client may try again


# -- the circuit breaker counts requests ------------------------------------------------------------


@override_settings(BREAKER_MIN_REQUESTS=3, BREAKER_FAILURE_RATE=0.5)
def test_one_clients_failing_prompt_does_not_open_the_circuit_for_everyone(gateway: Gateway, hostile: Hostile) -> None:
    make_route("shared", ["localhost/shared"], [hostile_model("img-shared", gateway, hostile)], edit_retries=1)

    failed = [post(gateway, "/shared/v1/images/edits", data={"prompt": "fail-500: my bad prompt"}) for _ in range(8)]
    other_tenant = post(gateway, "/shared/v1/images/edits", data={"prompt": "a benign hat"})

    assert {response.status_code for response in failed} == {502}
    assert hostile.api_calls == 8 * 2 + 1  # 16 failed attempts, yet one failed request
    assert other_tenant.status_code == 200, other_tenant.text
    assert resilience.breaker_state("img-shared").state == "closed"


@override_settings(BREAKER_MIN_REQUESTS=4, BREAKER_FAILURE_RATE=0.5, BREAKER_COOLDOWN_SECONDS=30)
def test_the_circuit_opens_on_a_failure_rate_over_distinct_requests(gateway: Gateway, hostile: Hostile) -> None:
    make_route("rate", ["localhost/rate"], [hostile_model("img-rate", gateway, hostile)])
    answers = [
        post(gateway, "/rate/v1/images/edits", data={"prompt": prompt})
        for prompt in ("fail-500 one", "a hat", "fail-500 two", "a scarf", "fail-500 three")
    ]
    # 3 of 5 failed, over the minimum of 4: open.
    calls = hostile.api_calls

    refused = post(gateway, "/rate/v1/images/edits", data={"prompt": "a benign hat"})

    assert [answer.status_code for answer in answers] == [502, 200, 502, 200, 502]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "upstream_unavailable"
    assert (refused.headers["x-should-retry"], int(refused.headers["Retry-After"]) > 0) == ("true", True)
    assert hostile.api_calls == calls
    state = resilience.breaker_state("img-rate")
    assert (state.state, state.failures, state.requests) == ("open", 3, 5)


@override_settings(BREAKER_MIN_REQUESTS=4, BREAKER_FAILURE_RATE=0.6)
def test_successes_keep_the_rate_under_the_threshold(gateway: Gateway, hostile: Hostile) -> None:
    make_route("rate", ["localhost/rate"], [hostile_model("img-rate", gateway, hostile)])
    for prompt in ("fail-500 one", "a hat", "fail-500 two", "a scarf", "a coat", "fail-500 three"):
        post(gateway, "/rate/v1/images/edits", data={"prompt": prompt})

    assert post(gateway, "/rate/v1/images/edits").status_code == 200
    state = resilience.breaker_state("img-rate")
    assert (state.state, state.failures, state.requests) == ("closed", 3, 7)


@override_settings(BREAKER_MIN_REQUESTS=2)
def test_a_client_error_never_counts_against_the_provider(gateway: Gateway, hostile: Hostile) -> None:
    make_route("bad", ["localhost/bad"], [hostile_model("img-bad", gateway, hostile)])

    answers = [post(gateway, "/bad/v1/images/edits", data={"prompt": f"bad-value {n}"}) for n in range(5)]

    assert {answer.status_code for answer in answers} == {400}
    state = resilience.breaker_state("img-bad")
    assert (state.state, state.failures, state.requests) == ("closed", 0, 0)
    assert answers[-1].headers["x-should-retry"] == "false"
