"""Spend control under gunicorn, as in production: limits shared by processes (through Redis, or
the database without it), metric families from the first scrape, JSON logs, and ledger rows that
survive the database going away."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import connection

from edits_api.models import UsageRecord
from entities.models import Route
from scripts import db_restart
from tests.gateway import make_image_model, make_key, make_route
from tests.gunicorn import gunicorn
from tests.relay import Relay
from tests.standin import StandIn, image_bytes

PNG = image_bytes("png", (64, 64))
SECRET = "gw-served-secret-0123456789"
RACER_SECRET = "gw-racer-secret-0123456789"
# A database number of our own: other suites on this Redis use 0 and their own prefixes.
REDIS_URL = "redis://127.0.0.1:6379/13"


def post_edit(url: str, *, secret: str | None = SECRET, request_id: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    return requests.post(
        url + "/v1/images/edits",
        files=[("image", ("p.png", PNG, "image/png"))],
        data={"prompt": "add a hat", "quality": "low", "size": "1024x1024"},
        headers=headers,
        timeout=60,
    )


@pytest.fixture
def keyed_route(transactional_db: None, standin: StandIn) -> None:
    openai = make_image_model("img-openai", "openai", standin, edition={"enabled": True, "model": "gpt-image-1"})
    route = make_route("served", ["127.0.0.1"], [openai])
    make_key("client", SECRET, [route], requests_per_minute=3)


@pytest.mark.slow
def test_two_gunicorn_instances_share_one_rate_limit_through_redis(
    keyed_route: None, tmp_path: Path, settings: pytest.FixtureRequest
) -> None:
    env = {"REDIS_URL": REDIS_URL, "RATE_LIMIT_PREFIX": settings.RATE_LIMIT_PREFIX}
    with gunicorn(tmp_path / "a", **env) as first, gunicorn(tmp_path / "b", **env) as second:
        answers = [post_edit(first), post_edit(first), post_edit(second), post_edit(second), post_edit(first)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    # The second instance saw the first one's two requests.
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 61


@pytest.mark.slow
def test_racing_requests_on_a_two_worker_server_without_redis_admit_exactly_the_limit(
    keyed_route: None, tmp_path: Path, standin: StandIn
) -> None:
    """Eight overlapping requests on `make run`'s shape (two workers, no Redis) admit exactly three.

    Which worker accepts each connection is the kernel's choice (the hardened worker may take all
    eight), so that the count is shared across processes is proven by the two-process test below.
    """
    standin.fail_always("slow", seconds=0.3)  # the requests overlap
    env = {"REDIS_URL": "", "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "1", "GUNICORN_WORKER_CONNECTIONS": "8"}
    with gunicorn(tmp_path / "pair", **env) as url, ThreadPoolExecutor(8) as pool:
        statuses = [a.status_code for a in pool.map(lambda _: post_edit(url), range(8))]

    assert sorted(statuses) == [200] * 3 + [429] * 5
    assert len(standin.received) == 3


@pytest.mark.slow
def test_two_gunicorn_processes_without_redis_share_one_rate_limit_through_the_database(
    keyed_route: None, tmp_path: Path, standin: StandIn
) -> None:
    make_key("racer", RACER_SECRET, list(Route.objects.filter(id="served")), requests_per_minute=2)
    # Two instances of one worker each on one database: two processes that know nothing of each other.
    with gunicorn(tmp_path / "a", REDIS_URL="") as first, gunicorn(tmp_path / "b", REDIS_URL="") as second:
        answers = [post_edit(first), post_edit(second), post_edit(first), post_edit(second), post_edit(first)]
        standin.fail_always("slow", seconds=0.5)  # admitted requests overlap the others' checks
        with ThreadPoolExecutor(6) as pool:  # six at once, from both, for a key allowed two
            racing = list(pool.map(lambda url: post_edit(url, secret=RACER_SECRET), [first, second] * 3))

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0", "0"]
    assert sorted(a.status_code for a in racing) == [200, 200, 429, 429, 429, 429]
    assert len(standin.received) == 5


@pytest.mark.slow
@pytest.mark.usefixtures("seeded_prices")
def test_metric_families_show_before_the_first_request_and_logs_are_json(keyed_route: None, tmp_path: Path) -> None:
    with gunicorn(tmp_path / "metrics", LOG_FORMAT="json", LOG_LEVEL="INFO") as url:
        first_scrape = requests.get(url + "/metrics", timeout=10).text
        answer = post_edit(url, request_id="json-trace-7")
        later_scrape = requests.get(url + "/metrics", timeout=10).text

    for family in (
        "gateway_requests_total counter",
        "gateway_request_seconds histogram",
        "gateway_cost_usd_total counter",
        "gateway_cost_unknown_total counter",
        "gateway_rate_limited_total counter",
        "gateway_ledger_journaled_total counter",
    ):
        assert f"# TYPE {family}" in first_scrape
    assert answer.status_code == 200
    assert 'gateway_cost_usd_total{endpoint="edits",key="client",route="served"} 0.00245' in later_scrape
    lines = [json.loads(line) for line in (tmp_path / "metrics" / "gunicorn.log").read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    served = [line for line in lines if line.get("request_id") == "json-trace-7"]
    assert served and all({"time", "level", "logger", "message"} <= set(line) for line in served)


# -- the database goes away ----------------------------------------------------------------------

# Per test process: suites of several worktrees may run at once on one PostgreSQL.
DRILL_DB = f"gw_accounting_drill_{os.getpid()}"


def _count_rows() -> tuple[int, int]:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DRILL_DB}") as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT request_id) FROM edits_api_usagerecord").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


@pytest.mark.slow
def test_ledger_rows_survive_postgresql_going_away_and_count_exactly_once(
    transactional_db: None, standin: StandIn, tmp_path: Path
) -> None:
    db_restart.drill_database(DRILL_DB, provider_url=standin.openai_url, env={**os.environ, "DEBUG": "true"})
    relay = Relay(("127.0.0.1", 5432))
    env = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{relay.port}/{DRILL_DB}",
        db_restart.PROVIDER_TOKEN_VARIABLE: "sk-drill-0000",
        # One worker: a worker builds its route snapshot on its first request, so one that never served
        # cannot route while the database is away (that is routing's, not the ledger's).
        "GUNICORN_WORKERS": "1",
        "LEDGER_FLUSH_SECONDS": "0.2",
        "LEDGER_REPLAY_SECONDS": "0.5",
        "DB_POOL_SIZE": "2",
    }
    journal = tmp_path / "drill" / "journal"
    try:
        with gunicorn(tmp_path / "drill", **env) as url:
            before = [post_edit(url, secret=None) for _ in range(6)]
            time.sleep(1)
            relay.cut()
            with ThreadPoolExecutor(4) as pool:
                during = list(pool.map(lambda _: post_edit(url, secret=None), range(12)))
            deadline = time.monotonic() + 15  # the writers give up on the pool after its timeout
            while not list(journal.glob("ledger-*.jsonl")) and time.monotonic() < deadline:
                time.sleep(0.2)
            journaled = sorted(journal.glob("ledger-*.jsonl"))
            relay.restore()
            after = [post_edit(url, secret=None) for _ in range(5)]
            answered = [a for a in before + during + after if a.status_code == 200]
            deadline = time.monotonic() + 30
            while _count_rows()[0] < len(answered) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.5)  # a late duplicate would show now
            rows, distinct = _count_rows()
    finally:
        relay.close()
        db_restart.psql(f"DROP DATABASE IF EXISTS {DRILL_DB} WITH (FORCE)")

    assert [a.status_code for a in during] == [200] * 12, [a.text for a in during if a.status_code != 200]
    assert len(answered) == 23
    assert journaled, "rows went to the journal while the database was away"
    assert rows == distinct == 23  # every answered request once, none twice
    assert sorted(journal.glob("ledger-*.jsonl")) == []
    assert UsageRecord.objects.count() == 0  # the drill used its own database


@pytest.mark.slow
def test_edits_that_wait_for_the_provider_hold_no_pooled_database_connection(
    keyed_route: None, tmp_path: Path, standin: StandIn
) -> None:
    """Without Redis the rate limit is counted in the database: that query took a pooled connection,
    which the request kept through its provider call; with a pool of one, the other edits waiting at
    the same time got 503 `rate_limit_unavailable` after the pool's 3 s. Skipped on SQLite, which
    has no connection pool (settings.py)."""
    if connection.vendor != "postgresql":
        pytest.skip("the connection pool is PostgreSQL's (settings.py)")
    make_key("racer", RACER_SECRET, list(Route.objects.filter(id="served")), requests_per_minute=100)
    standin.fail_always("slow", seconds=4)  # longer than the pool's timeout
    env = {"REDIS_URL": "", "DB_POOL_SIZE": "1"}
    with gunicorn(tmp_path / "pool", **env) as url, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: post_edit(url, secret=RACER_SECRET), range(3)))

    assert [a.status_code for a in answers] == [200] * 3, [a.text[:200] for a in answers]
    assert len(standin.received) == 3
