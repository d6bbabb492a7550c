"""`manage.py export_entities [--with-secrets]`: print every entity as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from entities.interchange import entities_export


class Command(BaseCommand):
    help = (
        "Print every image model, route and API key as JSON (the form seed_entities FILE imports), "
        "sorted by id. Literal provider tokens are left out unless --with-secrets; ${env.NAME} "
        "references are always written; API key secrets never are (only their hash is stored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--with-secrets",
            action="store_true",
            help="include literal provider tokens (keep the output as safe as the tokens themselves)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        data = entities_export(with_secrets=options["with_secrets"])
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
