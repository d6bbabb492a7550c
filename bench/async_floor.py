"""The floor of an async-end-to-end Django ASGI edit path, for bench.all (bench code, not product
code): the least any async edit path served by Django's ASGI handler must do, so its figures bound
from below what a full async pipeline could reach.

    uvicorn bench.async_floor:application        # FLOOR_PROVIDERS='{"": "http://127.0.0.1:PORT/v1", ...}'

`POST [/<prefix>]/v1/images/edits`: Django's ASGI handler reads the body (spooled to a temporary
file past FILE_UPLOAD_MAX_MEMORY_SIZE, like every Django ASGI request), Django's multipart parser
splits it (files past that size go to a temporary file, never all in memory), and one shared
aiohttp session per worker sends `prompt`, `model` and `image` as multipart to the provider the
prefix maps to (FLOOR_PROVIDERS, a JSON object from path prefix to base URL, which bench.common
derives from the bench routes), and the provider's JSON answer is returned as it came.

What makes it a floor, not a gateway: no database (Django's database signal receivers are
disconnected unless FLOOR_KEEP_DB_SIGNALS=1), no middleware, no API key check, no route lookup,
no validation of fields or image headers, no usage rows, no logging or metrics per edit, no
retries, fallback or breaker, and the answer is passed through without being parsed or rebuilt.
`GET /healthz` answers "ok" so the harness can wait for it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp
from django.core.asgi import get_asgi_application
from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from bench import floor_django

floor_django.configure(__name__)

if os.environ.get("FLOOR_KEEP_DB_SIGNALS") != "1":
    # With no database these receivers do nothing, but they are synchronous: the ASGI handler would
    # run them through sync_to_async, which gives each request context a thread of its own (asgiref's
    # ThreadSensitiveContext) for as long as the request lasts, i.e. a thread per held edit.
    from django.core import signals
    from django.db import close_old_connections, reset_queries

    signals.request_started.disconnect(reset_queries)
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)

PROVIDERS: dict[str, str] = json.loads(os.environ.get("FLOOR_PROVIDERS") or "{}")
TOKEN = os.environ.get("FLOOR_PROVIDER_TOKEN", "sk-floor")
TIMEOUT = aiohttp.ClientTimeout(total=float(os.environ.get("FLOOR_PROVIDER_TIMEOUT_S", "60")))
# Open provider connections per worker; as many as the threaded worker's connection limit, so an
# edit never waits for a pooled connection (the 4,096 held edits all reach the provider at once).
POOL_SIZE = int(os.environ.get("FLOOR_POOL_SIZE", "8192"))

_session: aiohttp.ClientSession | None = None


def _client() -> aiohttp.ClientSession:
    """One session (one connection pool) per worker, made in the worker's running event loop."""
    global _session
    if _session is None:
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=0, keepalive_timeout=75)
        _session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, skip_auto_headers=("User-Agent",))
    return _session


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse(
        {"error": {"message": message, "type": "api_error", "param": None, "code": None}}, status=status
    )


def _file_payload(upload: Any) -> Any:
    """The upload as aiohttp sends it: bytes when Django kept it in memory, else the open temporary
    file, which aiohttp reads 256 KiB at a time in its executor (never all in memory)."""
    if isinstance(upload, InMemoryUploadedFile):
        return upload.read()
    assert isinstance(upload, TemporaryUploadedFile)
    return upload.file.file  # the io.BufferedRandom under NamedTemporaryFile's wrapper: sized, streamed


async def edit(request: HttpRequest, base_url: str) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "Use POST.")
    image = request.FILES.get("image")
    if image is None or "prompt" not in request.POST:
        return _error(400, "image and prompt are required.")
    form = aiohttp.FormData()
    form.add_field("prompt", request.POST["prompt"])
    form.add_field("model", request.POST.get("model", "gpt-image-1"))
    form.add_field("image", _file_payload(image), filename=image.name, content_type=image.content_type)
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    try:
        async with _client().post(f"{base_url}/images/edits", data=form, headers=headers) as answer:
            body = await answer.read()
            status = answer.status
    except TimeoutError:
        return _error(504, "The provider did not answer in time.")
    except aiohttp.ClientError as exc:
        return _error(502, f"The provider could not be reached: {type(exc).__name__}.")
    return HttpResponse(body, status=status, content_type="application/json")


async def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz),
    *(
        path(f"{prefix.strip('/')}/v1/images/edits".lstrip("/"), edit, {"base_url": url})
        for prefix, url in PROVIDERS.items()
    ),
]

application = get_asgi_application()
