"""The ledger's own guarantees: journaled rows are replayed exactly once with their budget
settlement, and a full buffer spills to the journal instead of dropping rows."""

from __future__ import annotations

import io
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connections
from django.utils import timezone

from edits_api.accounting import ledger
from edits_api.accounting.journal import journal
from edits_api.errors import GatewayError
from edits_api.models import BudgetWindow, UsageRecord


def finished(request_id: str, *, key: str = "", reserved: str = "0", status: int = 200) -> ledger.LedgerEntry:
    with ledger.recording(request_id=request_id, channel="job", endpoint="edits", api_key_id=key) as draft:
        draft.status = status
        draft.reserved_usd = Decimal(reserved)
    return ledger._entry(draft)


def journal_files() -> list[Path]:
    folder = Path(settings.LEDGER_JOURNAL_DIR)
    return sorted(folder.glob("ledger-*.jsonl")) if folder.is_dir() else []


@pytest.mark.django_db(transaction=True)
def test_journaled_rows_are_replayed_exactly_once_with_their_settlement() -> None:
    rows = []
    for i in range(3):
        row = finished(f"req-journal-{i}", key="client", reserved="0.5").row()
        rows.append({**row, "cost_usd": "0.2"})  # as if a provider had been paid 0.2 each
    UsageRecord.objects.all().delete()
    BudgetWindow.objects.all().delete()
    # The three reservations made at admission, still open while the database was down.
    BudgetWindow.objects.create(api_key_id="client", period="day", starts=timezone.now().date(), reserved_usd=1.5)
    journal.append(rows)
    journal.append(rows[:2])  # the same rows journaled twice (a batch retried after a lost answer)

    ledger.ledger_flush()
    ledger.ledger_flush()

    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == [f"req-journal-{i}" for i in range(3)]
    assert UsageRecord.objects.get(request_id="req-journal-0").cost_usd == Decimal("0.2")
    day = BudgetWindow.objects.get(api_key_id="client", period="day")
    assert (day.reserved_usd, day.spent_usd) == (Decimal(0), Decimal("0.6"))  # settled once per row
    assert journal_files() == []


@pytest.mark.django_db(transaction=True)
def test_a_full_buffer_spills_to_the_journal_and_loses_nothing(settings: pytest.FixtureRequest) -> None:
    settings.LEDGER_FLUSH_SECONDS = 3600  # the writer thread writes once, then sleeps: a stalled writer
    settings.LEDGER_BUFFER_SIZE = 3
    settings.LEDGER_BLOCK_SECONDS = 0.05
    finished("req-first")
    deadline = time.monotonic() + 10
    while not UsageRecord.objects.filter(request_id="req-first").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # the writer has left its flush and sleeps

    started = time.monotonic()
    for i in range(10):
        finished(f"req-burst-{i}")
    waited = time.monotonic() - started

    assert waited < 5  # callers waited briefly, then went on
    assert len(journal_files()) == 1
    ledger.ledger_flush()
    ids = set(UsageRecord.objects.values_list("request_id", flat=True))
    assert ids == {"req-first", *(f"req-burst-{i}" for i in range(10))}
    assert journal_files() == []


@pytest.mark.django_db(transaction=True)
def test_the_replay_command_writes_what_a_stopped_instance_left() -> None:
    row = finished("req-left-behind").row()
    UsageRecord.objects.all().delete()
    journal.append([row])
    journal._close_own()  # as when the instance that wrote it stopped

    out = io.StringIO()
    call_command("ledger_replay", stdout=out)

    assert UsageRecord.objects.filter(request_id="req-left-behind").count() == 1
    assert "1 rows inserted" in out.getvalue()
    assert journal_files() == []


@pytest.mark.django_db(transaction=True)
def test_a_job_records_through_the_same_function_success_or_failure() -> None:
    with ledger.recording(request_id="job-ok", channel="job", endpoint="generations"):
        pass
    with pytest.raises(GatewayError), ledger.recording(request_id="job-failed", channel="job", endpoint="edits"):
        raise GatewayError(400, "bad", code="invalid_value")

    rows = {r.request_id: (r.channel, r.status, r.error_code) for r in UsageRecord.objects.all()}
    assert rows == {"job-ok": ("job", 200, ""), "job-failed": ("job", 400, "invalid_value")}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_store_every_row_and_none_fails() -> None:
    # Two gunicorn workers on SQLite (`make run`) each have a ledger writer. A write transaction
    # that began with a read failed at once with "database is locked" when the other wrote
    # meanwhile, and its rows went to the journal; beginning IMMEDIATE makes it wait its turn.
    # PostgreSQL never failed here; the test runs on both.
    failures: list[str] = []

    def write(worker: int) -> None:
        try:
            for i in range(40):
                row = finished(f"req-lock-{worker}-{i}", key=f"client-{worker}", reserved="0.1").row()
                ledger.store_rows([{**row, "cost_usd": "0.1"}])
        except DatabaseError as exc:
            failures.append(str(exc))
        finally:
            connections.close_all()

    writers = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(60)

    assert failures == []
    assert UsageRecord.objects.filter(request_id__startswith="req-lock-").count() == 160


@pytest.mark.django_db(transaction=True)
def test_rows_that_arrive_while_the_writer_writes_wait_for_its_next_batch(
    settings: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write's queries and commit cost about as much as ten rows: under load, rows that
    # followed one another into batches of a few made the writer a fifth of an edit's CPU.
    template = finished("req-template").row()  # written at once (the tests' LEDGER_FLUSH_SECONDS is 0)
    UsageRecord.objects.all().delete()
    settings.LEDGER_FLUSH_SECONDS = 0.2
    store = ledger.store_rows
    batches: list[int] = []

    def slow_store(rows: list[dict[str, object]]) -> int:
        batches.append(len(rows))
        time.sleep(0.02)  # a database that takes its time
        return store(rows)

    monkeypatch.setattr(ledger, "store_rows", slow_store)
    writer = ledger._Writer()  # its own thread, with this test's settings
    for i in range(400):
        writer.submit([{**template, "request_id": f"req-steady-{i}"}])
        time.sleep(0.001)
    deadline = time.monotonic() + 20
    while UsageRecord.objects.filter(request_id__startswith="req-steady-").count() < 400:
        assert time.monotonic() < deadline, f"rows still missing after batches {batches}"
        time.sleep(0.05)

    assert sum(batches) == 400
    assert len(batches) <= 8, batches  # one batch per round of the writer, not one per write's wait
