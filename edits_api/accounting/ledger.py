"""The usage ledger: one row per request, written by one function, and never lost.

Every way into the gateway (the API views, the admin playground, jobs) opens a `recording`, lets
the service layer fill it in, and on leaving it `ledger_record` takes the row:

- rows go to an in-memory buffer that a writer thread per process empties in batches (every
  LEDGER_FLUSH_SECONDS; 0 writes in the caller's thread, for tests);
- a full buffer makes the caller wait up to LEDGER_BLOCK_SECONDS, then the rows go to the
  journal file: nothing is ever dropped;
- a batch the database refuses (down, or lost mid-way) goes to the journal; once a write
  succeeds again, the journal is replayed. A row is inserted only if its request id is not there
  yet, and its budget settlement happens in the same transaction, so a row counts exactly once;
- nothing here raises into the request: a paid, successful edit stays a success.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connections, models, router, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from edits_api import metrics
from edits_api.accounting import budgets, costs, limits
from edits_api.accounting.journal import journal
from edits_api.errors import GatewayError
from edits_api.models import UsageRecord
from edits_api.resilience import Outcome

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Draft:
    """What is known of a request while it is served; the service layer fills it in."""

    request_id: str
    channel: str  # "api", "playground" or "job"
    endpoint: str  # "edits" or "generations"
    started_at: datetime.datetime = field(default_factory=timezone.now)
    started: float = field(default_factory=time.monotonic)
    route_id: str = ""
    api_key_id: str = ""
    # Who served and how: filled by resilience.call_candidates (image model, model, attempts,
    # upstream time) and the service (images made, usage).
    outcome: Outcome = field(default_factory=Outcome)
    # The provider and model admitted (the first candidate), kept when no call was made.
    provider: str = ""
    model: str = ""
    size: str | None = None
    quality: str | None = None
    n: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    images_in: int = 0
    status: int = 0
    error_code: str = ""
    # The provider had the whole request and its answer never came (or was unusable): it may have
    # billed it (GatewayError.outcome_unknown), so the cost is unknown, not 0.
    maybe_billed: bool = False
    # Set by admission (accounting/admission.py):
    reserved_usd: Decimal = Decimal(0)
    rate: limits.Decision | None = None
    images_reserved: int = 0

    def failed(self, error: GatewayError) -> None:
        self.status, self.error_code = error.status, error.code or ""
        self.maybe_billed = error.outcome_unknown


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row as plain values (what the journal keeps)."""

    request_id: str
    created_at: str  # ISO 8601
    channel: str
    endpoint: str
    route_id: str
    api_key_id: str
    image_model_id: str
    provider: str
    model: str
    status: int
    error_code: str
    attempts: int
    latency_ms: int
    upstream_latency_ms: int
    request_bytes: int
    response_bytes: int
    images_in: int
    images: int
    input_text_tokens: int | None
    input_image_tokens: int | None
    output_image_tokens: int | None
    output_text_tokens: int | None
    usage: dict[str, Any] | None
    cost_usd: str | None  # decimal as text; None: unknown
    reserved_usd: str
    price_id: int | None
    price_label: str

    def row(self) -> dict[str, Any]:
        # A shallow copy: dataclasses.asdict deep-copied every value, 2% of an edit's CPU.
        return dict(vars(self))


@contextmanager
def recording(
    *, request_id: str, channel: str, endpoint: str, route_id: str = "", api_key_id: str = ""
) -> Iterator[Draft]:
    """Opens the ledger row of one request; leaving writes it, however the request ended.

    The admin playground and jobs use it as the API views do:

        with ledger.recording(request_id=..., channel="job", endpoint="edits", route_id=...) as draft:
            served = services.image_edit(route=..., request=..., public_base=..., started=..., draft=draft)
    """
    draft = Draft(request_id=request_id, channel=channel, endpoint=endpoint, route_id=route_id, api_key_id=api_key_id)
    try:
        yield draft
        draft.status = draft.status or 200  # an HTTP caller sets its answer's status; others succeeded
    except GatewayError as error:
        draft.failed(error)
        raise
    except BaseException:
        draft.status, draft.error_code = 500, draft.error_code or "internal_error"
        raise
    finally:
        ledger_finish(draft)


def ledger_finish(draft: Draft) -> None:
    """Prices the request, gives back images it did not produce, and records its row."""
    try:
        entry = _entry(draft)
        made = draft.outcome.images
        if draft.rate is not None and draft.images_reserved > made and draft.api_key_id:
            limits.give_back(
                draft.api_key_id, limits.IMAGES, draft.rate.slices.get(limits.IMAGES, 0), draft.images_reserved - made
            )
    except Exception:  # never let the ledger break an answer
        logger.exception("could not build the ledger row of request %s", draft.request_id)
        return
    ledger_record(entry)


def _entry(draft: Draft) -> LedgerEntry:
    outcome = draft.outcome
    image_model_id, provider, model = "", draft.provider, draft.model
    if outcome.image_model is not None:  # the candidate that was called last (fallbacks included)
        image_model_id, provider, model = outcome.image_model.id, outcome.image_model.provider, outcome.model
    tokens = costs.tokens_from_usage(outcome.usage)
    price = costs.price_for(provider, model) if model else None
    cost: Decimal | None
    if not outcome.attempts:
        cost = Decimal(0)  # no provider call: refused, or an idempotent replay
    elif draft.status and draft.status < 400:
        cost = costs.actual(
            price,
            tokens=tokens,
            images_out=outcome.images,
            images_in=draft.images_in,
            size=draft.size,
            quality=draft.quality,
        )
    elif draft.maybe_billed:
        cost = None
    else:
        cost = Decimal(0)  # answered with an error by the provider: not billed
    return LedgerEntry(
        request_id=draft.request_id,
        created_at=draft.started_at.isoformat(),
        channel=draft.channel,
        endpoint=draft.endpoint,
        route_id=draft.route_id[:200],
        api_key_id=draft.api_key_id[:200],
        image_model_id=image_model_id[:200],
        provider=provider[:32],
        model=model[:200],
        status=draft.status or 500,
        error_code=draft.error_code[:64],
        attempts=outcome.attempts,
        # Whole milliseconds rounded up: a provider call that happened never reads as 0 ms.
        latency_ms=math.ceil((time.monotonic() - draft.started) * 1000),
        upstream_latency_ms=math.ceil(outcome.upstream_ms),
        request_bytes=draft.request_bytes,
        response_bytes=draft.response_bytes,
        images_in=draft.images_in,
        images=outcome.images,
        input_text_tokens=tokens.input_text,
        input_image_tokens=tokens.input_image,
        output_image_tokens=tokens.output_image,
        output_text_tokens=tokens.output_text,
        usage=outcome.usage,
        cost_usd=None if cost is None else str(cost),
        reserved_usd=str(draft.reserved_usd),
        price_id=price.id if price and cost is not None else None,
        price_label=price.label if price and cost is not None else "",
    )


def ledger_record(entry: LedgerEntry) -> None:
    """The one way a ledger row is written. Never raises."""
    try:
        metrics.observe_request(entry)
    except Exception:
        logger.exception("metrics of request %s not counted", entry.request_id)
    try:
        _writer.submit([entry.row()])
    except Exception:
        logger.exception("ledger row %s could not be queued; journaling it", entry.request_id)
        _journal_or_log([entry.row()])


def _journal_or_log(rows: list[dict[str, Any]]) -> None:
    try:
        journal.append(rows)
        metrics.LEDGER_JOURNALED.inc(len(rows))
    except Exception:
        # The disk failed too: the log is the last place the rows can go.
        for row in rows:
            logger.critical("LEDGER ROW NOT STORED: %s", row)


# -- storing rows ----------------------------------------------------------------------------------


# Every column but the id, in the model's order; a ledger row has a value for each (by attname).
_COLUMNS = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
# Text and integer columns go to the driver as the row holds them (str, int or None); dates,
# decimals and JSON through their field. Preparing every column through its field cost 18.7 us per
# row on SQLite; this, 9.1 us.
_AS_IS = [isinstance(f, models.CharField | models.IntegerField) for f in _COLUMNS]


def _column_values(row: dict[str, Any], db: Any) -> list[Any]:
    values = {
        **row,
        "created_at": parse_datetime(row["created_at"]) or timezone.now(),
        "cost_usd": None if row["cost_usd"] is None else Decimal(row["cost_usd"]),
        "reserved_usd": Decimal(row["reserved_usd"]),
    }
    return [
        values[field.attname] if as_is else field.get_db_prep_save(values[field.attname], db)
        for field, as_is in zip(_COLUMNS, _AS_IS, strict=True)
    ]


def _insert_rows(rows: list[dict[str, Any]]) -> None:
    """One prepared INSERT run for every row: the ORM's bulk_create (a model instance per row, the
    statement rebuilt per batch) cost the writer thread about a tenth of an edit's CPU."""
    db = connections[router.db_for_write(UsageRecord)]
    quote = db.ops.quote_name
    sql = (
        f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({', '.join(quote(f.column) for f in _COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    )
    with db.cursor() as cursor:
        cursor.executemany(sql, [_column_values(row, db) for row in rows])


def store_rows(rows: list[dict[str, Any]]) -> int:
    """Inserts the rows not stored yet, with their budget settlement, in one transaction.
    Returns how many were inserted; raises DatabaseError when the database cannot take them."""
    unique = list({row["request_id"]: row for row in rows}.values())
    try:
        with transaction.atomic():
            return _insert(unique)
    except IntegrityError:
        # Another writer stored one of them meanwhile: go row by row, each on its own.
        inserted = 0
        for row in unique:
            try:
                with transaction.atomic():
                    inserted += _insert([row])
            except IntegrityError:
                continue
        return inserted


def _insert(rows: list[dict[str, Any]]) -> int:
    stored = set(
        UsageRecord.objects.filter(request_id__in=[r["request_id"] for r in rows]).values_list("request_id", flat=True)
    )
    new = [row for row in rows if row["request_id"] not in stored]
    if not new:
        return 0
    _insert_rows(new)
    settlements: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for row in new:
        if not row["api_key_id"]:
            continue
        reserved = Decimal(row["reserved_usd"])
        # An unknown cost keeps the estimate as spent: a budget errs on the side of the payer.
        spent = Decimal(row["cost_usd"]) if row["cost_usd"] is not None else reserved
        if not reserved and not spent:
            continue
        day = row["created_at"][:10]
        before = settlements.get((row["api_key_id"], day), (Decimal(0), Decimal(0)))
        settlements[(row["api_key_id"], day)] = (before[0] + reserved, before[1] + spent)
    for (key_id, day), (reserved, spent) in settlements.items():
        at = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC)
        budgets.settle(key_id=key_id, at=at, reserved=reserved, spent=spent)
    return len(new)


# -- the writer ------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.rows: deque[dict[str, Any]] = deque()
        self.changed = threading.Condition()
        self.pid = 0
        self.checked_journal = False
        self.last_replay = 0.0

    def submit(self, rows: list[dict[str, Any]]) -> None:
        if not self.checked_journal:
            self.checked_journal = True
            journal.pending = journal.pending or journal.has_files()  # left by a process that died
        if settings.LEDGER_FLUSH_SECONDS <= 0:
            self.write(rows)
            return
        self._ensure_thread()
        deadline = time.monotonic() + settings.LEDGER_BLOCK_SECONDS
        with self.changed:
            while len(self.rows) + len(rows) > settings.LEDGER_BUFFER_SIZE:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            else:
                self.rows.extend(rows)
                self.changed.notify_all()
                return
        logger.warning("ledger buffer full (%d rows): %d rows go to the journal", len(self.rows), len(rows))
        _journal_or_log(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Stores rows now, or journals them; then replays the journal if the database is back."""
        # Behind rows already journaled, so that the ledger keeps its order of arrival.
        if journal.pending and not self._replay():
            _journal_or_log(rows)
            return
        try:
            store_rows(rows)
        except DatabaseError as exc:
            logger.error("database refused %d ledger rows, journaled: %s", len(rows), exc)
            metrics.LEDGER_WRITE_FAILURES.inc()
            _journal_or_log(rows)
            close_old_connections()

    def _replay(self) -> bool:
        """Replays the journal; False when the database is still away (retried later)."""
        now = time.monotonic()
        if now - self.last_replay < settings.LEDGER_REPLAY_SECONDS and self.last_replay:
            return False
        self.last_replay = now
        try:
            replayed = journal.replay(store_rows)
        except DatabaseError as exc:
            logger.warning("ledger journal not replayed yet, the database is away: %s", exc)
            close_old_connections()
            return False
        self.last_replay = 0.0
        metrics.LEDGER_REPLAYED.inc(replayed)
        return True

    def _ensure_thread(self) -> None:
        if self.pid == os.getpid():
            return
        with self.changed:
            if self.pid == os.getpid():
                return
            # A forked worker starts with the parent's rows; the parent writes those.
            self.rows = deque()
            self.pid = os.getpid()
        threading.Thread(target=self._run, name="ledger-writer", daemon=True).start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            with self.changed:
                if not self.rows:
                    self.changed.wait(settings.LEDGER_FLUSH_SECONDS)
            close_old_connections()
            if not self.rows and journal.pending:
                self._replay()
            self.flush(until_empty=False)
            connections.close_all()  # this thread's own: none held while it sleeps (or the pool needs it)
            time.sleep(settings.LEDGER_FLUSH_SECONDS)

    def flush(self, *, until_empty: bool = True) -> None:
        """Writes every buffered row (or journals it). The writer thread takes only the rows buffered
        when it starts: rows that arrive while it writes wait for its next round, in one batch, instead
        of following one by one (each batch's query and commit cost as much as ten rows under load)."""
        with self.changed:
            left = len(self.rows)
        while until_empty or left > 0:
            with self.changed:
                batch = [self.rows.popleft() for _ in range(min(BATCH, len(self.rows)))]
                self.changed.notify_all()
            if not batch:
                return
            left -= len(batch)
            self.write(batch)


_writer = _Writer()


def ledger_flush() -> None:
    """Writes what this process holds and, if the database answers, replays the journal."""
    _writer.flush()
    _writer.last_replay = 0.0
    _writer._replay()
