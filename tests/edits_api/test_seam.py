"""The HTTP seam against a hostile provider (tests/hostile.py), through the live gateway: no
credential in any answer, log or stored row; only known error codes; clamped Retry-After; image
URLs fetched only where allowed, within one deadline and one byte budget."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from edits_api.models import IdempotencyRecord, UsageRecord
from edits_api.providers import http
from entities.models import ImageModel
from tests.gateway import PROVIDER_TOKEN, Gateway, make_image_model, make_route
from tests.hostile import INTERNAL_SECRET, Hostile, token_spellings
from tests.standin import image_bytes

PNG = image_bytes("png", (64, 64))
# Codes the gateway itself answers with after a provider's failure.
GATEWAY_CODES = {
    "upstream_error",
    "upstream_bad_response",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_auth_error",
    "upstream_unavailable",
}


def hostile_route(
    gateway: Gateway, hostile: Hostile, *, provider: str = "openai", retries: int = 0, **entity: Any
) -> ImageModel:
    base_url = hostile.gemini_url if provider == "gemini" else hostile.openai_url
    image_model = make_image_model("img-hostile", provider, gateway.standin, base_url=base_url, **entity)
    make_route("hostile", ["localhost/h"], [image_model], edit_retries=retries)
    return image_model


def edit(gateway: Gateway, prompt: str, headers: dict[str, str] | None = None, **fields: str) -> requests.Response:
    return requests.post(
        gateway.url + "/h/v1/images/edits",
        files=[("image", ("p.png", PNG, "image/png"))],
        data={"prompt": prompt, **fields},
        headers=headers or {},
        timeout=60,
    )


def leaks(text: str) -> list[str]:
    """The spellings of the provider token found in `text` (case-insensitively for the token itself)."""
    found = [spelling for spelling in token_spellings(PROVIDER_TOKEN) if spelling in text]
    if PROVIDER_TOKEN.lower() in text.lower():
        found.append("token, in some case")
    return found


# -- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "prompt", "status", "code"),
    [
        ("openai", "echo-token", 400, "upstream_error"),
        ("openai", "echo-token-500", 502, "upstream_error"),
        ("gemini", "echo-token", 400, "moderation_blocked"),  # the token as Gemini's blockReason
        ("gemini", "echo-token-500", 502, "upstream_error"),
        ("openai", "echo-token-success", 200, None),  # in revised_prompt, size, quality and usage
    ],
)
def test_a_provider_echoing_its_credential_never_gets_it_anywhere(
    gateway: Gateway, hostile: Hostile, caplog: pytest.LogCaptureFixture, provider: str, prompt: str, status: int,
    code: str | None,
) -> None:  # fmt: skip
    hostile_route(gateway, hostile, provider=provider)

    response = edit(gateway, prompt, headers={"Idempotency-Key": f"leak-{provider}-{prompt}"})

    assert response.status_code == status, response.text
    assert leaks(response.text + json.dumps(dict(response.headers))) == []
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert names_the_provider(response.json()["error"]["message"])
    record = UsageRecord.objects.get()
    assert leaks(json.dumps([record.error_code, record.usage, record.model])) == []
    assert record.error_code in http.KNOWN_UPSTREAM_CODES | GATEWAY_CODES | {""}
    for stored in IdempotencyRecord.objects.all():
        assert leaks(stored.body + json.dumps(stored.headers)) == []
    assert leaks(caplog.text) == []


def names_the_provider(message: str) -> bool:
    """The error still says who failed."""
    return "OpenAI" in message or "Gemini" in message


def test_every_spelling_of_the_token_is_scrubbed_from_any_text() -> None:
    for spelling in token_spellings(PROVIDER_TOKEN):
        scrubbed = http.scrub(f"before {spelling} after", PROVIDER_TOKEN)
        assert http.REDACTED in scrubbed and leaks(scrubbed) == [], spelling
        assert scrubbed.startswith("before ") and scrubbed.endswith(" after")
    # Inside a longer base64 text (an echoed header, say), at each of the three alignments.
    for prefix in ("", "x", "xy"):
        embedded = base64.b64encode(f'{prefix}{{"auth": "Bearer {PROVIDER_TOKEN}"}}'.encode()).decode()
        assert http.REDACTED in http.scrub(embedded, PROVIDER_TOKEN), prefix


@pytest.mark.parametrize(
    ("prompt", "code", "in_message"),
    [
        ("unknown-code", "upstream_error", "frobnicated_widget"),  # kept in the message, not as the code
        ("azure-filter", "moderation_blocked", "filtered"),
        ("policy-violation", "moderation_blocked", "policy"),
        ("bad-value", "invalid_value", "size"),
    ],
)
def test_only_known_error_codes_pass_and_are_stored(
    gateway: Gateway, hostile: Hostile, prompt: str, code: str, in_message: str
) -> None:
    hostile_route(gateway, hostile)

    response = edit(gateway, prompt)

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, code)
    assert in_message in error["message"]
    assert UsageRecord.objects.get().error_code == code


# -- Retry-After -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "status"), [("retry-after-huge", 429), ("busy-huge", 502)])
def test_a_huge_retry_after_is_clamped_and_not_waited_for(
    gateway: Gateway, hostile: Hostile, prompt: str, status: int
) -> None:
    hostile_route(gateway, hostile, retries=2)

    started = time.monotonic()
    response = edit(gateway, prompt)

    assert response.status_code == status, response.text
    assert time.monotonic() - started < 5
    assert response.headers["Retry-After"] == str(http.MAX_RETRY_AFTER_S)
    assert hostile.api_calls == 1  # waiting a minute inside one request is not a retry worth making


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7), ("0.2", 1), ("1e9", 60), ("inf", 60), ("-5", 0), ("nan", None), ("soon", None), ("", None)],
)
def test_retry_after_values_are_read_and_clamped(value: str, seconds: int | None) -> None:
    assert http.retry_after_seconds(value) == seconds


def test_a_retry_after_date_is_read_as_seconds_from_now() -> None:
    from email.utils import formatdate

    assert 8 <= (http.retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) or 0) <= 11
    assert http.retry_after_seconds(formatdate(time.time() + 86400, usegmt=True)) == http.MAX_RETRY_AFTER_S


# -- image URLs ------------------------------------------------------------------------------------


def fetch_through_gateway(gateway: Gateway, hostile: Hostile, urls: list[str], **entity: Any) -> requests.Response:
    hostile_route(gateway, hostile, **entity)
    hostile.image_urls = urls
    return edit(gateway, "image-urls", response_format="b64_json")


def test_image_urls_on_a_private_address_are_refused_unless_allowed(gateway: Gateway, hostile: Hostile) -> None:
    # The URL is on the provider's own host, but that host is 127.0.0.1.
    response = fetch_through_gateway(gateway, hostile, [f"{hostile.url}/img/png"], allow_private_network=False)

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_bad_response"
    assert "private, loopback or link-local" in error["message"]
    assert "allow_private_network" in error["message"]
    assert response.headers["x-should-retry"] == "false"  # the provider was paid already
    assert hostile.hits("/img/") == 0


def test_image_urls_on_another_host_are_refused(gateway: Gateway, hostile: Hostile) -> None:
    # The gateway's own /metrics, on a host name that is not the provider's.
    response = fetch_through_gateway(gateway, hostile, [f"{gateway.url}/metrics"], allow_private_network=True)

    assert response.status_code == 502, response.text
    assert "image_hosts" in response.json()["error"]["message"]
    assert "gateway_requests_total" not in response.text


def test_a_listed_host_that_resolves_to_loopback_is_refused(gateway: Gateway, hostile: Hostile) -> None:
    port = hostile.url.rsplit(":", 1)[1]
    response = fetch_through_gateway(
        gateway, hostile, [f"http://localhost:{port}/img/png"], image_hosts=["localhost"], allow_private_network=False
    )

    assert response.status_code == 502, response.text
    assert "private, loopback or link-local" in response.json()["error"]["message"]
    assert hostile.hits("/img/") == 0


def test_the_link_local_metadata_address_is_refused_without_connecting(gateway: Gateway, hostile: Hostile) -> None:
    started = time.monotonic()
    response = fetch_through_gateway(
        gateway,
        hostile,
        ["http://169.254.169.254/latest/meta-data/iam/"],
        image_hosts=["169.254.169.254"],
        allow_private_network=False,
        timeout_ms=5000,
    )

    assert response.status_code == 502, response.text
    assert "private, loopback or link-local" in response.json()["error"]["message"]
    assert time.monotonic() - started < 3  # refused before any connection attempt


def test_the_opt_in_fetches_from_the_private_network(gateway: Gateway, hostile: Hostile) -> None:
    response = fetch_through_gateway(gateway, hostile, [f"{hostile.url}/img/png"] * 2, allow_private_network=True)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["url"] for item in data] == [None, None]
    assert all(base64.b64decode(item["b64_json"]).startswith(b"\x89PNG") for item in data)
    assert hostile.hits("/img/png") == 2


def test_a_fetched_body_never_reaches_the_error(gateway: Gateway, hostile: Hostile) -> None:
    response = fetch_through_gateway(gateway, hostile, [f"{hostile.url}/internal"], allow_private_network=True)

    assert response.status_code == 502, response.text
    assert "HTTP 404" in response.json()["error"]["message"]
    assert INTERNAL_SECRET not in response.text


def test_all_images_of_an_answer_share_one_byte_budget(gateway: Gateway, hostile: Hostile) -> None:
    response = fetch_through_gateway(
        gateway, hostile, [f"{hostile.url}/img/big?mb=30"] * 3, allow_private_network=True, timeout_ms=30_000
    )

    assert response.status_code == 502, response.text[:500]
    assert f"past {http.MAX_FETCH_BYTES // 2**20} MB" in response.json()["error"]["message"]


def test_all_images_of_an_answer_share_one_deadline(gateway: Gateway, hostile: Hostile) -> None:
    started = time.monotonic()
    response = fetch_through_gateway(
        gateway, hostile, [f"{hostile.url}/img/slow?seconds=0.6"] * 3, allow_private_network=True, timeout_ms=1000
    )

    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 1.6  # not three full timeouts, nor three full downloads


def test_a_non_image_body_is_refused(gateway: Gateway, hostile: Hostile) -> None:
    # The gateway's own /healthz (JSON) on 127.0.0.1, the provider's own host here.
    healthz = gateway.url.replace("localhost", "127.0.0.1") + "/healthz"
    response = fetch_through_gateway(gateway, hostile, [healthz], allow_private_network=True)

    assert response.status_code == 502, response.text
    assert "not a PNG, JPEG, WebP or GIF image" in response.json()["error"]["message"]
    assert '"status"' not in response.json()["error"]["message"]
