"""GET /readyz reads a gateway table, so it is 503 when the database cannot really be used.

Each test serves the gateway with gunicorn (DEBUG off, as in production) on a database of its
own: a SQLite file the test deletes or locks, or a PostgreSQL server that is not there or never
answers. Django keeps its connection open between requests, so a mere `SELECT 1` on it answered
200 in all of these cases.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.gunicorn import gunicorn, manage

TIMEOUT = "0.5"  # READYZ_TIMEOUT_SECONDS of the servers below


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    database = tmp_path / "gateway.sqlite3"
    result = manage(tmp_path, "migrate", "entities", "--noinput", DATABASE_URL=f"sqlite:///{database}")
    assert result.returncode == 0, result.stderr
    with gunicorn(tmp_path, DATABASE_URL=f"sqlite:///{database}", READYZ_TIMEOUT_SECONDS=TIMEOUT) as url:
        yield url, database


def readyz(url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url + "/readyz", timeout=30)
    return response, time.monotonic() - started


def assert_not_ready(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["failed"] == ["database"]
    assert body["error"]["code"] == "not_ready" and "database" in body["error"]["message"]
    assert response.headers["Retry-After"]


def test_readyz_is_503_while_the_sqlite_file_is_locked_or_deleted(sqlite_gateway: tuple[str, Path]) -> None:
    url, database = sqlite_gateway
    ready, _ = readyz(url)  # the worker now holds an open connection to the file
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a long write or a backup tool would hold it
    try:
        locked, seconds = readyz(url)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    unlocked, _ = readyz(url)
    database.unlink()
    deleted, _ = readyz(url)

    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert_not_ready(locked)
    assert seconds < float(TIMEOUT) + 2
    assert unlocked.status_code == 200
    assert_not_ready(deleted)
    assert not database.exists()  # the check did not create an empty database in its place


def test_readyz_is_503_when_postgresql_hangs_or_is_down(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    accepted: list[socket.socket] = []
    threading.Thread(target=_accept_all, args=(silent, accepted), daemon=True).start()
    database_url = f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/gateway"

    with gunicorn(tmp_path, DATABASE_URL=database_url, READYZ_TIMEOUT_SECONDS=TIMEOUT) as url:
        hanging, hanging_seconds = readyz(url)
        silent.close()  # now nothing listens: connections are refused
        for connection in accepted:
            connection.close()
        down, down_seconds = readyz(url)

    assert_not_ready(hanging)
    assert_not_ready(down)
    assert max(hanging_seconds, down_seconds) < 6  # the connection pool's wait (3 s), not a hang


def _accept_all(server: socket.socket, accepted: list[socket.socket]) -> None:
    with contextlib.suppress(OSError):  # the test closes the server
        while True:
            accepted.append(server.accept()[0])
