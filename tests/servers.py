"""Real servers for tests that need more than the live_server: gunicorn with the project's
gunicorn.conf.py, and a TCP relay that can cut a database off and bring it back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The test database, as a URL another process can open."""
    found = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{found['NAME']}"
    user = found["USER"] or "postgres"
    password = f":{found['PASSWORD']}" if found["PASSWORD"] else ""
    return f"postgres://{user}{password}@{found['HOST'] or '127.0.0.1'}:{found['PORT'] or 5432}/{found['NAME']}"


@contextmanager
def gunicorn(tmp_path: Path, name: str, **env: str) -> Iterator[str]:
    """Serves the gateway on a free port (URL yielded) until the block ends; `env` overrides."""
    port = free_port()
    folder = tmp_path / name
    folder.mkdir()
    full_env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        # The same keys as this process, or stored provider tokens would not decrypt.
        "SECRET_KEY": settings.SECRET_KEY,
        "ENCRYPTION_KEYS": ",".join(settings.ENCRYPTION_KEYS),
        "DEBUG": "false",
        "PORT": str(port),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "8",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        "LEDGER_JOURNAL_DIR": str(folder / "journal"),
        "ROUTE_CACHE_SECONDS": "1",
        **env,
    }
    log = folder / "gunicorn.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application",
            "--access-logfile", str(folder / "access.log"), "--access-logformat", "%(p)s %(s)s",
        ],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
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
        process.wait(timeout=20)


class Relay:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses new ones
    (as a database that went away), `restore()` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.up = False
            for sock in self.open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.open.clear()

    def restore(self) -> None:
        with self.lock:
            self.up = True

    def close(self) -> None:
        self.running = False
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.close()
