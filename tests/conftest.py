"""Shared fixtures: the stand-in provider (tests/standin.py) and the gateway wired to it."""

import pytest
from django.core.cache import cache

pytest_plugins = ["tests.standin", "tests.gateway", "tests.hostile"]


@pytest.fixture(autouse=True)
def _fresh_cache(settings) -> None:
    """Breaker and route state live in the cache; no test inherits another's. Usage rows are
    written with each request, so a test sees them as soon as it has its answer."""
    cache.clear()
    settings.LEDGER_FLUSH_SECONDS = 0
