"""Start the gateway under gunicorn with the project's gunicorn.conf.py and a given environment.

For tests that need the production server, `DEBUG=false` settings, or a database of their own:

    with gunicorn_server(tmp_path, DATABASE_URL="sqlite:///...") as url:
        requests.get(url + "/readyz")
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
# Strong enough for DEBUG off (settings refuse a weak key), fresh for each test run.
SERVER_SECRET_KEY = secrets.token_urlsafe(50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a production-like gateway process: DEBUG off, one small worker."""
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": SERVER_SECRET_KEY,
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        **overrides,
    }


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `manage.py` with the server's environment (e.g. migrate a database of the test's own)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def gunicorn_server(tmp_path: Path, **env: str) -> Iterator[str]:
    """Yields the server's base URL once /healthz answers; stops it (by its pid) afterwards."""
    port = free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
        cwd=ROOT,
        env=server_env(tmp_path, PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded CI machine starts Django slowly
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
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: no request of a test is left
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
