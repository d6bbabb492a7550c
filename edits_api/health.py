"""Liveness and readiness: GET /healthz (the process serves) and GET /readyz (it can serve edits).

Readiness reads one of the gateway's own tables with a short timeout, on a connection of its own
for SQLite, where it also takes the write lock: Django's long-lived connection would go on reading
a deleted database file through its open descriptor, and would wait the driver's 5 s on a locked one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, JsonResponse

from edits_api.accounting import limits
from edits_api.errors import GatewayError
from entities.models import ImageModel


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, when configured) answer; 503 naming what failed."""
    failed = []
    if not database_reads():
        failed.append("database")
    # The cache and the rate limits each hold their own Redis client: either failing is Redis failing.
    if settings.REDIS_URL and (not _redis_answers() or limits.store_health() is not None):
        failed.append("redis")
    if not failed:
        return JsonResponse({"status": "ready"})
    error = GatewayError(
        503,
        f"Not ready: the {' and '.join(failed)} did not answer.",
        type="server_error",
        code="not_ready",
        headers={"Retry-After": "5"},
    )
    # The envelope, plus the list probes and scripts already read, and what keyed requests with rate
    # limits meet meanwhile: their store is Redis, or the database without it (RATE_LIMIT_FAIL_OPEN).
    body = {**error.body(), "status": "unavailable", "failed": failed}
    if "redis" in failed or (not settings.REDIS_URL and "database" in failed):
        body["rate_limits"] = "not enforced" if settings.RATE_LIMIT_FAIL_OPEN else "refusing"
    return JsonResponse(body, status=503, headers=error.headers)


def database_reads() -> bool:
    """Whether a row of a gateway table can be read within READYZ_TIMEOUT_SECONDS (SQLite: and
    written)."""
    table = connection.ops.quote_name(ImageModel._meta.db_table)
    query = f"SELECT 1 FROM {table} LIMIT 1"  # a table name of ours, quoted: no user input
    if connection.vendor == "sqlite" and not _in_memory(connection.settings_dict["NAME"]):
        return _sqlite_file_usable(Path(connection.settings_dict["NAME"]), query)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                timeout_ms = int(settings.READYZ_TIMEOUT_SECONDS * 1000)
                cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
            cursor.execute(query)
            cursor.fetchall()
    except DatabaseError:
        return False
    return True


def _in_memory(name: object) -> bool:
    return str(name) == ":memory:" or "mode=memory" in str(name)


def _sqlite_file_usable(path: Path, query: str) -> bool:
    """Read, and take the write lock without writing: in WAL mode readers never wait, so a file a
    backup or a long write holds would pass a read alone, and take no edit's usage rows."""
    if not path.is_file():  # sqlite3 would create an empty database in its place
        return False
    try:
        uri = f"{path.resolve().as_uri()}?mode=rw"
        timeout = settings.READYZ_TIMEOUT_SECONDS
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(query).fetchall()
            db.execute("ROLLBACK")
    except sqlite3.Error:
        return False
    return True


def _redis_answers() -> bool:
    try:
        cache.get("readyz")
    except Exception:  # any client error means Redis is not usable
        return False
    return True
