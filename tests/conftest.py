"""Shared fixtures: the stand-in provider (tests/standin.py) and the gateway wired to it."""

import importlib
import uuid

import pytest
from django.apps import apps
from django.core.cache import cache

from edits_api import resilience
from edits_api.accounting import costs

pytest_plugins = ["tests.standin", "tests.gateway", "tests.hostile"]


@pytest.fixture(autouse=True)
def _fresh_cache(settings, tmp_path) -> None:
    """Breaker and route state live in the cache; no test inherits another's. Ledger rows are
    written with each request, so a test sees them as soon as it has its answer; the journal and
    Redis rate-limit keys are the test's own."""
    cache.clear()
    settings.LEDGER_FLUSH_SECONDS = 0
    settings.LEDGER_JOURNAL_DIR = tmp_path / "journal"
    settings.RATE_LIMIT_PREFIX = f"test-accounting:{uuid.uuid4().hex}:"
    costs.forget_prices()
    resilience.forget_healthy_breakers()


@pytest.fixture
def seeded_prices(db: None) -> None:
    """The price table as the data migration seeds it (a transactional test's flush empties it)."""
    importlib.import_module("edits_api.migrations.0006_ledger_seed_prices").seed(apps, None)
    costs.forget_prices()
