"""The site's own pages: the home page at `/`, the favicon, and the admin branded as the gateway."""

from __future__ import annotations

import io
import logging

import pytest
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image

pytestmark = pytest.mark.django_db


def test_home_page_says_what_the_gateway_is_and_links_everywhere(client: Client) -> None:
    response = client.get("/", HTTP_HOST="gateway.example.com")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "<title>Image gateway</title>" in page
    assert "OpenAI-style requests" in page and "Local demo" in page and "Google Gemini" in page
    for link in ("/admin/", "/docs", "/openapi.json", "/healthz", "/readyz", "/metrics"):
        assert f'href="{link}"' in page, link
    assert "curl http://gateway.example.com/v1/images/edits" in page  # the example names the host asked
    assert 'rel="icon"' in page


def test_home_page_refuses_writes(client: Client) -> None:
    assert client.post("/").status_code == 405


def test_favicon_is_served_as_an_icon_without_a_warning(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/vnd.microsoft.icon"
    assert "max-age" in response["Cache-Control"]
    assert Image.open(io.BytesIO(response.content)).format == "ICO"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_admin_is_branded_as_the_gateway(client: Client) -> None:
    login = client.get("/admin/login/").content.decode()
    assert "Image gateway" in login and "Django administration" not in login
    assert "<title>Log in | Image gateway admin</title>" in login
    assert "gateway/favicon.ico" in login

    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password-1"))
    index = client.get("/admin/").content.decode()
    assert "Image models, routes and API keys" in index
    assert 'href="/"' in index  # "View site" opens the home page
