"""Database fault drill: edits flow through gunicorn while PostgreSQL is stopped and started again.

Prints, per phase (before, down, after), how the gateway answered, how long it took to recover, and
whether every request it answered has its usage row (nothing accepted is lost).

    .venv/bin/python scripts/db_restart.py [--down 10] [--rate 20]

Needs root (it stops and starts the local PostgreSQL cluster) and only talks to 127.0.0.1. Its
database and entities (`drill_database`) are also those of the ledger drill in
tests/edits_api/test_spend_served.py, which cuts the connection instead of stopping the cluster.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB = "gateway_faults"
PORT = 8765
FLUSHES = 20
# The drill's image model reads its provider token from this variable of the server's environment.
PROVIDER_TOKEN_VARIABLE = "DRILL_PROVIDER_TOKEN"


def cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True)


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def wait_for_postgres() -> None:
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        time.sleep(0.2)


def drill_entities(*, provider_url: str) -> dict[str, Any]:
    """An OpenAI image model at `provider_url` and a route on 127.0.0.1 that edits with it, no retries."""
    return {
        "image_models": [
            {
                "id": "drill-openai",
                "name": "Drill",
                "provider": "openai",
                "config": {
                    "connection": {"base_url": provider_url, "token": f"${{env.{PROVIDER_TOKEN_VARIABLE}}}"},
                    "options": {"edition": {"enabled": True, "model": "gpt-image-1"}},
                },
            }
        ],
        "routes": [
            {
                "id": "drill",
                "name": "Drill",
                "frontend": {"domains": ["127.0.0.1"]},
                "plugins": [
                    {
                        "enabled": True,
                        "plugin": "cp:otoroshi_plugins.com.cloud.apim.otoroshi.extensions.aigateway.plugins."
                        "OpenAICompatImagesEdit",
                        "config": {"refs": ["drill-openai"], "retries": 0},
                    }
                ],
            }
        ],
    }


def drill_database(name: str, *, provider_url: str, env: Mapping[str, str]) -> str:
    """The local PostgreSQL database `name` made anew, migrated and holding `drill_entities`; returns
    its URL. manage.py runs in `env` with that DATABASE_URL."""
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"CREATE DATABASE {name}")
    database_url = f"postgres://postgres@127.0.0.1:5432/{name}"
    manage_env = {**env, "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=manage_env, check=True)
    subprocess.run(
        [sys.executable, "manage.py", "seed_entities", "-"],
        cwd=ROOT,
        env=manage_env,
        input=json.dumps(drill_entities(provider_url=provider_url)).encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return database_url


# DEBUG is off, so the key must be strong (settings refuse a weak one); a new one per drill.
DRILL_SECRET_KEY = secrets.token_urlsafe(50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=5, help="seconds of traffic before the stop")
    parser.add_argument("--down", type=float, default=10, help="seconds PostgreSQL stays down")
    parser.add_argument("--after", type=float, default=10, help="seconds of traffic after the start")
    parser.add_argument("--rate", type=float, default=20, help="edits per second")
    args = parser.parse_args()

    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": DRILL_SECRET_KEY, PROVIDER_TOKEN_VARIABLE: "sk-drill-0000"}
    env.update(PORT=str(PORT), GUNICORN_WORKERS="2", GUNICORN_THREADS="32", ROUTE_CACHE_SECONDS="1")
    python = str(ROOT / ".venv/bin/python")
    # Here, not at the top: the test suite imports this module for its database and entities.
    from bench.common import StandInProcess, noise_png

    with StandInProcess() as standin:
        env["DATABASE_URL"] = drill_database(DB, provider_url=standin.openai_url, env=env)
        server = subprocess.Popen(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{PORT}/v1/images/edits"
        try:
            _drill(url, args, png=noise_png(10_000))
        finally:
            server.terminate()
            server.wait(timeout=15)


def _drill(url: str, args: argparse.Namespace, *, png: bytes) -> None:
    while True:
        try:
            requests.get(url.replace("/v1/images/edits", "/healthz"), timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    phase = "before"
    results: list[tuple[str, float, int, str]] = []  # phase, time, status, error code
    lock = threading.Lock()
    stop = threading.Event()

    sent = itertools.count()

    def one() -> None:
        started = time.monotonic()
        number = next(sent)
        # Every fifth edit carries an Idempotency-Key, which needs the database to claim.
        idempotent = number % 5 == 0
        current = f"{phase}/{'idempotent' if idempotent else 'plain'}"
        headers = {"Idempotency-Key": f"drill-{number}"} if idempotent else {}
        try:
            response = requests.post(
                url,
                files=[("image", ("p.png", png, "image/png"))],
                data={"prompt": "drill"},
                headers=headers,
                timeout=30,
            )
            status = response.status_code
            code = (response.json().get("error") or {}).get("code", "") if status != 200 else ""
        except (requests.RequestException, ValueError) as exc:
            status, code = 0, type(exc).__name__
        with lock:
            results.append((current, started, status, code))

    def load() -> None:
        while not stop.is_set():
            threading.Thread(target=one).start()
            time.sleep(1 / args.rate)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(args.before)
    phase = "down"
    cluster("stop")
    time.sleep(args.down / 2)
    ready_down = requests.get(url.replace("/v1/images/edits", "/readyz"), timeout=10).status_code
    time.sleep(args.down / 2)
    phase = "after"
    cluster("start")
    wait_for_postgres()
    started_at = time.monotonic()
    time.sleep(args.after)
    stop.set()
    loader.join()
    time.sleep(3)  # let the last requests finish

    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for current, _, status, code in results:
        table[current][f"{status} {code}".strip()] += 1
    first_ok_after = min((t for p, t, s, _ in results if p == "after/idempotent" and s == 200), default=None)
    readiness = requests.get(url.replace("/v1/images/edits", "/readyz"), timeout=10).status_code
    answered_ok = sum(1 for *_, status, _ in results if status == 200)
    # A worker writes its held-back usage rows with its next request: give each worker some.
    for _ in range(FLUSHES):
        requests.post(url, files=[("image", ("p.png", png, "image/png"))], data={"prompt": "flush"}, timeout=30)
    time.sleep(1)
    rows_ok = int(psql("SELECT count(*) FROM edits_api_usagerecord WHERE status = 200", DB)) - FLUSHES
    report = {
        "answers_per_phase": {p: dict(c) for p, c in table.items()},
        "readyz_down": ready_down,
        "readyz_after": readiness,
        "idempotent_recovered_after_start_s": round(first_ok_after - started_at, 2) if first_ok_after else None,
        "answered_200": answered_ok,
        "usage_rows_200": rows_ok,
        "five_hundreds": sum(1 for *_, status, _ in results if status == 500),
    }
    for phase_name, counter in report["answers_per_phase"].items():
        print(f"{phase_name:>7}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counter.items())))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
