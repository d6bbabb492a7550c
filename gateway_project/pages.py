"""The site's own pages outside the API and the admin: the home page at `/` and the favicon."""

from __future__ import annotations

from functools import cache

from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from entities.catalog import PROVIDERS

FAVICON = "gateway/favicon.ico"


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """What this gateway is and where to go next; the admin's "View site" link lands here."""
    context = {
        "base_url": request.build_absolute_uri("/").rstrip("/"),
        "providers": [provider for provider in PROVIDERS.values() if provider.needs_network],
        "local": PROVIDERS["local"],
    }
    return render(request, "home.html", context)


@cache
def _favicon_bytes() -> bytes:
    path = finders.find(FAVICON)
    if not path:
        raise Http404("no favicon")
    with open(str(path), "rb") as handle:
        return handle.read()


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """GET /favicon.ico: browsers ask for it on every page; answering it keeps 404s out of the logs."""
    response = HttpResponse(_favicon_bytes(), content_type="image/vnd.microsoft.icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
