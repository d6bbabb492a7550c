"""Shared fixtures: the stand-in provider (tests/standin.py) and the gateway wired to it."""

import pytest
from django.core.cache import cache

pytest_plugins = ["tests.standin", "tests.gateway"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Breaker and route state live in the cache; no test inherits another's."""
    cache.clear()
