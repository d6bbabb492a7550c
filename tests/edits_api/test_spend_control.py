"""Keys, rate limits, budgets and the ledger, seen from the outside: real HTTP to the live gateway,
which calls the stand-in provider."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.utils import timezone

from edits_api.models import BudgetWindow, UsageRecord
from entities.models import ImageModel
from tests.gateway import Gateway, make_image_model, make_key, make_route
from tests.standin import image_bytes

PNG = image_bytes("png", (64, 64))
SECRET = "gw-client-secret-0123456789"
OTHER_SECRET = "gw-other-secret-9876543210"


def edit(gateway: Gateway, secret: str | None = SECRET, **fields: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    headers.update(fields.pop("headers", {}))
    data = {"prompt": "add a hat", **{k: str(v) for k, v in fields.items()}}
    return gateway.edit(files=[("image", ("p.png", PNG, "image/png"))], data=data, headers=headers)


def error_code(response: requests.Response) -> str:
    return str(response.json()["error"]["code"])


# -- keys -----------------------------------------------------------------------------------------


def test_a_route_no_key_names_is_open_and_one_a_key_names_needs_it(gateway: Gateway) -> None:
    keyed = make_route("keyed", ["keyed.localhost"], [ImageModel.objects.get(id="img-openai")])
    make_key("client", SECRET, [keyed])
    make_key("off", OTHER_SECRET, [keyed], enabled=False)

    open_route = edit(gateway, secret=None)
    keyed_without = edit(gateway, secret=None, headers={"Host": "keyed.localhost"})
    keyed_with = edit(gateway, headers={"Host": "keyed.localhost"})

    assert open_route.status_code == 200
    assert keyed_without.status_code == 401 and error_code(keyed_without) == "invalid_api_key"
    assert keyed_with.status_code == 200
    # A disabled key still names the route: turning a leaked key off must not open the route.
    keyed.api_keys.filter(id="client").delete()
    assert edit(gateway, secret=None, headers={"Host": "keyed.localhost"}).status_code == 401


def test_disabled_and_expired_keys_are_refused_like_unknown_ones(gateway: Gateway) -> None:
    make_key("disabled", SECRET, [gateway.route], enabled=False)
    make_key("expired", OTHER_SECRET, [gateway.route], expires_at=timezone.now() - datetime.timedelta(seconds=1))
    make_key(
        "later", "gw-later-secret-000000000", [gateway.route], expires_at=timezone.now() + datetime.timedelta(days=1)
    )

    answers = [
        edit(gateway, s) for s in (SECRET, OTHER_SECRET, "gw-unknown-secret-00000000", "gw-later-secret-000000000")
    ]

    assert [a.status_code for a in answers] == [401, 401, 401, 200]
    messages = {a.json()["error"]["message"] for a in answers[:3]}
    assert len(messages) == 1  # nothing tells a disabled or expired key from an unknown one
    assert len(gateway.standin.received) == 1


def test_a_key_restricted_to_some_models_gets_403_for_others(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route], models_include=["gpt-image-1.*"], models_exclude=["gpt-image-1-mini"])

    allowed = edit(gateway, model="gpt-image-1.5")
    excluded = edit(gateway, model="gpt-image-1-mini")
    not_included = edit(gateway, model="dall-e-2")

    assert allowed.status_code == 200
    assert [excluded.status_code, not_included.status_code] == [403, 403]
    assert error_code(excluded) == error_code(not_included) == "model_not_allowed"
    assert [r.fields["model"] for r in gateway.standin.received] == ["gpt-image-1.5"]


# -- rate limits ----------------------------------------------------------------------------------


def test_requests_per_minute_gives_429_with_retry_after_and_openai_headers(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route], requests_per_minute=2)

    answers = [edit(gateway) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert error_code(refused) == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61  # a 1 s slice more than the minute, at most
    assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == ["2", "2", "2"]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(gateway.standin.received) == 2  # the refusal came before any provider call


def test_every_keyed_answer_carries_the_rate_limit_headers_even_a_bad_input(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route], requests_per_minute=5)

    bad = gateway.edit(
        files=[("image", ("p.png", b"GIF89a not an image", "image/png"))],
        data={"prompt": "hat"},
        headers={"Authorization": f"Bearer {SECRET}"},
    )

    assert bad.status_code == 400
    assert bad.headers["x-ratelimit-limit-requests"] == "5"
    assert bad.headers["x-ratelimit-remaining-requests"] == "5"  # a refused input uses nothing


def test_images_per_day_counts_n_and_gives_back_images_a_failed_call_did_not_make(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route], images_per_day=3)

    two = edit(gateway, n=2)
    too_many = edit(gateway, n=2)
    gateway.standin.fail_next("500")
    failed = edit(gateway, n=1)
    last = edit(gateway, n=1)
    over = edit(gateway, n=1)

    assert [two.status_code, too_many.status_code, failed.status_code, last.status_code, over.status_code] == [
        200, 429, 502, 200, 429,
    ]  # fmt: skip
    assert error_code(too_many) == "rate_limit_exceeded" and "images per day" in too_many.json()["error"]["message"]
    assert two.headers["x-ratelimit-remaining-images"] == "1"
    assert int(over.headers["Retry-After"]) > 60  # a day's window


# -- budgets --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("seeded_prices")
def test_budget_reserves_the_estimate_settles_the_real_cost_and_refuses_what_cannot_fit(gateway: Gateway) -> None:
    # gpt-image-1, medium 1024x1024: estimated at $0.042, costs $0.00245 by the stand-in's tokens.
    make_key("client", SECRET, [gateway.route], budget_usd_per_day=Decimal("0.045"))
    fields = {"quality": "medium", "size": "1024x1024"}
    sent_at = timezone.now()

    answers = [edit(gateway, **fields) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert error_code(answers[2]) == "budget_exceeded"
    tomorrow = datetime.datetime.combine(
        timezone.now().date() + datetime.timedelta(days=1), datetime.time(), datetime.UTC
    )
    assert 0 < int(answers[2].headers["Retry-After"]) <= (tomorrow - sent_at).total_seconds() + 1  # the day's end
    assert len(gateway.standin.received) == 2
    rows = UsageRecord.objects.filter(status=200).order_by("created_at")
    assert [r.cost_usd for r in rows] == [Decimal("0.00245")] * 2
    assert [r.reserved_usd for r in rows] == [Decimal("0.042")] * 2
    day = BudgetWindow.objects.get(api_key_id="client", period="day")
    assert (day.spent_usd, day.reserved_usd) == (Decimal("0.0049"), Decimal(0))
    assert BudgetWindow.objects.get(api_key_id="client", period="month").spent_usd == Decimal("0.0049")


@pytest.mark.usefixtures("seeded_prices")
def test_a_budgeted_key_cannot_use_a_model_without_a_price(gateway: Gateway) -> None:
    make_key("client", SECRET, [gateway.route], budget_usd_per_month=Decimal(10))

    answer = edit(gateway, model="unpriced-model")

    assert answer.status_code == 403 and error_code(answer) == "model_not_allowed"
    assert "no price" in answer.json()["error"]["message"]
    assert gateway.standin.received == []


# -- the ledger and request ids -------------------------------------------------------------------


@pytest.mark.usefixtures("seeded_prices")
def test_one_ledger_row_per_request_for_success_and_each_error_class(gateway: Gateway, standin: Any) -> None:
    make_key("client", SECRET, [gateway.route], requests_per_minute=6)
    slow = make_image_model("img-slow", "openai", standin, timeout_ms=300, edition={"enabled": True})
    make_route("slow", ["slow.localhost"], [slow])

    ok = edit(gateway, quality="low", size="1024x1024")
    bad_input = gateway.edit(
        files=[("image", ("p.png", b"not an image", "image/png"))], data={"prompt": "x"},
        headers={"Authorization": f"Bearer {SECRET}"},
    )  # fmt: skip
    no_key = edit(gateway, secret=None)
    standin.fail_next("500")
    upstream = edit(gateway)
    standin.fail_next("400")
    upstream_4xx = edit(gateway)
    standin.fail_next("slow", seconds=2)
    timeout = requests.post(
        gateway.url + "/v1/images/edits",
        files=[("image", ("p.png", PNG, "image/png"))],
        data={"prompt": "x"},
        headers={"Host": "slow.localhost"},
        timeout=30,
    )
    not_found = requests.post(gateway.url + "/nowhere/v1/images/edits", data={"prompt": "x"},
                              headers={"Host": "nohost.example"}, timeout=30)  # fmt: skip
    answers = [ok, bad_input, no_key, upstream, upstream_4xx, timeout, not_found]

    rows = {r.request_id: r for r in UsageRecord.objects.all()}
    assert len(rows) == len(answers)
    by_answer = [rows[a.headers["X-Request-Id"]] for a in answers]
    assert [(r.status, r.error_code) for r in by_answer] == [
        (200, ""),
        (400, "invalid_image"),
        (401, "invalid_api_key"),
        (502, "upstream_error"),
        (400, "invalid_value"),
        (504, "upstream_timeout"),
        (404, "route_not_found"),
    ]
    success = by_answer[0]
    assert success.api_key_id == "client" and success.route_id == "images"
    assert (success.provider, success.model, success.image_model_id) == ("openai", "gpt-image-1", "img-openai")
    assert (success.images_in, success.images, success.attempts) == (1, 1, 1)
    assert (success.input_text_tokens, success.input_image_tokens, success.output_image_tokens) == (10, 40, 50)
    assert success.cost_usd == Decimal("0.00245") and success.price_label.startswith("openai/gpt-image-1@")
    assert success.request_bytes > len(PNG) and success.response_bytes > 0
    assert success.latency_ms >= success.upstream_latency_ms > 0
    assert [r.cost_usd for r in by_answer[1:5]] == [Decimal(0)] * 4  # nothing billed
    assert by_answer[5].cost_usd is None  # sent and unanswered: may have been billed
    assert all(r.channel == "api" and r.endpoint == "edits" for r in by_answer)


def test_the_clients_request_id_is_kept_and_a_malformed_one_replaced(gateway: Gateway) -> None:
    kept = edit(gateway, secret=None, headers={"X-Request-Id": "client-trace.42:a_b-c"})
    replaced = edit(gateway, secret=None, headers={"X-Request-Id": "bad id\twith spaces"})
    health = requests.get(gateway.url + "/healthz", timeout=10)

    assert kept.headers["X-Request-Id"] == "client-trace.42:a_b-c"
    assert replaced.headers["X-Request-Id"].startswith("req_")
    assert health.headers["X-Request-Id"].startswith("req_")
    assert UsageRecord.objects.filter(request_id="client-trace.42:a_b-c").count() == 1


def test_every_log_line_of_a_request_names_its_id(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    gateway.standin.fail_next("500")

    edit(gateway, secret=None, headers={"X-Request-Id": "trace-logs-1"})

    lines = [r for r in caplog.records if r.name.startswith("edits_api")]
    assert lines and all(getattr(r, "request_id", None) == "trace-logs-1" for r in lines)


def test_an_unreachable_limit_store_refuses_by_default_or_admits_when_told(gateway: Gateway, settings: Any) -> None:
    make_key("client", SECRET, [gateway.route], requests_per_minute=5)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    closed = edit(gateway)
    ready_closed = requests.get(gateway.url + "/readyz", timeout=10)
    settings.RATE_LIMIT_FAIL_OPEN = True
    opened = edit(gateway)
    ready_open = requests.get(gateway.url + "/readyz", timeout=10)

    assert closed.status_code == 503 and error_code(closed) == "rate_limit_unavailable"
    assert closed.headers["Retry-After"] == "5"
    assert opened.status_code == 200
    assert len(gateway.standin.received) == 1
    assert ready_closed.status_code == 503
    assert (ready_closed.json()["failed"], ready_closed.json()["rate_limits"]) == (["redis"], "refusing")
    assert ready_open.json()["rate_limits"] == "not enforced"


@pytest.mark.usefixtures("seeded_prices")
def test_generations_are_admitted_counted_and_recorded_like_edits(gateway: Gateway, standin: Any) -> None:
    openai = ImageModel.objects.get(id="img-openai")
    openai.generation = {"enabled": True, "model": "gpt-image-1"}
    openai.save()
    route = make_route("gen", ["gen.localhost"], [openai], generation_refs=[openai])
    make_key("painter", SECRET, [route], images_per_day=2, models_exclude=["dall-e-.*"])
    headers = {"Host": "gen.localhost", "Authorization": f"Bearer {SECRET}"}

    def generate(**fields: Any) -> requests.Response:
        body = {"prompt": "a red hat", "quality": "low", "size": "1024x1024", **fields}
        return requests.post(gateway.url + "/v1/images/generations", json=body, headers=headers, timeout=30)

    answers = [generate(n=2), generate(n=1), generate(model="dall-e-3", n=1, quality="standard")]

    assert [a.status_code for a in answers] == [200, 429, 403]
    assert answers[0].headers["x-ratelimit-remaining-images"] == "0"
    rows = {r.request_id: r for r in UsageRecord.objects.filter(endpoint="generations")}
    first = rows[answers[0].headers["X-Request-Id"]]
    assert (first.api_key_id, first.images_in, first.images, first.status) == ("painter", 0, 2, 200)
    assert first.cost_usd == Decimal("0.00405")  # 10 text tokens x $5/1M + 100 image tokens x $40/1M
    assert [rows[a.headers["X-Request-Id"]].error_code for a in answers[1:]] == [
        "rate_limit_exceeded",
        "model_not_allowed",
    ]
