"""Rate limits per API key: requests per minute and images per day, over sliding windows.

Each window is cut into 60 slices; a request is admitted when the slices of the last full window
(61 slices, so nothing younger than the window is ever missed) hold room for it. Every limit of a
key is checked and counted in one atomic step, so a refused request uses up nothing:

- with REDIS_URL, one Lua script per check (every instance and worker shares the counts);
- without it, rows in the database, serialized per key by a write that comes first, so the
  workers of one machine (or any number of instances on one database) share them.

When the store cannot be reached, RATE_LIMIT_FAIL_OPEN decides: admit unlimited (logged), or
refuse with 503 (the default).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F

from edits_api import turns
from edits_api.models import RateLimitBucket

logger = logging.getLogger(__name__)

SLICES = 60  # per window
SPAN = SLICES + 1  # slices summed: the current one and the 60 before it

REQUESTS = "requests"
IMAGES = "images"
WINDOWS = {REQUESTS: 60, IMAGES: 86_400}  # seconds: a minute, a day


class LimitStoreUnavailable(Exception):
    """Neither Redis (when configured) nor the database could count."""


@dataclass(frozen=True)
class Limit:
    name: str  # REQUESTS or IMAGES
    limit: int
    cost: int  # what this request uses of it

    @property
    def window_ms(self) -> int:
        return WINDOWS[self.name] * 1000


@dataclass(frozen=True)
class LimitState:
    name: str
    limit: int
    remaining: int
    reset_s: float  # until the window holds nothing this key used
    retry_after_s: float  # until this request would fit (0 when it did)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: tuple[LimitState, ...]
    slices: dict[str, int]  # the slice each limit was counted in, to give images back

    @property
    def retry_after_s(self) -> float:
        return max((s.retry_after_s for s in self.states), default=0.0)

    def refused(self) -> list[LimitState]:
        return [s for s in self.states if s.retry_after_s > 0]


def key_limits(requests_per_minute: int | None, images_per_day: int | None, images: int) -> list[Limit]:
    limits = []
    if requests_per_minute:
        limits.append(Limit(REQUESTS, requests_per_minute, 1))
    if images_per_day:
        limits.append(Limit(IMAGES, images_per_day, images))
    return limits


def consume(key_id: str, limits: list[Limit], *, now: float | None = None) -> Decision:
    """Counts the request against every limit, or none of them when one has no room."""
    if not limits:
        return Decision(True, (), {})
    now_ms = int((now if now is not None else time.time()) * 1000)
    store = _redis_store() if settings.REDIS_URL else _database_store
    return store.consume(key_id, limits, now_ms)


def peek(key_id: str, limits: list[Limit], *, now: float | None = None) -> Decision:
    """The state of the limits without counting anything (for answers that used nothing)."""
    return consume(key_id, [Limit(lim.name, lim.limit, 0) for lim in limits], now=now)


def give_back(key_id: str, name: str, slice_index: int, amount: int) -> None:
    """Returns `amount` to the slice it was taken from (images a failed request did not produce)."""
    if amount <= 0:
        return
    store = _redis_store() if settings.REDIS_URL else _database_store
    try:
        store.give_back(key_id, name, slice_index, amount)
    except LimitStoreUnavailable as exc:
        logger.warning("could not give back %d %s to key %s: %s", amount, name, key_id, exc)


# -- the arithmetic shared by both stores ----------------------------------------------------------


def _state(limit: Limit, used: dict[int, int], current: int, slice_ms: float, now_ms: int) -> LimitState:
    """`used`: counts per slice within the window, this request not included."""
    total = sum(used.values())
    over = total + limit.cost - limit.limit
    retry_ms = 0.0
    if over > 0:
        freed = 0
        retry_ms = math.inf  # a request larger than the whole limit never fits
        for index in sorted(used):
            freed += used[index]
            if freed >= over:
                retry_ms = (index + SPAN) * slice_ms - now_ms
                break
    counted = total + (limit.cost if over <= 0 else 0)
    newest = max([i for i, c in used.items() if c] + ([current] if over <= 0 and limit.cost else []), default=None)
    reset_ms = (newest + SPAN) * slice_ms - now_ms if newest is not None else 0.0
    return LimitState(
        name=limit.name,
        limit=limit.limit,
        remaining=max(0, limit.limit - counted),
        reset_s=max(0.0, reset_ms / 1000),
        retry_after_s=max(0.001, retry_ms / 1000) if over > 0 else 0.0,
    )


def _decide(
    limits: list[Limit], used: dict[str, dict[int, int]], slices: dict[str, int], now_ms: int
) -> tuple[bool, list[LimitState]]:
    """Whether every limit has room, and each one's state after this request (or without it, when
    refused: a refused request counts nowhere)."""
    states = [_state(lim, used[lim.name], slices[lim.name], lim.window_ms / SLICES, now_ms) for lim in limits]
    allowed = all(s.retry_after_s == 0 for s in states)
    if not allowed:
        states = [
            s
            if s.retry_after_s
            else _state(Limit(lim.name, lim.limit, 0), used[lim.name], slices[lim.name], lim.window_ms / SLICES, now_ms)
            for lim, s in zip(limits, states, strict=True)
        ]
    return allowed, states


# -- database store --------------------------------------------------------------------------------


class _DatabaseStore:
    """Rows of RateLimitBucket per (key:limit, slice). The first statement of the transaction is a
    write to the key's lock row, so concurrent checks of one key queue up (PostgreSQL row lock,
    SQLite's write lock) instead of reading the same counts."""

    def consume(self, key_id: str, limits: list[Limit], now_ms: int) -> Decision:
        try:
            with transaction.atomic():
                self._lock(key_id)
                return self._consume_locked(key_id, limits, now_ms)
        except DatabaseError as exc:
            raise LimitStoreUnavailable(f"database: {exc}") from exc

    def _lock(self, key_id: str) -> None:
        # Any UPDATE takes the row's lock (PostgreSQL) or the database's write lock (SQLite).
        scope = f"{key_id}:lock"
        if RateLimitBucket.objects.filter(scope=scope, bucket=-1).update(count=1):
            return
        try:
            with transaction.atomic():
                RateLimitBucket.objects.create(scope=scope, bucket=-1, count=1)
        except IntegrityError:  # created by a concurrent first check: take its lock
            RateLimitBucket.objects.filter(scope=scope, bucket=-1).update(count=1)

    def _consume_locked(self, key_id: str, limits: list[Limit], now_ms: int) -> Decision:
        used = {}
        slices = {}
        for limit in limits:
            slices[limit.name] = int(now_ms // (limit.window_ms / SLICES))
            rows = RateLimitBucket.objects.filter(
                scope=f"{key_id}:{limit.name}", bucket__gt=slices[limit.name] - SPAN
            ).values_list("bucket", "count")
            used[limit.name] = dict(rows)
        allowed, states = _decide(limits, used, slices, now_ms)
        if allowed:
            for limit in limits:
                self._add(f"{key_id}:{limit.name}", slices[limit.name], limit.cost)
                # Old slices go as they leave the window; the table stays small.
                RateLimitBucket.objects.filter(
                    scope=f"{key_id}:{limit.name}", bucket__lte=slices[limit.name] - SPAN, bucket__gte=0
                ).delete()
        return Decision(allowed, tuple(states), slices)

    def _add(self, scope: str, bucket: int, amount: int) -> None:
        if amount <= 0:
            return
        if RateLimitBucket.objects.filter(scope=scope, bucket=bucket).update(count=F("count") + amount):
            return
        RateLimitBucket.objects.create(scope=scope, bucket=bucket, count=amount)  # we hold the key's lock

    def give_back(self, key_id: str, name: str, slice_index: int, amount: int) -> None:
        try:
            RateLimitBucket.objects.filter(scope=f"{key_id}:{name}", bucket=slice_index, count__gte=amount).update(
                count=F("count") - amount
            )
        except DatabaseError as exc:
            raise LimitStoreUnavailable(f"database: {exc}") from exc


_database_store = _DatabaseStore()


# -- Redis store -----------------------------------------------------------------------------------

# KEYS: one hash per limit (field: slice index, value: count).
# ARGV: now_ms, then window_ms, limit, cost for each key.
# Returns: allowed (0/1), then per limit the slice index and a flat list "index, count, ..." of the
# slices in the window (before this request), from which Python works out remaining and waits.
_CONSUME = """
local now = tonumber(ARGV[1])
local span = 61
local found = {}
local allowed = 1
local currents = {}
for i = 1, #KEYS do
  local window = tonumber(ARGV[2 + (i - 1) * 3])
  local limit = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local current = math.floor(now / (window / 60))
  currents[i] = current
  local fields = redis.call('HGETALL', KEYS[i])
  local used = 0
  local kept = {}
  for j = 1, #fields, 2 do
    local index = tonumber(fields[j])
    if index <= current - span then
      redis.call('HDEL', KEYS[i], fields[j])
    else
      used = used + tonumber(fields[j + 1])
      table.insert(kept, index)
      table.insert(kept, tonumber(fields[j + 1]))
    end
  end
  if used + cost > limit then allowed = 0 end
  found[i] = kept
end
local answer = {allowed}
for i = 1, #KEYS do
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  if allowed == 1 and cost > 0 then
    redis.call('HINCRBY', KEYS[i], currents[i], cost)
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 + (i - 1) * 3]) * 2)
  end
  table.insert(answer, currents[i])
  table.insert(answer, found[i])
end
return answer
"""

_GIVE_BACK = """
local left = redis.call('HGET', KEYS[1], ARGV[1])
if left and tonumber(left) >= tonumber(ARGV[2]) then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
end
return -1
"""


class _RedisStore:
    def __init__(self, url: str) -> None:
        import redis

        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        # Short timeouts: a limit check must not hold a request for long when Redis is away.
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.consume_script = self.client.register_script(_CONSUME)
        self.give_back_script = self.client.register_script(_GIVE_BACK)

    def _key(self, key_id: str, name: str) -> str:
        return f"{settings.RATE_LIMIT_PREFIX}{key_id}:{name}"

    @turns.released
    def consume(self, key_id: str, limits: list[Limit], now_ms: int) -> Decision:
        args: list[Any] = [now_ms]
        for limit in limits:
            args += [limit.window_ms, limit.limit, limit.cost]
        try:
            answer = self.consume_script(keys=[self._key(key_id, lim.name) for lim in limits], args=args)
        except self.errors as exc:
            raise LimitStoreUnavailable(f"redis: {exc}") from exc
        used = {}
        slices = {}
        for position, limit in enumerate(limits):
            slices[limit.name] = int(answer[1 + 2 * position])
            flat = [int(v) for v in answer[2 + 2 * position]]
            used[limit.name] = dict(zip(flat[0::2], flat[1::2], strict=True))
        allowed, states = _decide(limits, used, slices, now_ms)
        if allowed != bool(answer[0]):  # the script and Python read the same counts
            logger.error("rate limit script and arithmetic disagree for key %s", key_id)
        return Decision(bool(answer[0]), tuple(states), slices)

    @turns.released
    def give_back(self, key_id: str, name: str, slice_index: int, amount: int) -> None:
        try:
            self.give_back_script(keys=[self._key(key_id, name)], args=[slice_index, amount])
        except self.errors as exc:
            raise LimitStoreUnavailable(f"redis: {exc}") from exc

    @turns.released
    def ping(self) -> None:
        try:
            self.client.ping()
        except self.errors as exc:
            raise LimitStoreUnavailable(f"redis: {exc}") from exc


_redis_lock = threading.Lock()
_redis_stores: dict[str, _RedisStore] = {}


def _redis_store() -> _RedisStore:
    url = settings.REDIS_URL
    store = _redis_stores.get(url)
    if store is None:
        with _redis_lock:
            store = _redis_stores.setdefault(url, _RedisStore(url))
    return store


def store_health() -> str | None:
    """None when the limit store answers, else what failed (for /readyz)."""
    if not settings.REDIS_URL:
        return None  # the database: /readyz checks it on its own
    try:
        _redis_store().ping()
    except LimitStoreUnavailable as exc:
        return str(exc)
    return None


# -- answer headers --------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# OpenAI's names for requests; "images" follows the same pattern (OpenAI's own second kind is tokens).
_HEADER_KIND = {REQUESTS: "requests", IMAGES: "images"}


def headers(decision: Decision) -> dict[str, str]:
    found: dict[str, str] = {}
    for state in decision.states:
        kind = _HEADER_KIND[state.name]
        found[f"x-ratelimit-limit-{kind}"] = str(state.limit)
        found[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
        found[f"x-ratelimit-reset-{kind}"] = duration(state.reset_s)
    return found


def retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, never 0 for a refusal."""
    if math.isinf(seconds):
        return str(WINDOWS[IMAGES])
    return str(max(1, math.ceil(seconds)))
