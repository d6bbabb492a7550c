"""What the gateway records of each request it answers."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from entities.models import ImageModel


class UsageRecord(models.Model):
    """One row per request, success or failure; ids are copied, so deleting an entity keeps history."""

    # Set when the request is answered, even if the row is written later (database down).
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    endpoint = models.CharField(max_length=16)  # "edits" or "generations"
    route_id = models.CharField(max_length=200, blank=True, db_index=True)
    image_model_id = models.CharField(max_length=200, blank=True, db_index=True)
    api_key_id = models.CharField(max_length=200, blank=True, db_index=True)
    provider = models.CharField(max_length=32, blank=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    images = models.PositiveSmallIntegerField(default=0)
    request_bytes = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    usage = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "usage record"

    def __str__(self) -> str:
        return f"{self.endpoint} {self.status} {self.route_id}/{self.image_model_id}"


class IdempotencyRecord(models.Model):
    """The first answer to a request sent with an Idempotency-Key, replayed for its duplicates.

    In the database, not a cache, so every worker and instance sees the same claim and an
    accepted request's answer survives restarts.
    """

    PENDING = "pending"
    DONE = "done"

    scope = models.CharField(max_length=220)  # "key:<api key id>" or "route:<route id>"
    key_hash = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=8, default=PENDING)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    # JSON text, not a JSONField: PostgreSQL's jsonb reorders keys, and a replay must be identical.
    body = models.TextField(blank=True, default="")
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key_hash"], name="unique_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key_hash[:12]} {self.state}"


class ProviderHealth(ImageModel):
    """Image models seen through their circuit breaker, for the admin's health page."""

    class Meta:
        proxy = True
        verbose_name = "provider health"
        verbose_name_plural = "provider health"


class CircuitBreaker(models.Model):
    """One image model's circuit breaker, in the database so every worker sees the same state.

    Used when REDIS_URL is unset (with Redis the same fields live there); see edits_api.resilience.
    Times are UNIX seconds (time.time()), 0 when unset.
    """

    image_model_id = models.CharField(primary_key=True, max_length=200)
    open_until = models.FloatField(default=0)  # no call before then; then one trial call
    trial_until = models.FloatField(default=0)  # a trial call is running until then
    window_start = models.FloatField(default=0)  # the failure window began here (its first failure)
    requests = models.PositiveIntegerField(default=0)  # distinct requests judged in the window
    failures = models.PositiveIntegerField(default=0)  # of which failed
    last_error = models.CharField(max_length=500, blank=True, default="")

    def __str__(self) -> str:
        return f"breaker {self.image_model_id}"


class CircuitFailure(models.Model):
    """A request that failed at an image model within its breaker's window, by fingerprint, so the
    same request sent again (a client's retry) counts once."""

    image_model_id = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image_model_id", "fingerprint"], name="unique_circuit_failure")]

    def __str__(self) -> str:
        return f"{self.image_model_id} {self.fingerprint[:12]}"
