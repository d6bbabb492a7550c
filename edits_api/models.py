"""What the gateway records: the usage ledger, prices, budgets and rate-limit counters, idempotency."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from entities.catalog import provider_choices
from entities.models import ImageModel


def validate_per_image(prices: Any) -> None:
    if not isinstance(prices, dict):
        raise ValidationError("must be an object of prices by quality/size")
    for key, value in prices.items():
        if key != "*" and key.count("/") != 1:
            raise ValidationError(f"{key!r}: write quality/size (e.g. high/1024x1024, */1024x1024) or *")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValidationError(f"{key!r}: the price must be a number of USD, 0 or more")


class Price(models.Model):
    """What a provider charges for one model, with where and when the figures were read.

    Token rates are USD per million tokens, kept apart by kind (text and image input, image and
    text output). `per_image` holds per-image prices by quality and size ("high/1024x1024",
    "*/1024x1024", "high/*" or "*"), used where a provider bills per image and for estimates.
    Any rate left empty is unknown, never zero.
    """

    provider = models.CharField(max_length=32, choices=provider_choices)
    model = models.CharField(max_length=200, help_text="The model name as sent to the provider.")
    text_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="text input (USD / 1M tokens)"
    )
    image_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="image input (USD / 1M tokens)"
    )
    image_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="image output (USD / 1M tokens)"
    )
    text_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="text output (USD / 1M tokens)"
    )
    per_image = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_per_image],
        verbose_name="per output image (USD)",
        help_text='{"high/1024x1024": 0.167, "*/1024x1536": 0.25, "*": 0.07}: quality/size, "*" for any.',
    )
    per_input_image = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, verbose_name="per input image on edits (USD)"
    )
    source = models.CharField(max_length=500, help_text="Where the figures come from (a URL, or a note).")
    source_date = models.DateField(help_text="When the figures were read at the source.")
    notes = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="unique_price_per_model")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} ({self.source_date})"

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}@{self.source_date}"


class UsageRecord(models.Model):
    """The ledger: one row per request, success or failure; ids are copied, so deleting an entity
    keeps history. Written only through edits_api.accounting.ledger (idempotent by request_id)."""

    # When the request came in (the budget window it counts in), even if the row is written later.
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=128, null=True, blank=True, unique=True)
    channel = models.CharField(max_length=16, default="api")  # api, playground or job
    endpoint = models.CharField(max_length=16)  # the operation: "edits" or "generations"
    route_id = models.CharField(max_length=200, blank=True, db_index=True)
    image_model_id = models.CharField(max_length=200, blank=True, db_index=True)
    api_key_id = models.CharField(max_length=200, blank=True, db_index=True)
    provider = models.CharField(max_length=32, blank=True, db_index=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    upstream_latency_ms = models.PositiveIntegerField(default=0)
    request_bytes = models.PositiveBigIntegerField(default=0)
    response_bytes = models.PositiveBigIntegerField(default=0)
    images_in = models.PositiveSmallIntegerField(default=0)
    images = models.PositiveSmallIntegerField(default=0, verbose_name="images out")
    input_text_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_image_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_image_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_text_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)  # the provider's usage, as answered
    # Null: unknown (no price for the model, or a call that may have been billed without an answer).
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    price_label = models.CharField(max_length=300, blank=True)  # kept when the price row goes

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "usage record"

    def __str__(self) -> str:
        return f"{self.endpoint} {self.status} {self.route_id}/{self.image_model_id}"


class BudgetWindow(models.Model):
    """What one key spent (and holds reserved for calls under way) in one UTC day or month."""

    DAY = "day"
    MONTH = "month"

    api_key_id = models.CharField(max_length=200)
    period = models.CharField(max_length=8)  # "day" or "month"
    starts = models.DateField()  # the day, or the first day of the month
    spent_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key_id", "period", "starts"], name="unique_budget_window")]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.period} {self.starts}: {self.spent_usd} + {self.reserved_usd} reserved"


class RateLimitBucket(models.Model):
    """Counts of one sliding-window limit in one time slice, for limits kept without Redis.

    `scope` is "<key id>:<limit>"; a row per key with bucket -1 is the lock that serializes
    the workers checking that key (see accounting/limits.py).
    """

    scope = models.CharField(max_length=260)
    bucket = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "bucket"], name="unique_rate_limit_bucket")]

    def __str__(self) -> str:
        return f"{self.scope} #{self.bucket}: {self.count}"


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
