"""Admission: what the service layer checks for a key before any provider call.

In order: the key is still usable (enabled, not expired), it may use the model, its rate limits
have room (counted), and its budget can hold the request's estimated cost (reserved). A refusal
is a GatewayError; the draft keeps what was counted so that the ledger can settle it.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from edits_api import metrics
from edits_api.accounting import budgets, costs, limits
from edits_api.accounting.ledger import Draft
from edits_api.auth import INVALID_KEY
from edits_api.errors import GatewayError
from edits_api.routing import KeyInfo
from entities.models import model_allowed

logger = logging.getLogger(__name__)


def key_allows_model(key: KeyInfo | None, model: str) -> bool:
    return key is None or model_allowed(model, list(key.models_include), list(key.models_exclude))


def model_not_allowed(key: KeyInfo, model: str) -> GatewayError:
    return GatewayError(
        403,
        f"API key '{key.id}' may not use model '{model}'.",
        type="permission_error",
        param="model",
        code="model_not_allowed",
    )


def admit(
    *,
    draft: Draft,
    key: KeyInfo | None,
    provider: str,
    model: str,
    n: int,
    size: str | None,
    quality: str | None,
    images_in: int,
) -> None:
    """Counts and reserves for one request, or raises the refusal (401, 403, 429 or 503)."""
    draft.provider, draft.model, draft.n, draft.size, draft.quality = provider, model, n, size, quality
    draft.images_in = images_in
    if key is None:
        return
    if not key.usable(timezone.now()):  # paths other than HTTP reach here without auth.py
        raise GatewayError(401, INVALID_KEY, code="invalid_api_key")
    if not key_allows_model(key, model):
        raise model_not_allowed(key, model)
    budget = budgets.Budget(key.budget_usd_per_day, key.budget_usd_per_month)
    estimate: Decimal | None = None
    if budget.any:
        estimate = costs.estimate(
            costs.price_for(provider, model), n=n, size=size, quality=quality, images_in=images_in
        )
        if estimate is None:
            # A budget cannot be kept on a model whose cost is unknown.
            raise GatewayError(
                403,
                f"Model '{model}' at {provider} has no price in the gateway's price table, and API key "
                f"'{key.id}' has a budget; an operator must add the price first.",
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
    _count_rate(draft, key, n)
    if estimate is not None:
        try:
            budgets.reserve(key_id=key.id, budget=budget, amount=estimate, at=draft.started_at)
        except GatewayError as error:
            if isinstance(error, budgets.BudgetExceeded):
                metrics.RATE_LIMITED.labels(draft.route_id, key.id, f"usd_per_{error.period}").inc()
            _give_back_images(draft, key)
            raise
        draft.reserved_usd = estimate


def _count_rate(draft: Draft, key: KeyInfo, n: int) -> None:
    wanted = limits.key_limits(key.requests_per_minute, key.images_per_day, n)
    if not wanted:
        return
    try:
        decision = limits.consume(key.id, wanted)
    except limits.LimitStoreUnavailable as exc:
        if settings.RATE_LIMIT_FAIL_OPEN:
            metrics.RATE_LIMIT_STORE_ERRORS.labels("admitted").inc()
            logger.error("rate limits of key %s not enforced (RATE_LIMIT_FAIL_OPEN): %s", key.id, exc)
            return
        metrics.RATE_LIMIT_STORE_ERRORS.labels("refused").inc()
        logger.error("request of key %s refused: rate limits cannot be checked: %s", key.id, exc)
        raise GatewayError(
            503,
            "The gateway cannot check this key's rate limits right now; retry shortly.",
            type="server_error",
            code="rate_limit_unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    draft.rate = decision
    if decision.allowed:
        draft.images_reserved = n if key.images_per_day else 0
        return
    refused = decision.refused()
    for state in refused:
        metrics.RATE_LIMITED.labels(draft.route_id, key.id, state.name).inc()
    raise _rate_limited(key, refused, n, decision)


def _rate_limited(key: KeyInfo, refused: list[limits.LimitState], n: int, decision: limits.Decision) -> GatewayError:
    parts = []
    for state in refused:
        if state.name == limits.REQUESTS:
            parts.append(f"{state.limit} requests per minute")
        elif n > state.limit:
            parts.append(f"{state.limit} images per day, fewer than the {n} asked for at once")
        else:
            parts.append(f"{state.limit} images per day ({state.remaining} left)")
    wait = decision.retry_after_s
    when = "" if math.isinf(wait) else f"; retry in {limits.duration(wait)}"
    return GatewayError(
        429,
        f"API key '{key.id}' is over its rate limit of {' and '.join(parts)}{when}.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": limits.retry_after(wait), **limits.headers(decision)},
    )


def _give_back_images(draft: Draft, key: KeyInfo) -> None:
    if draft.rate is not None and draft.images_reserved:
        limits.give_back(key.id, limits.IMAGES, draft.rate.slices[limits.IMAGES], draft.images_reserved)
        draft.images_reserved = 0


def rate_headers(draft: Draft | None, key: KeyInfo | None) -> dict[str, str]:
    """The x-ratelimit-* headers of a keyed answer: from its count, or a look without counting."""
    if key is None:
        return {}
    if draft is not None and draft.rate is not None:
        return limits.headers(draft.rate)
    wanted = limits.key_limits(key.requests_per_minute, key.images_per_day, 0)
    if not wanted:
        return {}
    try:
        return limits.headers(limits.peek(key.id, wanted))
    except limits.LimitStoreUnavailable:
        return {}
