"""Admin login throttling (django-axes): repeated wrong passwords lock the account out.

Over real HTTP through the login form; the failures are counted in the database, so this runs
the same on SQLite and PostgreSQL (whichever the suite uses).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.admin_login import admin_login

PASSWORD = "the-right-admin-password-0001"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """The default hasher costs ~1 s per login on a busy machine; the login path is the same."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_repeated_wrong_passwords_lock_the_login_out(live_server: Any, settings) -> None:
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    User.objects.create_superuser("other", "other@example.com", PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT

    failures = [admin_login(live_server.url, "root", f"wrong-{i}")[1] for i in range(limit)]
    _, locked = admin_login(live_server.url, "root", PASSWORD)  # even the right password now
    _, other = admin_login(live_server.url, "other", PASSWORD)  # another operator is not locked out

    assert [f.status_code for f in failures[:-1]] == [200] * (limit - 1)  # the form again, with its error
    assert "Please enter the correct username and password" in failures[0].text
    assert locked.status_code == 429
    error = locked.json()["error"]
    assert error["code"] == "login_locked_out" and "15 minute" in error["message"]
    assert locked.headers["Retry-After"] == str(15 * 60)
    assert other.url.endswith("/admin/")


def test_a_successful_login_forgets_earlier_failures(live_server: Any, settings) -> None:
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    limit = settings.AXES_FAILURE_LIMIT

    for i in range(limit - 1):
        admin_login(live_server.url, "root", f"wrong-{i}")
    admin_login(live_server.url, "root", PASSWORD)
    for i in range(limit - 1):
        admin_login(live_server.url, "root", f"wrong-again-{i}")
    _, answer = admin_login(live_server.url, "root", PASSWORD)

    assert answer.url.endswith("/admin/")
