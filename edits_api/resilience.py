"""Hiding provider failures: retries with backoff per ref, and a circuit breaker per image model.

Breaker state lives in the cache, so with REDIS_URL set every worker and instance shares it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache

from edits_api.errors import GatewayError
from edits_api.providers.base import Connection, ImageRequest, ImageResult
from edits_api.selection import Candidate
from entities.models import ImageModel

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


@dataclass
class Outcome:
    """What happened, for the answer headers and the usage record (filled in as it goes)."""

    image_model: ImageModel | None = None
    model: str = ""
    attempts: int = 0
    images: int = 0
    usage: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)  # said to the client in X-Gateway-Notice


@dataclass(frozen=True)
class RetryPolicy:
    retries: int  # extra attempts per ref
    deadline: float  # time.monotonic() after which no new attempt starts

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def backoff_delay(attempt: int, error: GatewayError) -> float:
    """Seconds to wait before retry number `attempt` (1-based): Retry-After, else jittered exponential."""
    retry_after = error.headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


# -- circuit breaker -------------------------------------------------------------------------------


def _key(image_model_id: str, part: str) -> str:
    return f"breaker:{image_model_id}:{part}"


@dataclass(frozen=True)
class BreakerState:
    state: str  # "closed", "open" or "half-open"
    failures: int
    last_error: str
    retry_in: float  # seconds until a trial call is allowed (open only)


def breaker_state(image_model_id: str) -> BreakerState:
    values = cache.get_many([_key(image_model_id, p) for p in ("failures", "open_until", "last_error")])
    failures = int(values.get(_key(image_model_id, "failures")) or 0)
    open_until = float(values.get(_key(image_model_id, "open_until")) or 0)
    last_error = str(values.get(_key(image_model_id, "last_error")) or "")
    if not open_until:
        return BreakerState("closed", failures, last_error, 0.0)
    now = time.time()
    if now < open_until:
        return BreakerState("open", failures, last_error, open_until - now)
    return BreakerState("half-open", failures, last_error, 0.0)


def breaker_allows(image_model_id: str) -> bool:
    """Closed: yes. Open: no. Cooled down: yes for exactly one caller (the trial), no for the rest."""
    state = breaker_state(image_model_id)
    if state.state == "closed":
        return True
    if state.state == "open":
        return False
    return bool(cache.add(_key(image_model_id, "trial"), 1, timeout=settings.BREAKER_COOLDOWN_SECONDS))


def breaker_success(image_model_id: str) -> None:
    if cache.get(_key(image_model_id, "failures")) is not None or cache.get(_key(image_model_id, "open_until")):
        cache.delete_many([_key(image_model_id, p) for p in ("failures", "open_until", "trial")])


def breaker_failure(image_model_id: str, error: GatewayError) -> None:
    failures_key = _key(image_model_id, "failures")
    cache.add(failures_key, 0, timeout=None)
    try:
        failures = cache.incr(failures_key)
    except ValueError:  # evicted between add and incr
        cache.set(failures_key, 1, timeout=None)
        failures = 1
    cache.set(_key(image_model_id, "last_error"), f"{error.status} {error.code}: {error.message}"[:500], None)
    if failures >= settings.BREAKER_FAILURES:
        cache.set(_key(image_model_id, "open_until"), time.time() + settings.BREAKER_COOLDOWN_SECONDS, None)
        cache.delete(_key(image_model_id, "trial"))
        logger.warning("circuit opened for %s after %d failures", image_model_id, failures)


def all_open_error(ids: list[str]) -> GatewayError:
    waits: list[Any] = [breaker_state(i).retry_in for i in ids]
    retry_in = max(1, int(min(waits) + 0.999)) if waits else settings.BREAKER_COOLDOWN_SECONDS
    return GatewayError(
        503,
        f"Every provider for this request is failing (circuit open for {', '.join(ids)}); retry later.",
        type="upstream_error",
        code="upstream_unavailable",
        headers={"Retry-After": str(retry_in)},
    )


# -- calling the candidates ------------------------------------------------------------------------


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
    whose circuit is open is skipped; non-retryable answers (400, 401, 404...) end the request at once.
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
        if not breaker_allows(image_model_id):
            skipped.append(image_model_id)
            continue
        connection = connect(candidate.image_model)
        outcome.image_model, outcome.model = candidate.image_model, candidate.model
        called.append(image_model_id)
        for attempt in range(policy.retries + 1):
            remaining = policy.remaining()
            if remaining <= 0:
                break
            bounded = replace(connection, timeout_s=min(connection.timeout_s, remaining))
            outcome.attempts += 1
            try:
                result = call(bounded, request)
            except GatewayError as error:
                if not error.retryable:
                    raise
                breaker_failure(image_model_id, error)
                last_error = error
                logger.warning("%s attempt %d failed: %s", image_model_id, attempt + 1, error.message)
                delay = backoff_delay(attempt + 1, error)
                if attempt == policy.retries or delay >= policy.remaining():
                    break  # no retry left here, or no time for one: next candidate
                time.sleep(delay)
            else:
                breaker_success(image_model_id)
                return result, bounded, response_format
    if last_error is not None:
        if len(called) > 1:  # say that this was the last of several providers, not the only one
            last_error.message += f" (tried image models in turn: {', '.join(called)})"
        raise last_error
    if skipped:
        raise all_open_error(skipped)
    raise GatewayError(
        504, "The request ran out of time before a provider could answer.", type="upstream_error",
        code="upstream_timeout",
    )  # fmt: skip
