"""Delete what has outlived its use: stored images past their URL lifetime, expired idempotency records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand
from django.utils import timezone

from edits_api.models import IdempotencyRecord
from edits_api.results import IMAGE_FOLDER


class Command(BaseCommand):
    help = (
        "Delete stored images older than SIGNED_URL_MAX_AGE (their links have expired) and expired "
        "idempotency records. Safe to run at any time, e.g. hourly from cron."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = timezone.now() - timedelta(seconds=settings.SIGNED_URL_MAX_AGE)
        images = 0
        if default_storage.exists(IMAGE_FOLDER):
            for name in default_storage.listdir(IMAGE_FOLDER)[1]:
                path = IMAGE_FOLDER + name
                if default_storage.get_modified_time(path) < cutoff:
                    default_storage.delete(path)
                    images += 1
        records, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
        self.stdout.write(f"deleted {images} expired images and {records} expired idempotency records")
