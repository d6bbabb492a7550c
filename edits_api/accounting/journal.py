"""An append-only local journal for ledger rows the database could not take.

Each process appends to its own file (LEDGER_JOURNAL_DIR/ledger-<pid>-<start>.jsonl, one JSON row
per line, flushed and fsynced per batch) and holds an exclusive lock on it while it writes. A
replay takes every file no live writer holds (a crashed process's too), writes its rows through
the ledger (idempotent by request id) and deletes the file only once every row is in.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from django.conf import settings

logger = logging.getLogger(__name__)

REPLAY_CHUNK = 500


class Journal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pid = 0
        self.pending = False  # rows were journaled and not yet replayed (in any process)

    @property
    def directory(self) -> Path:
        return Path(settings.LEDGER_JOURNAL_DIR)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Appends rows durably (flush and fsync) before returning."""
        if not rows:
            return
        with self._lock:
            handle = self._open()
            handle.write("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
            self.pending = True

    def _open(self) -> IO[str]:
        if self._file is not None and self._pid == os.getpid():
            return self._file
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"ledger-{os.getpid()}-{time.time_ns()}.jsonl"
        handle = path.open("a", encoding="utf-8")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # ours while we write; replays skip it
        self._file, self._pid = handle, os.getpid()
        return handle

    def _close_own(self) -> None:
        """Ends this process's current file, so that a replay may take it."""
        with self._lock:
            if self._file is not None and self._pid == os.getpid():
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
            self._file = None

    def has_files(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob("ledger-*.jsonl"))

    def replay(self, write: Callable[[list[dict[str, Any]]], int]) -> int:
        """Writes back every file no other process is appending to. `write` stores a chunk of rows
        (skipping those already stored) and returns how many it inserted; it raises when the
        database is still away, and the file stays. Returns the rows inserted."""
        self._close_own()
        inserted = 0
        if not self.directory.is_dir():
            self.pending = False
            return 0
        for path in sorted(self.directory.glob("ledger-*.jsonl")):
            inserted += self._replay_file(path, write)
        self.pending = self.has_files()
        return inserted

    def _replay_file(self, path: Path, write: Callable[[list[dict[str, Any]]], int]) -> int:
        try:
            handle = path.open("r+", encoding="utf-8")
        except FileNotFoundError:
            return 0  # another process replayed it meanwhile
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live writer or another replay holds it
            if not path.exists():
                return 0
            inserted = 0
            for chunk in _chunks(_rows(path), REPLAY_CHUNK):
                inserted += write(chunk)
            path.unlink()
            logger.info("ledger journal %s replayed: %d rows inserted", path.name, inserted)
            return inserted


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # Only a process killed in mid-write leaves a torn last line.
                logger.error("ledger journal %s line %d is not JSON; skipped", path.name, number)


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


journal = Journal()
