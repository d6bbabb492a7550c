"""Hiding provider failures without a second bill: retries with backoff per ref, fallback to the
next ref, a circuit breaker per image model, and what the answer tells the client about retrying.

- A request the provider received in full and then never answered (timeout, lost connection) is
  answered at once and never sent again, to that ref or another (contract §3.6): the provider may
  have processed and billed it. Refused connections, 429 and 5xx answers are retried and fall back.
- The breaker counts requests, not attempts, and a request sent again with the same content counts
  once: it opens when, within a window that starts at a failure, enough distinct requests were
  answered and enough of them failed. Only the provider's own failures count (5xx, 429, timeouts,
  unusable answers), never a 4xx that the client's input caused. State lives in Redis when
  REDIS_URL is set, else in the database, so every worker and instance sees the same breaker.
  A healthy breaker (closed, no failure in its window) is re-read at most once a second per
  process: another instance's failures and openings are seen within that second.
- Every error from here carries `x-should-retry`: false once the gateway retried or fell back, or
  when a retry could bill twice; true (with Retry-After) when a client's retry can help.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Protocol

import redis
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db import connection as db
from django.db.models import F

from edits_api import turns
from edits_api.errors import GatewayError
from edits_api.models import CircuitBreaker, CircuitFailure
from edits_api.providers import http
from edits_api.providers.base import Connection, ImageRequest, ImageResult
from edits_api.selection import Candidate
from entities.models import ImageModel

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
# The longest the gateway waits before a retry while it holds the client's request: a provider
# that asks for longer (Retry-After) gets no retry here; the next ref is tried, or the client is
# told to come back after that Retry-After.
MAX_WAIT_S = 10.0


@dataclass
class Outcome:
    """What happened, for the answer headers and the usage record (filled in as it goes)."""

    image_model: ImageModel | None = None
    model: str = ""
    attempts: int = 0
    images: int = 0
    usage: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)  # said to the client in X-Gateway-Notice
    upstream_ms: float = 0.0  # time spent in provider calls, retries included


@dataclass(frozen=True)
class RetryPolicy:
    retries: int  # extra attempts per ref
    deadline: float  # time.monotonic() after which no new attempt starts

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def backoff_delay(attempt: int, error: GatewayError) -> float:
    """Seconds to wait before retry number `attempt` (1-based): the provider's Retry-After (clamped
    to MAX_RETRY_AFTER_S), else jittered exponential backoff."""
    retry_after = http.retry_after_seconds(error.headers.get("Retry-After"))
    if retry_after is not None:
        return float(retry_after)
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


# -- circuit breaker: where its state lives --------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """A breaker as stored; times are UNIX seconds, 0 when unset."""

    open_until: float = 0.0
    trial_until: float = 0.0
    window_start: float = 0.0
    requests: int = 0
    failures: int = 0
    last_error: str = ""


class _Store(Protocol):
    def read(self, key: str) -> _Stored: ...

    def count_success(self, key: str, *, since: float) -> None:
        """One more request in the window, if a window started after `since`."""

    def count_failure(self, key: str, *, fingerprint: str, now: float, since: float, error: str) -> _Stored:
        """One more failed request (unless this fingerprint already failed in the window); a window
        that started before `since` is over, and this failure starts the next one."""
        ...

    def open(self, key: str, *, until: float, error: str) -> None:
        """Open until `until`; the counts that opened it stay (for the admin), the window ends."""

    def claim_trial(self, key: str, *, now: float, until: float) -> bool:
        """True for exactly one caller once the breaker cooled down."""
        ...

    def close(self, key: str) -> None: ...


_READ_BREAKER_SQL = (
    "SELECT open_until, trial_until, window_start, requests, failures, last_error"
    f" FROM {CircuitBreaker._meta.db_table} WHERE image_model_id = %s"
)


class _DatabaseStore:
    """Every operation is one conditional statement (or a unique insert), so concurrent workers
    never lose an update, on SQLite and PostgreSQL alike."""

    def read(self, key: str) -> _Stored:
        # Every request reads its breaker: one plain statement, not the ORM's query building,
        # which cost a fifth of an edit's CPU.
        with db.cursor() as cursor:
            cursor.execute(_READ_BREAKER_SQL, [key])
            row = cursor.fetchone()
        return _Stored() if row is None else _Stored(*row)

    def count_success(self, key: str, *, since: float) -> None:
        CircuitBreaker.objects.filter(pk=key, window_start__gt=since).update(requests=F("requests") + 1)

    def count_failure(self, key: str, *, fingerprint: str, now: float, since: float, error: str) -> _Stored:
        CircuitBreaker.objects.get_or_create(pk=key)
        if CircuitBreaker.objects.filter(pk=key, window_start__lte=since).update(
            window_start=now, requests=0, failures=0
        ):
            CircuitFailure.objects.filter(image_model_id=key).delete()
        try:
            with transaction.atomic():
                CircuitFailure.objects.create(image_model_id=key, fingerprint=fingerprint)
            counts: dict[str, Any] = {"requests": F("requests") + 1, "failures": F("failures") + 1}
        except IntegrityError:
            counts = {}  # this request already failed here in this window: the same request again
        CircuitBreaker.objects.filter(pk=key).update(last_error=error, **counts)
        return self.read(key)

    def open(self, key: str, *, until: float, error: str) -> None:
        CircuitBreaker.objects.update_or_create(
            pk=key,
            defaults={"open_until": until, "trial_until": 0, "window_start": 0, "last_error": error},
        )
        CircuitFailure.objects.filter(image_model_id=key).delete()

    def claim_trial(self, key: str, *, now: float, until: float) -> bool:
        claimed = CircuitBreaker.objects.filter(
            pk=key, open_until__gt=0, open_until__lte=now, trial_until__lte=now
        ).update(trial_until=until)
        return claimed == 1

    def close(self, key: str) -> None:
        CircuitBreaker.objects.filter(pk=key).update(
            open_until=0, trial_until=0, window_start=0, requests=0, failures=0
        )
        CircuitFailure.objects.filter(image_model_id=key).delete()


_REDIS_FAILURE = """
local start = tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0')
if start <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'window_start', ARGV[1], 'requests', 0, 'failures', 0)
  redis.call('DEL', KEYS[2])
end
if redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
return 1
"""
_REDIS_SUCCESS = """
if tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0') > tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
end
return 1
"""
_REDIS_TRIAL = """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local trial_until = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
local now = tonumber(ARGV[1])
if open_until > 0 and open_until <= now and trial_until <= now then
  redis.call('HSET', KEYS[1], 'trial_until', ARGV[2])
  return 1
end
return 0
"""


class _RedisStore:
    """The same breaker in Redis: a hash per image model and a set of the window's failed requests;
    each read-and-write is one Lua script, so it is atomic across workers and instances."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        self._failure = self._redis.register_script(_REDIS_FAILURE)
        self._success = self._redis.register_script(_REDIS_SUCCESS)
        self._trial = self._redis.register_script(_REDIS_TRIAL)

    @staticmethod
    def _keys(key: str) -> list[str]:
        return [f"gateway:breaker:{key}", f"gateway:breaker:{key}:failed"]

    @turns.released
    def read(self, key: str) -> _Stored:
        values: dict[str, str] = self._redis.hgetall(self._keys(key)[0])  # type: ignore[assignment]
        return _Stored(
            open_until=float(values.get("open_until") or 0),
            trial_until=float(values.get("trial_until") or 0),
            window_start=float(values.get("window_start") or 0),
            requests=int(values.get("requests") or 0),
            failures=int(values.get("failures") or 0),
            last_error=values.get("last_error") or "",
        )

    @turns.released
    def count_success(self, key: str, *, since: float) -> None:
        self._success(keys=self._keys(key)[:1], args=[since])

    @turns.released
    def count_failure(self, key: str, *, fingerprint: str, now: float, since: float, error: str) -> _Stored:
        window = settings.BREAKER_WINDOW_SECONDS
        self._failure(keys=self._keys(key), args=[now, since, fingerprint, error, window])
        return self.read(key)

    @turns.released
    def open(self, key: str, *, until: float, error: str) -> None:
        state, failed = self._keys(key)
        pipeline = self._redis.pipeline()
        pipeline.hset(
            state,
            mapping={"open_until": until, "trial_until": 0, "window_start": 0, "last_error": error},
        )
        pipeline.delete(failed)
        pipeline.execute()

    @turns.released
    def claim_trial(self, key: str, *, now: float, until: float) -> bool:
        return bool(self._trial(keys=self._keys(key)[:1], args=[now, until]))

    @turns.released
    def close(self, key: str) -> None:
        state, failed = self._keys(key)
        pipeline = self._redis.pipeline()
        pipeline.hset(
            state, mapping={"open_until": 0, "trial_until": 0, "window_start": 0, "requests": 0, "failures": 0}
        )
        pipeline.delete(failed)
        pipeline.execute()


_DATABASE_STORE = _DatabaseStore()
# A store that cannot be reached must not fail requests: the breaker then lets every call through.
_STORE_ERRORS = (DatabaseError, redis.RedisError)


@lru_cache(maxsize=4)
def _redis_store(url: str) -> _RedisStore:
    return _RedisStore(url)


def _store() -> _Store:
    return _redis_store(settings.REDIS_URL) if settings.REDIS_URL else _DATABASE_STORE


# -- circuit breaker: the policy -------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerState:
    state: str  # "closed", "open" or "half-open"
    failures: int  # failed requests in the current window
    requests: int  # requests answered in the current window
    last_error: str
    retry_in: float  # seconds until a trial call is allowed (open only)


@dataclass(frozen=True)
class Admission:
    """A breaker's leave to call an image model for one request."""

    image_model_id: str
    trial: bool  # the one call after the cooldown that decides whether the circuit closes
    window_running: bool  # a failure window is running, so this request's success counts too


def breaker_state(image_model_id: str) -> BreakerState:
    """The breaker as the admin shows it: closed, with the counts of a running window; or open or
    half-open, with the counts that opened it."""
    stored = _store().read(image_model_id)
    now = time.time()
    failures, requests, error = stored.failures, stored.requests, stored.last_error
    if not stored.open_until:
        if stored.window_start <= now - settings.BREAKER_WINDOW_SECONDS:
            failures, requests = 0, 0
        return BreakerState("closed", failures, requests, error, 0.0)
    if now < stored.open_until:
        return BreakerState("open", failures, requests, error, stored.open_until - now)
    return BreakerState("half-open", failures, requests, error, 0.0)


# Image model id -> time.monotonic() until which its breaker is taken as healthy without a read:
# reading the store was a sizeable part of every edit's CPU while nearly always saying "closed".
_HEALTHY_FOR_S = 1.0
_healthy_until: dict[str, float] = {}


def forget_healthy_breakers() -> None:
    """Every breaker is read from the store again (tests: no state carried from one to the next)."""
    _healthy_until.clear()


def breaker_admit(image_model_id: str) -> Admission | None:
    """Closed: yes. Open: no. Cooled down: yes for exactly one caller (the trial), no for the rest."""
    if _healthy_until.get(image_model_id, 0.0) > time.monotonic():
        return Admission(image_model_id, trial=False, window_running=False)
    now = time.time()
    try:
        stored = _store().read(image_model_id)
        if not stored.open_until:
            window_running = stored.window_start > now - settings.BREAKER_WINDOW_SECONDS
            if not window_running:
                _healthy_until[image_model_id] = time.monotonic() + _HEALTHY_FOR_S
            return Admission(image_model_id, trial=False, window_running=window_running)
        if now < stored.open_until:
            return None
        if _store().claim_trial(image_model_id, now=now, until=now + settings.BREAKER_COOLDOWN_SECONDS):
            return Admission(image_model_id, trial=True, window_running=False)
        return None
    except _STORE_ERRORS as exc:
        logger.warning("circuit breaker store unavailable, calling %s anyway: %s", image_model_id, exc)
        return Admission(image_model_id, trial=False, window_running=False)


def breaker_record(admission: Admission, *, fingerprint: str, error: GatewayError | None) -> None:
    """One request's outcome at one image model (however many attempts it took)."""
    image_model_id = admission.image_model_id
    now = time.time()
    store = _store()
    try:
        if error is None or not counts_against_provider(error):
            if admission.trial:  # the provider answered: it is back
                store.close(image_model_id)
                logger.info("circuit closed for %s after a good trial call", image_model_id)
            elif admission.window_running and error is None:
                store.count_success(image_model_id, since=now - settings.BREAKER_WINDOW_SECONDS)
            return
        _healthy_until.pop(image_model_id, None)  # this process's next request reads the store
        text = f"{error.status} {error.code}: {error.message}"[:500]
        if admission.trial:
            store.open(image_model_id, until=now + settings.BREAKER_COOLDOWN_SECONDS, error=text)
            logger.warning("circuit for %s stays open: its trial call failed", image_model_id)
            return
        stored = store.count_failure(
            image_model_id,
            fingerprint=fingerprint,
            now=now,
            since=now - settings.BREAKER_WINDOW_SECONDS,
            error=text,
        )
        if stored.requests >= settings.BREAKER_MIN_REQUESTS and (
            stored.failures >= settings.BREAKER_FAILURE_RATE * stored.requests
        ):
            store.open(image_model_id, until=now + settings.BREAKER_COOLDOWN_SECONDS, error=text)
            logger.warning(
                "circuit opened for %s: %d of %d requests failed", image_model_id, stored.failures, stored.requests
            )
    except _STORE_ERRORS as exc:
        logger.warning("circuit breaker store unavailable, outcome at %s not counted: %s", image_model_id, exc)


def breaker_close(image_model_id: str) -> None:
    """Forget the failures and close the circuit (the admin's action)."""
    _healthy_until.pop(image_model_id, None)
    _store().close(image_model_id)


def counts_against_provider(error: GatewayError) -> bool:
    """The provider's own failures (5xx, 429, timeouts, unusable answers); never a 4xx that the
    client's input caused, such as an invalid value or a moderation block."""
    return error.status >= 500 or error.status == 429


def request_fingerprint(request: ImageRequest) -> str:
    """What makes two requests the same request for the breaker: prompt, options and images (by
    type, size, dimensions and their first 64 KiB, so it stays cheap for large uploads)."""
    digest = hashlib.sha256()
    for value in (
        request.prompt, request.model, request.n, request.size, request.quality, request.background,
        request.style, request.output_format, request.output_compression, request.input_fidelity,
    ):  # fmt: skip
        digest.update(repr(value).encode() + b"\0")
    for image in [*request.images, *([request.mask] if request.mask else [])]:
        digest.update(f"{image.content_type}:{image.size}:{image.width}x{image.height}\0".encode())
        with image.open() as file:
            digest.update(file.read(64 * 1024))
    return digest.hexdigest()


def all_open_error(ids: list[str]) -> GatewayError:
    waits: list[float] = []
    for image_model_id in ids:
        try:
            waits.append(breaker_state(image_model_id).retry_in)
        except _STORE_ERRORS:
            continue
    retry_in = max(1, int(min(waits) + 0.999)) if waits else settings.BREAKER_COOLDOWN_SECONDS
    return GatewayError(
        503,
        f"Every provider for this request is failing (circuit open for {', '.join(ids)}); retry later.",
        type="upstream_error",
        code="upstream_unavailable",
        headers={"Retry-After": str(retry_in)},
    )


# -- calling the candidates ------------------------------------------------------------------------


class _OutOfTime(Exception):
    """The request's deadline passed before this candidate could be called."""


def call_candidates(
    candidates: list[Candidate],
    *,
    fallback: bool,
    policy: RetryPolicy,
    outcome: Outcome,
    prepare: Callable[[Candidate], tuple[ImageRequest, str | None]],
    connect: Callable[[ImageModel], Connection],
    call: Callable[[Connection, ImageRequest], ImageResult],
) -> tuple[ImageResult, Connection, str | None]:
    """Calls the first candidate, retrying retryable failures; then the next ones, when fallback is on.

    Each candidate's request is prepared (and checked) with its own model and defaults. A candidate
    whose circuit is open is skipped; non-retryable answers (400, 401, 404...) and requests whose
    outcome is unknown end the request at once. Every error raised carries `x-should-retry`.
    """
    last_error: GatewayError | None = None
    skipped: list[str] = []
    called: list[str] = []
    for index, candidate in enumerate(candidates if fallback else candidates[:1]):
        try:
            request, response_format = prepare(candidate)
        except GatewayError as error:
            if index == 0:
                raise
            # This fallback cannot take the request as sent (e.g. a mask on Gemini): skip it.
            logger.info("fallback %s skipped: %s", candidate.image_model.id, error.message)
            continue
        image_model_id = candidate.image_model.id
        admission = breaker_admit(image_model_id)
        if admission is None:
            skipped.append(image_model_id)
            continue
        connection = connect(candidate.image_model)
        outcome.image_model, outcome.model = candidate.image_model, candidate.model
        try:
            result, bounded = _call_with_retries(connection, request, policy=policy, outcome=outcome, call=call)
        except _OutOfTime:
            break
        except GatewayError as error:
            called.append(image_model_id)
            breaker_record(admission, fingerprint=request_fingerprint(request), error=error)
            if not error.retryable:
                raise _with_client_advice(error, outcome=outcome, called=called) from error.__cause__
            last_error = error
            continue
        called.append(image_model_id)
        breaker_record(admission, fingerprint="", error=None)
        return result, bounded, response_format
    if last_error is not None:
        if len(called) > 1:  # say that this was the last of several providers, not the only one
            last_error.message += f" (tried image models in turn: {', '.join(called)})"
        raise _with_client_advice(last_error, outcome=outcome, called=called)
    if skipped:
        raise _with_client_advice(all_open_error(skipped), outcome=outcome, called=called)
    raise GatewayError(
        504, "The request ran out of time before a provider could answer.", type="upstream_error",
        code="upstream_timeout", headers=dict(http.NO_CLIENT_RETRY),
    )  # fmt: skip


def _call_with_retries(
    connection: Connection,
    request: ImageRequest,
    *,
    policy: RetryPolicy,
    outcome: Outcome,
    call: Callable[[Connection, ImageRequest], ImageResult],
) -> tuple[ImageResult, Connection]:
    """One candidate: the first attempt and up to `policy.retries` more, each within the deadline.

    Raises the last GatewayError, scrubbed of the provider's token, or _OutOfTime when no attempt
    could start.
    """
    for attempt in range(1, policy.retries + 2):
        remaining = policy.remaining()
        if remaining <= 0:
            raise _OutOfTime
        bounded = replace(connection, timeout_s=min(connection.timeout_s, remaining))
        outcome.attempts += 1
        call_started = time.monotonic()
        try:
            try:
                result = call(bounded, request)
            finally:  # the ledger's upstream latency: time in provider calls only
                outcome.upstream_ms += (time.monotonic() - call_started) * 1000
            return http.scrub_result(bounded, result), bounded
        except GatewayError as error:
            http.scrub_error(error, connection.token)
            if not error.retryable or error.code == "upstream_auth_error":
                raise  # another attempt here cannot help (another ref may, for the auth error)
            image_model_id = outcome.image_model.id if outcome.image_model else "-"
            logger.warning("%s attempt %d failed: %s", image_model_id, attempt, error.message)
            delay = backoff_delay(attempt, error)
            if attempt > policy.retries or delay > MAX_WAIT_S or delay >= policy.remaining():
                raise  # no retry left here, or no time for one: the next candidate
            with turns.waiting_long():
                time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _with_client_advice(error: GatewayError, *, outcome: Outcome, called: list[str]) -> GatewayError:
    """`x-should-retry` for the official SDKs (they retry 408/409/429/5xx twice unless told).

    False once the gateway itself retried or fell back, when the provider may already have the
    request (a retry could bill twice), and for answers another try would not change; true, with
    Retry-After, when waiting can help: a 429, every circuit open, or one failed attempt the route
    was not set to retry.
    """
    if error.outcome_unknown:
        advice = False
    elif error.status == 429 or error.code == "upstream_unavailable":
        advice = True
    else:
        advice = error.retryable and error.code != "upstream_auth_error" and outcome.attempts <= 1 and len(called) <= 1
    error.headers["x-should-retry"] = "true" if advice else "false"
    return error
