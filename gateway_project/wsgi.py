"""WSGI entry point: `gunicorn -c gunicorn.conf.py gateway_project.wsgi:application`.

The image endpoints (any route prefix, then /v1/images/edits or /v1/images/generations) go to a
handler with their own, shorter middleware chain (settings.IMAGES_API_MIDDLEWARE); everything
else (admin, docs, health, metrics) to Django's usual one. Both resolve the same URLconf.
"""

import codecs
import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver
from multipart import parse_options_header

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
site = get_wsgi_application()
IMAGES_PATHS = ("/v1/images/edits", "/v1/images/generations")


class ImagesApiRequest(WSGIRequest):
    """Django's request, its Content-Type split by the `multipart` package's parser (the one that
    reads the body) instead of an `email.message.Message` per request (1.6% of an edit's
    instructions). Only the boundary and the charset are read from it; an unknown charset is
    ignored, as Django ignores it."""

    def _set_content_type_params(self, meta: dict[str, Any]) -> None:
        self.content_type, self.content_params = parse_options_header(meta.get("CONTENT_TYPE", ""))
        charset = self.content_params.get("charset")
        if charset:
            with contextlib.suppress(LookupError):
                codecs.lookup(charset)
                self.encoding = charset


def _images_handler() -> WSGIHandler:
    """A WSGIHandler built with IMAGES_API_MIDDLEWARE (Django builds a handler's chain from
    settings.MIDDLEWARE once, when it is made; this runs at import, before any request)."""
    full = settings.MIDDLEWARE
    settings.MIDDLEWARE = settings.IMAGES_API_MIDDLEWARE
    try:
        handler = WSGIHandler()
    finally:
        settings.MIDDLEWARE = full
    handler.request_class = ImagesApiRequest
    return handler


images = _images_handler()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "").rstrip("/")
    return (images if path.endswith(IMAGES_PATHS) else site)(environ, start_response)


# Import the URLconf (and with it every view and adapter) now: with gunicorn's preload_app this runs
# once in the master, so workers share those pages instead of each importing them after the fork.
get_resolver().url_patterns  # noqa: B018
