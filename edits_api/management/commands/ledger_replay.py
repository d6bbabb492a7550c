"""Writes the ledger rows left in the journal (LEDGER_JOURNAL_DIR), e.g. by a stopped instance."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from edits_api.accounting import ledger
from edits_api.accounting.journal import journal


class Command(BaseCommand):
    help = (
        "Inserts the ledger rows waiting in the journal folder (LEDGER_JOURNAL_DIR) into the database, "
        "each exactly once, and deletes the files it emptied. Files a running gateway is writing are left."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            inserted = journal.replay(ledger.store_rows)
        except DatabaseError as exc:
            raise CommandError(f"the database is not answering; nothing replayed: {exc}") from exc
        left = len(list(journal.directory.glob("ledger-*.jsonl"))) if journal.directory.is_dir() else 0
        self.stdout.write(f"replayed the ledger journal: {inserted} rows inserted, {left} files left to a live writer")
