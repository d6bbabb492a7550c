"""Hiding provider failures: retries with backoff per ref, and a circuit breaker per image model.

Breaker state lives in the cache, so with REDIS_URL set every worker and instance shares it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from edits_api.errors import GatewayError

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


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
