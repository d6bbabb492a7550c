"""Django for the floor servers (bench/async_floor.py, bench/wsgi_floor.py): no database, no app,
no middleware, the calling module as the URLconf."""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings


def configure(urlconf: str, **extra: Any) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("SECRET_KEY", "floor-bench-only"),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=urlconf,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        **extra,
    )
    django.setup()
