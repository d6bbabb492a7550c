"""The gateway served as `make run` serves it: gunicorn with the project's gunicorn.conf.py, on the
test database, in a subprocess. For tests that need the real server (README examples, browsers)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from entities import crypto

ROOT = Path(__file__).resolve().parents[1]
# DEBUG is off in the server, so its key must be strong (settings refuse a weak one); new each run.
SERVER_SECRET_KEY = secrets.token_urlsafe(50)


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


def server_environment(tmp_path: Path, **environment: str) -> dict[str, str]:
    """The environment of the served gateway: DEBUG off, the test database, one small worker."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        # This process's encryption keys, or the stored provider tokens would not decrypt.
        "SECRET_KEY": SERVER_SECRET_KEY,
        "ENCRYPTION_KEYS": ",".join(crypto.keys_in_use()),
        "DEBUG": "false",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LEDGER_FLUSH_SECONDS": "0",  # a ledger row is in the database when its answer arrives
        "LEDGER_JOURNAL_DIR": str(tmp_path / "journal"),
        **environment,
    }


def manage(tmp_path: Path, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` in the server's environment (a check, or a migrate of a database of its own)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server_environment(tmp_path, **environment),
        capture_output=True,
        text=True,
        timeout=180,
    )


def resolved_config(tmp_path: Path, **environment: str) -> dict[str, str]:
    """gunicorn's settings as gunicorn.conf.py resolves them in the server's environment
    (`--print-config`), by name."""
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--print-config",
            "gateway_project.wsgi:application",
        ],
        cwd=ROOT,
        env=server_environment(tmp_path, **environment),
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in printed.stdout.splitlines())
        if value
    }


def _healthy(port: int, deadline: float) -> bool:
    """Whether /healthz answers 200, asked so that the server is left holding no connection: with
    `Connection: close`, read until the server closes its side, which the worker does only after
    it stopped counting the connection. A kept-alive one (requests') stayed counted against
    GUNICORN_WORKER_CONNECTIONS until the worker noticed the client had gone: on a busy machine,
    after a test's own connections had arrived. Once connected, the answer is awaited until
    `deadline`: a connection given up on would be served and closed at some later time."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=max(deadline - time.monotonic(), 0.1)) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except (ConnectionError, TimeoutError):  # not listening yet, or past the deadline
        return False
    return answer.startswith(b"HTTP/1.1 200 ")


@contextmanager
def gunicorn(tmp_path: Path, *, arguments: tuple[str, ...] = (), **environment: str) -> Iterator[str]:
    """Serves the gateway on 127.0.0.1 until the block ends; yields its base URL once /healthz
    answers, the server holding no connection of that check. `arguments` are added to gunicorn's
    command line (after -c gunicorn.conf.py, so they win)."""
    with gunicorn_process(tmp_path, arguments=arguments, **environment) as (url, _):
        yield url


@contextmanager
def gunicorn_process(
    tmp_path: Path, *, arguments: tuple[str, ...] = (), **environment: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`gunicorn()`, with the master process too (for a test that signals it)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "gunicorn.log"
    env = server_environment(tmp_path, PORT=str(port), **environment)
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
            if _healthy(port, deadline):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
