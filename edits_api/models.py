"""What the gateway records of each request it answers."""

from __future__ import annotations

from django.db import models


class UsageRecord(models.Model):
    """One row per request, success or failure; ids are copied, so deleting an entity keeps history."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
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
