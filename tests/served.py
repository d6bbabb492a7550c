"""The gateway served by gunicorn with the project's gunicorn.conf.py, as in production, over the
test database (tests that use it need `transactional_db`, so the server sees committed rows)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Served:
    url: str
    tmpdir: Path  # the server's TMPDIR, where uploads spool
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def database_url() -> str:
    """The test database as a DATABASE_URL, for a server started by a test."""
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
def gunicorn_server(tmp_path: Path, **env_overrides: str) -> Iterator[Served]:
    """gunicorn (1 worker) on a free port; `env_overrides` add or replace environment variables."""
    port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
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
        "TMPDIR": str(spool),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **env_overrides,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {log.read_text()}")
            time.sleep(0.1)
        yield Served(url, spool, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
