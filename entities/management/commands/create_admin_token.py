"""`manage.py create_admin_token NAME`: a bearer token for the admin REST API, printed once."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from entities import services


class Command(BaseCommand):
    help = (
        "Create a token for the admin REST API (/api/v1/...) named NAME and print it once on stdout "
        "(only its SHA-256 is stored). Revoke it in the Django admin under 'Admin API tokens'. "
        "One live token per name: revoke the old one to reuse a name."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what will use the token, e.g. terraform-ci")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            admin_token, token = services.admin_token_create(name=options["name"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        # The token alone on stdout, so `TOKEN=$(manage.py create_admin_token ci)` works; the summary on stderr.
        self.stdout.write(token)
        self.stderr.write(
            self.style.SUCCESS(
                f"created admin token {admin_token.name!r} ({admin_token.token_hint}); "
                "copy it now, it will not be shown again"
            )
        )
