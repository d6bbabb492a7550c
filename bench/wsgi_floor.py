"""The floor of a synchronous edit path under the project's gunicorn worker, for bench.all (bench
code, not product code): what serving an edit costs before any gateway work, so the gateway's CPU
per edit can be split into the server's share, Django's share and the pipeline's own.

    gunicorn -c gunicorn.conf.py bench.wsgi_floor:application          # no framework at all
    gunicorn -c gunicorn.conf.py bench.wsgi_floor:django_application   # Django's WSGI handler around it
    gunicorn -c gunicorn.conf.py bench.wsgi_floor:serve_application    # the server alone: no provider call

(FLOOR_PROVIDERS='{"": "http://127.0.0.1:PORT/v1", ...}', as for bench/async_floor.py.)

`POST [/<prefix>]/v1/images/edits`: the body is read 1 MiB at a time and split by the `multipart`
package's push parser (the project's parser; a file past 256 KiB goes to a temporary file), and
`prompt`, `model` and `image` go to the provider the prefix maps to as multipart with a
Content-Length, over one kept-alive `http.client` connection per thread (the standard library's
client, with none of urllib3's layers), giving the CPU turn back while the provider works as the
gateway does (edits_api/turns.py). The provider's answer is returned as it came.

What makes it a floor: no middleware, no API key check, no route lookup, no validation of fields
or image headers, no usage rows, no logging or metrics per edit, no retries, fallback or breaker,
and the answer is passed through without being parsed. The Django variant adds only Django's
handler: the request object, URL resolution, the request signals and the response object.
`serve_application` is the server alone: it reads the whole body in 1 MiB reads, parses nothing,
calls no provider and answers a fixed 1x1 PNG in OpenAI's shape, so its CPU per edit is what the
server itself costs an edit (head, body, answer, keep-alive) under gunicorn or granian.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any
from urllib.parse import urlsplit

from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from multipart import MultipartSegment, PushMultipartParser

from bench import floor_django
from edits_api import turns

# TURNS_PER_PROCESS: read by the worker's CPU turns (edits_api/turns.py).
floor_django.configure(__name__, TURNS_PER_PROCESS=int(os.environ.get("TURNS_PER_PROCESS", "1")))

PROVIDERS: dict[str, str] = json.loads(os.environ.get("FLOOR_PROVIDERS") or "{}")
TOKEN = os.environ.get("FLOOR_PROVIDER_TOKEN", "sk-floor")
TIMEOUT_S = float(os.environ.get("FLOOR_PROVIDER_TIMEOUT_S", "60"))
READ_SIZE = 1024 * 1024
IN_MEMORY = 256 * 1024
BOUNDARY = "wsgifloorboundary0123456789abcdef"

_local = threading.local()
Answer = tuple[str, list[tuple[str, str]], bytes]


def _error(status: str, message: str) -> Answer:
    body = json.dumps({"error": {"message": message, "type": "api_error", "param": None, "code": None}})
    return status, [("Content-Type", "application/json")], body.encode()


def _form(environ: dict[str, Any]) -> tuple[dict[str, str], tuple[str, str, IO[bytes]] | None]:
    """The text fields, and the image part (filename, content type, file at its start)."""
    content_type = environ.get("CONTENT_TYPE", "")
    boundary = content_type.partition("boundary=")[2].strip('"')
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    parser = PushMultipartParser(boundary.encode(), content_length=length)
    fields: dict[str, str] = {}
    image: tuple[str, str, IO[bytes]] | None = None
    name, sink, text = "", None, b""
    left = length
    while left > 0:
        chunk = stream.read(min(READ_SIZE, left))
        if not chunk:
            break
        left -= len(chunk)
        for event in parser.parse(chunk):
            if isinstance(event, MultipartSegment):
                name, text = event.name or "", b""
                if event.filename and name == "image":
                    sink = tempfile.SpooledTemporaryFile(IN_MEMORY)  # noqa: SIM115 (edit() closes it)
                    image = (event.filename, event.content_type or "application/octet-stream", sink)
            elif event is None:
                if sink is None:
                    fields[name] = text.decode()
                sink = None
            elif sink is not None:
                sink.write(event)
            else:
                text += event
    parser.close()
    if image is not None:
        image[2].seek(0)
    return fields, image


def _connection(base_url: str) -> http.client.HTTPConnection:
    """This thread's kept-alive connection to the provider."""
    connections: dict[str, http.client.HTTPConnection] = _local.__dict__.setdefault("connections", {})
    conn = connections.get(base_url)
    if conn is None:
        parts = urlsplit(base_url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT_S)
        connections[base_url] = conn
    return conn


def _forward(base_url: str, fields: dict[str, str], image: tuple[str, str, IO[bytes]]) -> Answer:
    filename, content_type, file = image
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    conn = _connection(base_url)
    with turns.waiting():  # the provider works: other requests run meanwhile
        try:
            conn.putrequest("POST", urlsplit(base_url).path + "/images/edits", skip_accept_encoding=True)
            for header, value in (
                ("Authorization", f"Bearer {TOKEN}"),
                ("Accept", "application/json"),
                ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),
                ("Content-Length", str(len(head) + size + len(tail))),
            ):
                conn.putheader(header, value)
            conn.endheaders(head)
            _send_file(conn, file)
            conn.send(tail)
            answer = conn.getresponse()
            body = answer.read()
        except TimeoutError:
            conn.close()
            return _error("504 Gateway Timeout", "The provider did not answer in time.")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return _error("502 Bad Gateway", f"The provider could not be reached: {type(exc).__name__}.")
    return f"{answer.status} {answer.reason}", [("Content-Type", "application/json")], body


def _send_file(conn: http.client.HTTPConnection, file: IO[bytes]) -> None:
    while block := file.read(READ_SIZE):
        conn.send(block)


def edit(environ: dict[str, Any], base_url: str) -> Answer:
    if environ["REQUEST_METHOD"] != "POST":
        return _error("405 Method Not Allowed", "Use POST.")
    fields, image = _form(environ)
    if image is None:
        return _error("400 Bad Request", "image and prompt are required.")
    with image[2]:
        if "prompt" not in fields:
            return _error("400 Bad Request", "image and prompt are required.")
        return _forward(base_url, {"prompt": fields["prompt"], "model": fields.get("model", "gpt-image-1")}, image)


def _provider_for(path: str) -> str | None:
    prefix, found, _ = path.rstrip("/").rpartition("/v1/images/edits")
    return PROVIDERS.get(prefix) if found else None


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        status, headers, body = "200 OK", [("Content-Type", "text/plain")], b"ok"
    elif (base_url := _provider_for(path)) is not None:
        status, headers, body = edit(environ, base_url)
    else:
        status, headers, body = _error("404 Not Found", "No such route.")
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


# A 1x1 transparent PNG, as an OpenAI answer: what the serve floor answers every edit.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
SERVED = json.dumps({"created": 0, "data": [{"b64_json": PIXEL}]}).encode()


def serve_application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    while stream.read(READ_SIZE):
        pass
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(SERVED)))])
    return [SERVED]


def _django_edit(request: HttpRequest) -> HttpResponse:
    base_url = _provider_for(request.path)
    if base_url is None:
        status, headers, body = _error("404 Not Found", "No such route.")
    else:
        status, headers, body = edit(request.environ, base_url)
    return HttpResponse(body, status=int(status.split()[0]), content_type=headers[0][1])


def _healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [re_path(r"^healthz$", _healthz), re_path(r"^(?:.*/)?v1/images/edits/?$", _django_edit)]

django_application = WSGIHandler()
