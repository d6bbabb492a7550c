"""`manage.py rotate_tokens`: re-encrypt every stored provider token with the first encryption key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from entities import crypto
from entities.models import ImageModel


class Command(BaseCommand):
    help = (
        "Re-encrypt every literal provider token with the first key of ENCRYPTION_KEYS, in one "
        "transaction. Rotate keys by putting the new key first, running this, then removing the old one. "
        "${env.NAME} references are not encrypted and stay as they are."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated: list[str] = []
        undecryptable: list[str] = []
        with transaction.atomic():
            for pk, stored in ImageModel.objects.select_for_update().values_list("pk", "token").order_by("pk"):
                if not crypto.is_ciphertext(stored):
                    continue
                fresh = crypto.rotate(stored)
                if fresh == stored:
                    undecryptable.append(pk)
                    continue
                ImageModel.objects.filter(pk=pk).update(token=fresh)
                rotated.append(pk)
        summary = f"Re-encrypted {len(rotated)} token(s) with the first key."
        if undecryptable:
            summary += f" No key decrypts the token of: {', '.join(undecryptable)} (set those again)."
        self.stdout.write(summary)
