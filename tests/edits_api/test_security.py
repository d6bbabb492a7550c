"""What a caller without the right credentials can learn, and credentials HTTP cannot carry.

Against the live gateway: 401 answers name no route, a disabled key is refused like an unknown
one, /metrics can require a token and an address, and a provider token that is not latin-1
answers 502 upstream_misconfigured instead of 500.
"""

from __future__ import annotations

import pytest
import requests

from entities.models import ImageModel
from tests.gateway import Gateway, make_image_model, make_key, make_route
from tests.standin import image_bytes

PNG = image_bytes("png", (64, 64))
SECRET = "gw-client-secret-0123456789"


def edit(gateway: Gateway, path: str = "/v1/images/edits", headers: dict[str, str] | None = None) -> requests.Response:
    return gateway.edit(
        files=[("image", ("p.png", PNG, "image/png"))], data={"prompt": "x"}, path=path, headers=headers
    )


# --- keyed routes ----------------------------------------------------------------------------------


def test_no_401_names_the_route_or_image_model_in_any_header(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route])
    make_key("off", "gw-disabled-secret-0123456789", [gateway.route], enabled=False)

    answers = [
        edit(gateway),
        edit(gateway, headers={"Authorization": "Bearer gw-unknown-secret-000000"}),
        edit(gateway, headers={"Authorization": "Bearer gw-disabled-secret-0123456789"}),
        edit(gateway, headers={"api-key": "gw-unknown-secret-000000"}),
    ]

    for answer in answers:
        assert answer.status_code == 401
        named = {k: v for k, v in answer.headers.items() if "images" in v or k.lower().startswith("x-gateway")}
        assert named == {}, named
    assert edit(gateway, headers={"Authorization": f"Bearer {SECRET}"}).headers["X-Gateway-Route"] == "images"


def test_a_disabled_key_gets_the_same_answer_as_an_unknown_one(gateway: Gateway) -> None:
    make_key("off", "gw-disabled-secret-0123456789", [gateway.route], enabled=False)

    disabled = edit(gateway, headers={"Authorization": "Bearer gw-disabled-secret-0123456789"})
    unknown = edit(gateway, headers={"Authorization": "Bearer gw-unknown-secret-000000000"})

    assert disabled.status_code == unknown.status_code == 401
    assert disabled.json() == unknown.json()
    assert "disabled" not in disabled.text


# --- /metrics ----------------------------------------------------------------------------------------


def test_metrics_are_open_by_default(gateway: Gateway) -> None:
    assert requests.get(gateway.url + "/metrics", timeout=10).status_code == 200


def test_metrics_token_is_required_when_set(gateway: Gateway, settings) -> None:
    settings.METRICS_TOKEN = "metrics-token-0123456789"
    url = gateway.url + "/metrics"

    missing = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"Authorization": "Bearer metrics-token-wrong"}, timeout=10)
    right = requests.get(url, headers={"Authorization": "Bearer metrics-token-0123456789"}, timeout=10)

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "gateway_requests" not in missing.text + wrong.text
    assert "gateway_requests_total" in right.text


@pytest.mark.parametrize(("allowed", "status"), [(["10.0.0.0/8"], 403), (["10.0.0.0/8", "127.0.0.1"], 200)])
def test_metrics_are_served_only_to_listed_addresses(
    gateway: Gateway, settings, allowed: list[str], status: int
) -> None:
    settings.METRICS_ALLOWED_IPS = allowed

    answer = requests.get(gateway.url + "/metrics", timeout=10)

    assert answer.status_code == status
    if status == 403:
        assert answer.json()["error"]["code"] == "permission_denied"


# --- provider tokens HTTP cannot carry ------------------------------------------------------------------


def test_a_non_latin1_token_from_the_environment_is_a_502_not_a_500(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EURO_PROVIDER_TOKEN", "sk-price-in-€-0001")
    euro = make_image_model("img-euro", "openai", gateway.standin, token="${env.EURO_PROVIDER_TOKEN}")
    make_route("euro", ["localhost/euro"], [euro])

    answer = edit(gateway, path="/euro/v1/images/edits")

    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "upstream_misconfigured"
    assert "img-euro" in error["message"] and "latin-1" in error["message"]
    assert "sk-price" not in answer.text
    assert gateway.standin.received == []


def test_a_non_latin1_token_stored_before_the_rule_is_a_502_not_a_500(gateway: Gateway) -> None:
    legacy = ImageModel(id="img-legacy", name="Legacy", provider="openai", base_url=gateway.standin.openai_url)
    legacy.edition = {"enabled": True}
    legacy.set_token("sk-stored-€-before-0001")
    legacy.save()  # no full_clean(): as a row written before tokens were checked
    make_route("legacy", ["localhost/legacy"], [legacy])

    answer = edit(gateway, path="/legacy/v1/images/edits")

    assert (answer.status_code, answer.json()["error"]["code"]) == (502, "upstream_misconfigured")
    assert gateway.standin.received == []
