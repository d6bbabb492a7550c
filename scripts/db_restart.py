"""Database fault drill: edits flow through gunicorn while PostgreSQL is stopped and started again.

Prints, per phase (before, down, after), how the gateway answered, how long it took to recover, and
whether every request it answered has its usage row (nothing accepted is lost).

    .venv/bin/python scripts/db_restart.py [--down 10] [--rate 20]

Needs root (it stops and starts the local PostgreSQL cluster) and only talks to 127.0.0.1.
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
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import StandInProcess, noise_png  # noqa: E402

DB = "gateway_faults"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
PORT = 8765
FLUSHES = 20


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


# DEBUG is off, so the key must be strong (settings refuse a weak one); a new one per drill.
DRILL_SECRET_KEY = secrets.token_urlsafe(50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=5, help="seconds of traffic before the stop")
    parser.add_argument("--down", type=float, default=10, help="seconds PostgreSQL stays down")
    parser.add_argument("--after", type=float, default=10, help="seconds of traffic after the start")
    parser.add_argument("--rate", type=float, default=20, help="edits per second")
    args = parser.parse_args()

    psql(f"DROP DATABASE IF EXISTS {DB}")
    psql(f"CREATE DATABASE {DB}")
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, "DEBUG": "false", "SECRET_KEY": DRILL_SECRET_KEY}
    env.update(PORT=str(PORT), GUNICORN_WORKERS="2", GUNICORN_THREADS="32", ROUTE_CACHE_SECONDS="1")
    python = str(ROOT / ".venv/bin/python")
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    with StandInProcess() as standin:
        entities = {
            "image_models": [
                {
                    "id": "drill-openai",
                    "name": "Drill",
                    "provider": "openai",
                    "config": {
                        "connection": {"base_url": standin.openai_url, "token": "sk-drill-0000"},
                        "options": {"edition": {"enabled": True}},
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
        subprocess.run(
            [python, "manage.py", "seed_entities", "-"],
            cwd=ROOT,
            env=env,
            input=json.dumps(entities).encode(),
            check=True,
        )
        server = subprocess.Popen(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{PORT}/v1/images/edits"
        try:
            _drill(url, args)
        finally:
            server.terminate()
            server.wait(timeout=15)


def _drill(url: str, args: argparse.Namespace) -> None:
    while True:
        try:
            requests.get(url.replace("/v1/images/edits", "/healthz"), timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    png = noise_png(10_000)
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
