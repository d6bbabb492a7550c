"""The gateway served as `make run` serves it: gunicorn with the project's gunicorn.conf.py, on the
test database, in a subprocess. For tests that need the real server (README examples, browsers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The test database as a DATABASE_URL, so the server sees what the test wrote."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn(tmp_path: Path, *, arguments: tuple[str, ...] = (), **environment: str) -> Iterator[str]:
    """Serves the gateway on 127.0.0.1 until the block ends; yields its base URL. `arguments` are
    added to gunicorn's command line (after -c gunicorn.conf.py, so they win)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        # The same keys as this process, or the stored provider tokens would not decrypt.
        "SECRET_KEY": settings.SECRET_KEY,
        "ENCRYPTION_KEYS": ",".join(settings.ENCRYPTION_KEYS),
        "DEBUG": "false",
        "PORT": str(port),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LEDGER_FLUSH_SECONDS": "0",  # a ledger row is in the database when its answer arrives
        "LEDGER_JOURNAL_DIR": str(tmp_path / "journal"),
        **environment,
    }
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "gateway_project.wsgi:application",
                *arguments,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts Python slowly
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
