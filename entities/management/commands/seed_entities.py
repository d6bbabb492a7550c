"""`manage.py seed_entities [FILE] [--reset-demo]`: add the demo set, or import a file of entities."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from entities.demo import demo_seed
from entities.interchange import ImportFailed, entities_import


class Command(BaseCommand):
    help = (
        "Without FILE, add the demo entities that are missing (one image model per provider, a route on "
        "localhost and 127.0.0.1 served by the built-in local provider, and one under /openai for the real "
        "providers); existing ones are left exactly as an operator changed them, unless --reset-demo "
        "restores them. With FILE (JSON in the form export_entities prints; '-' reads stdin), upsert its "
        "image models, routes and API keys by id: all of them, or nothing when any part is invalid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="a JSON file of entities; '-' for stdin")
        parser.add_argument(
            "--reset-demo",
            action="store_true",
            help="put every demo entity back to its demo form, undoing an operator's changes to them",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: str | None = options["file"]
        if path is not None and options["reset_demo"]:
            raise CommandError("--reset-demo restores the demo set; it takes no FILE")
        try:
            if path is None:
                summary: object = demo_seed(reset=options["reset_demo"])
            else:
                summary = entities_import(data=_read(path))
        except ImportFailed as exc:
            source = "the demo set" if path is None else path
            raise CommandError(f"nothing imported, {source} was refused:\n{exc}") from None
        self.stdout.write(self.style.SUCCESS(str(summary)))


def _read(path: str) -> Any:
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
