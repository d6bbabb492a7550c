"""Production settings: `check --deploy` is clean with the documented HTTPS settings, a weak
SECRET_KEY stops the start, and behind a TLS-terminating balancer signed image URLs are https.

Each runs the project as an operator would, in a process of its own with DEBUG off.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gateway import make_image_model, make_route
from tests.gunicorn import SERVER_SECRET_KEY, gunicorn, manage
from tests.standin import StandIn, image_bytes

# The README's "Security" section lists these for a gateway served over HTTPS.
HTTPS_SETTINGS = {
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def test_check_deploy_reports_nothing_with_the_documented_https_settings(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **HTTPS_SETTINGS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_check_deploy_names_what_is_missing_without_them(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "change-me-to-a-long-random-string"),  # the .env.example placeholder
        ("SECRET_KEY", "short-but-random-8f3k2"),
        ("SECRET_KEY", "ab" * 40),  # long, but two characters
        ("SECRET_KEY", "django-insecure-" + "k3j4h5g6f7d8s9a0" * 4),
        ("SECRET_KEY_FALLBACKS", "old-and-weak"),
    ],
)
def test_a_weak_secret_key_stops_the_start_when_debug_is_off(tmp_path: Path, name: str, value: str) -> None:
    result = manage(tmp_path, "check", **{name: value})

    assert result.returncode != 0
    assert f"{name} is too weak for DEBUG off" in result.stderr
    assert value not in result.stderr


def test_a_short_secret_key_is_fine_for_local_development(tmp_path: Path) -> None:
    assert manage(tmp_path, "check", DEBUG="true", SECRET_KEY="dev").returncode == 0


def test_signed_image_urls_are_https_behind_a_tls_terminating_balancer(
    tmp_path: Path, standin: StandIn, transactional_db: None
) -> None:
    openai = make_image_model("img-openai", "openai", standin, edition={"enabled": True, "model": "gpt-image-1"})
    make_route("public", ["images.example.com", "127.0.0.1"], [openai])
    edit: dict[str, Any] = {
        "files": [("image", ("p.png", image_bytes("png", (64, 64)), "image/png"))],
        "data": {"prompt": "a hat", "response_format": "url"},
        "timeout": 30,
    }
    balancer = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "images.example.com"}

    with gunicorn(tmp_path, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", USE_X_FORWARDED_HOST="true") as url:
        behind = requests.post(url + "/v1/images/edits", headers=balancer, **edit)
        direct = requests.post(url + "/v1/images/edits", **edit)
        image_url = behind.json()["data"][0]["url"]
        fetched = requests.get(url + image_url.split("images.example.com", 1)[1], headers=balancer, timeout=30)

    assert behind.status_code == 200, behind.text
    assert image_url.startswith("https://images.example.com/images/")
    assert direct.json()["data"][0]["url"].startswith(f"{url}/images/")  # no header: http, as it came
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    assert base64.b64encode(SERVER_SECRET_KEY.encode()).decode() not in behind.text
