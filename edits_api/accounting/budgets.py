"""Budgets per API key in USD per UTC day and per UTC month.

Before a call, the request's estimated cost is reserved in the key's day and month windows by one
conditional UPDATE each ("reserved + spent + estimate <= budget"), so concurrent requests of one
key cannot overshoot together. After the call, the ledger row that records it moves the
reservation to spent with the real cost, in the same transaction as the row itself (see
ledger.py), so a replayed row settles exactly once. Spend is counted for every keyed request, so a
budget added mid-month starts from what was already spent.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q

from edits_api.errors import GatewayError, database_unavailable
from edits_api.models import BudgetWindow

ZERO = Decimal(0)


@dataclass(frozen=True)
class Budget:
    usd_per_day: Decimal | None
    usd_per_month: Decimal | None

    @property
    def any(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


def window_starts(moment: datetime.datetime) -> dict[str, datetime.date]:
    day = moment.astimezone(datetime.UTC).date()
    return {BudgetWindow.DAY: day, BudgetWindow.MONTH: day.replace(day=1)}


def seconds_until_next(period: str, moment: datetime.datetime) -> int:
    """Seconds until the UTC day (or month) after `moment` begins."""
    utc = moment.astimezone(datetime.UTC)
    if period == BudgetWindow.DAY:
        following = datetime.datetime.combine(utc.date() + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    else:
        first = utc.date().replace(day=1)
        following_month = (first + datetime.timedelta(days=32)).replace(day=1)
        following = datetime.datetime.combine(following_month, datetime.time(), datetime.UTC)
    return max(1, int((following - utc).total_seconds() + 0.999))


def reserve(*, key_id: str, budget: Budget, amount: Decimal, at: datetime.datetime) -> None:
    """Reserves `amount` in every window the key has a budget for, or raises 429 budget_exceeded
    (nothing reserved). The database being down is a 503: spending without counting is what a
    budget exists to prevent."""
    limits = {BudgetWindow.DAY: budget.usd_per_day, BudgetWindow.MONTH: budget.usd_per_month}
    starts = window_starts(at)
    try:
        with transaction.atomic():
            for period, limit in limits.items():
                if limit is None:
                    continue
                _ensure_window(key_id, period, starts[period])
                fits = (
                    BudgetWindow.objects.filter(api_key_id=key_id, period=period, starts=starts[period])
                    .filter(Q(spent_usd__lte=limit - amount - F("reserved_usd")))
                    .update(reserved_usd=F("reserved_usd") + amount)
                )
                if not fits:
                    raise BudgetExceeded(key_id, period, limit, amount, at)
    except DatabaseError as exc:
        raise database_unavailable() from exc


def _ensure_window(key_id: str, period: str, starts: datetime.date) -> None:
    if BudgetWindow.objects.filter(api_key_id=key_id, period=period, starts=starts).exists():
        return
    try:
        with transaction.atomic():
            BudgetWindow.objects.create(api_key_id=key_id, period=period, starts=starts)
    except IntegrityError:
        pass  # a concurrent request created it


class BudgetExceeded(GatewayError):
    """429 budget_exceeded, naming the window (day or month) that cannot hold the request."""

    def __init__(self, key_id: str, period: str, limit: Decimal, amount: Decimal, at: datetime.datetime) -> None:
        super().__init__(
            429,
            f"API key '{key_id}' has reached its budget of {limit:f} USD per {period} "
            f"(this request is estimated at {amount:f} USD); retry after the {period} ends (UTC).",
            type="rate_limit_error",
            code="budget_exceeded",
            headers={"Retry-After": str(seconds_until_next(period, at))},
        )
        self.period = period


def settle(*, key_id: str, at: datetime.datetime, reserved: Decimal, spent: Decimal) -> None:
    """Moves a reservation to spent in the key's day and month windows (creating them when needed).
    Runs inside the ledger's transaction."""
    for period, starts in window_starts(at).items():
        updated = BudgetWindow.objects.filter(api_key_id=key_id, period=period, starts=starts).update(
            reserved_usd=F("reserved_usd") - reserved, spent_usd=F("spent_usd") + spent
        )
        if not updated:
            try:
                with transaction.atomic():
                    BudgetWindow.objects.create(
                        api_key_id=key_id, period=period, starts=starts, reserved_usd=-reserved, spent_usd=spent
                    )
            except IntegrityError:
                BudgetWindow.objects.filter(api_key_id=key_id, period=period, starts=starts).update(
                    reserved_usd=F("reserved_usd") - reserved, spent_usd=F("spent_usd") + spent
                )


@dataclass(frozen=True)
class Spend:
    period: str
    starts: datetime.date
    spent_usd: Decimal
    reserved_usd: Decimal
    budget_usd: Decimal | None


def spend_of(*, key_id: str, budget: Budget, at: datetime.datetime) -> list[Spend]:
    """This day's and month's spend of a key against its budget (for the admin)."""
    starts = window_starts(at)
    found = {
        w.period: w
        for w in BudgetWindow.objects.filter(api_key_id=key_id, starts__in=list(starts.values()))
        if starts.get(w.period) == w.starts
    }
    limits = {BudgetWindow.DAY: budget.usd_per_day, BudgetWindow.MONTH: budget.usd_per_month}
    return [
        Spend(
            period,
            starts[period],
            found[period].spent_usd if period in found else ZERO,
            found[period].reserved_usd if period in found else ZERO,
            limits[period],
        )
        for period in (BudgetWindow.DAY, BudgetWindow.MONTH)
    ]
