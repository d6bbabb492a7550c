"""Writing usage rows off the request path: a writer thread per process inserts them in batches.

A row waits in memory while the database is down and is written once it is back; the queue is
flushed when the process exits. USAGE_FLUSH_SECONDS=0 writes each row at once (tests).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from edits_api.models import UsageRecord

logger = logging.getLogger(__name__)
MAX_WAITING = 100_000  # rows held while the database is down, at most

_waiting: deque[UsageRecord] = deque(maxlen=MAX_WAITING)
_lock = threading.Lock()
_wake = threading.Event()
_writer_pid = 0  # the writer thread belongs to one process; gunicorn forks after loading the app


def usage_save(record: UsageRecord) -> None:
    with _lock:
        _waiting.append(record)
    if settings.USAGE_FLUSH_SECONDS <= 0:
        flush()
    else:
        _ensure_writer()


def flush() -> int:
    """Writes every waiting row; on a database error they stay waiting. Returns the rows written."""
    with _lock:
        batch = list(_waiting)
        _waiting.clear()
    if not batch:
        return 0
    try:
        UsageRecord.objects.bulk_create(batch, batch_size=500)
    except DatabaseError as exc:
        with _lock:
            _waiting.extendleft(reversed(batch))
        logger.error("%d usage rows not written yet: %s", len(batch), exc)
        return 0
    return len(batch)


def _ensure_writer() -> None:
    global _writer_pid
    if _writer_pid == os.getpid():
        return
    with _lock:
        if _writer_pid == os.getpid():
            return
        _writer_pid = os.getpid()
    threading.Thread(target=_write_forever, name="usage-writer", daemon=True).start()
    atexit.register(flush)


def _write_forever() -> None:
    while True:
        _wake.wait(settings.USAGE_FLUSH_SECONDS)
        close_old_connections()
        flush()
