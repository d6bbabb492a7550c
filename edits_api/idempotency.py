"""Idempotency-Key: the first answer is kept 24 h and replayed, so a retried request never calls a
provider twice; the same key with another body is a 409; a concurrent duplicate waits for the first."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from edits_api import turns
from edits_api.errors import GatewayError
from edits_api.models import IdempotencyRecord
from edits_api.wire import answer_json, read_json

KEEP = timedelta(hours=24)
POLL_SECONDS = 0.2
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Answer:
    """An answer to send: the stored one on a replay, or the fresh one."""

    status: int
    body: Any
    headers: dict[str, str]


def fingerprint(fields: dict[str, list[str]], files: dict[str, list[Any]]) -> str:
    """A digest of everything the client sent: fields, and each file's name and bytes."""
    digest = hashlib.sha256()
    for key in sorted(fields):
        for value in fields[key]:
            digest.update(f"f:{key}={value}\0".encode())
    for key in sorted(files):
        for upload in files[key]:
            digest.update(f"u:{key}:{upload.name}\0".encode())
            upload.seek(0)
            for chunk in upload.chunks():
                digest.update(chunk)
            upload.seek(0)
    return digest.hexdigest()


def claim(*, scope: str, key: str, fingerprint: str, wait_until: float) -> IdempotencyRecord | Answer:
    """Our own pending record when this request is the first; else the first one's answer."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise GatewayError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.", param="Idempotency-Key")
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    while True:
        now = timezone.now()
        IdempotencyRecord.objects.filter(scope=scope, key_hash=key_hash, expires_at__lte=now).delete()
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    scope=scope,
                    key_hash=key_hash,
                    fingerprint=fingerprint,
                    # A pending claim outlives its request only briefly, in case the worker died.
                    expires_at=now + timedelta(seconds=max(1.0, wait_until - time.monotonic()) + 60),
                )
        except IntegrityError:
            pass
        first = IdempotencyRecord.objects.filter(scope=scope, key_hash=key_hash).first()
        if first is None:
            continue  # the first request failed and let go of the key: this one takes it
        if first.fingerprint != fingerprint:
            raise GatewayError(
                409,
                "This Idempotency-Key was already used with a different request.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if first.state == IdempotencyRecord.DONE:
            return Answer(first.status or 200, read_json(first.body or "null"), first.headers)
        if time.monotonic() >= wait_until:
            raise GatewayError(
                409,
                "A request with this Idempotency-Key is still being processed; retry later.",
                param="Idempotency-Key",
                code="idempotency_key_in_progress",
            )
        with turns.waiting_long():
            time.sleep(POLL_SECONDS)


def run_once(
    *,
    scope: str,
    key: str,
    fingerprint: str,
    wait_until: float,
    run: Callable[[], dict[str, Any]],
    served_headers: Callable[[], dict[str, str]],
) -> Answer:
    """The answer of `run()` the first time this key is seen in this scope, its replay afterwards.

    A GatewayError from `run` is kept like an answer (4xx, and a 5xx after which the provider may
    have done and billed the work) or releases the key (other 5xx), then raised.
    """
    claimed = claim(scope=scope, key=key, fingerprint=fingerprint, wait_until=wait_until)
    if isinstance(claimed, Answer):
        return Answer(claimed.status, claimed.body, {**claimed.headers, "Idempotent-Replayed": "true"})
    try:
        body = run()
    except GatewayError as error:
        headers = {**served_headers(), **error.headers}
        complete(claimed, status=error.status, body=error.body(), headers=headers, keep=error.outcome_unknown)
        raise
    except BaseException:
        claimed.delete()
        raise
    complete(claimed, status=200, body=body, headers=served_headers())
    return Answer(200, body, {})


def complete(record: IdempotencyRecord, *, status: int, body: Any, headers: dict[str, str], keep: bool = False) -> None:
    """Keeps a final answer for 24 h; a 5xx lets go of the key so the client may try again, unless
    `keep`: the provider may have billed the request, so a retry with this key must not resend it.
    A 429 (rate limit, budget) always lets go: the same request may fit later."""
    if status == 429 or (status >= 500 and not keep):
        record.delete()
        return
    record.state = IdempotencyRecord.DONE
    record.status, record.body, record.headers = status, answer_json(body).decode(), headers
    record.expires_at = timezone.now() + KEEP
    record.save(update_fields=["state", "status", "body", "headers", "expires_at"])
