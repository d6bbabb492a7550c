"""The gateway served by gunicorn with the project's gunicorn.conf.py, as in production.

Django's development server does not decode chunked bodies, so the chunked-upload limit and the
clean-up of spooled temporary files are checked here, against the test database.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.db import connection

from entities import crypto
from tests.gateway import make_image_model, make_route
from tests.gunicorn import SERVER_SECRET_KEY
from tests.standin import StandIn, image_bytes

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 600_000


@dataclass
class Served:
    url: str
    tmpdir: Path


def _database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings["USER"] or "postgres"
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{user}{password}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(transactional_db: None, standin: StandIn, tmp_path: Path) -> Iterator[Served]:
    openai = make_image_model("img-openai", "openai", standin, generation={"enabled": True})
    make_route("served", ["127.0.0.1"], [openai], generation_refs=[openai], max_size_upload=LIMIT)
    port = _free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        # A key strong enough for DEBUG off, and this process's encryption keys, or the stored
        # provider tokens would not decrypt.
        "SECRET_KEY": SERVER_SECRET_KEY,
        "ENCRYPTION_KEYS": ",".join(crypto.keys_in_use()),
        "DEBUG": "false",
        "PORT": str(port),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "TMPDIR": str(spool),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "FILE_UPLOAD_MAX_MEMORY_SIZE": "65536",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()}")
            time.sleep(0.1)
        yield Served(url, spool)
    finally:
        process.terminate()
        process.wait(timeout=10)


def multipart(image: bytes, boundary: str = "gatewaytestboundary") -> tuple[bytes, str]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nadd a hat\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    body += image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def chunks(body: bytes, size: int = 16_384) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def padded_png(total: int) -> bytes:
    """A real PNG followed by padding: valid by its header, `total` bytes long."""
    png = image_bytes("png", (64, 64))
    return png + b"\0" * (total - len(png))


def test_chunked_upload_under_the_limit_is_decoded_and_forwarded(served: Served, standin: StandIn) -> None:
    body, content_type = multipart(padded_png(LIMIT - 2_000))

    response = requests.post(
        served.url + "/v1/images/edits", data=chunks(body), headers={"Content-Type": content_type}, timeout=30
    )

    assert response.status_code == 200, response.text
    assert standin.last.fields["prompt"] == "add a hat"
    assert standin.last.files[0].size == LIMIT - 2_000


def test_chunked_upload_over_the_limit_is_cut_off_with_413(served: Served, standin: StandIn) -> None:
    body, content_type = multipart(padded_png(LIMIT + 50_000))

    response = requests.post(
        served.url + "/v1/images/edits", data=chunks(body), headers={"Content-Type": content_type}, timeout=30
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert standin.received == []


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_json_body_over_two_megabytes_is_a_413_before_any_provider_call(
    served: Served, standin: StandIn, chunked: bool
) -> None:
    body = json.dumps({"prompt": "x" * (2 * 1024 * 1024)}).encode()
    response = requests.post(
        served.url + "/v1/images/generations",
        data=chunks(body) if chunked else body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "invalid_request_body"
    assert standin.received == []


def test_a_chunked_json_body_is_decoded(served: Served, standin: StandIn) -> None:
    body = json.dumps({"prompt": "a cat in a hat"}).encode()

    response = requests.post(
        served.url + "/v1/images/generations",
        data=chunks(body, size=5),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 200, response.text
    assert standin.last.json["prompt"] == "a cat in a hat"


def test_declared_length_over_the_limit_is_refused_before_the_body(served: Served, standin: StandIn) -> None:
    with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n" + f"Content-Length: {LIMIT * 100}\r\n\r\n".encode()
        )  # and no body at all: the answer must not wait for it
        answer = ""
        while "}}" not in answer:  # the end of the JSON error body
            chunk = sock.recv(65536).decode()
            if not chunk:
                break
            answer += chunk

    assert answer.startswith("HTTP/1.1 413")
    assert "file_too_large" in answer
    assert standin.received == []


def test_spooled_temporary_files_are_removed_after_every_outcome(served: Served, standin: StandIn) -> None:
    ok, content_type = multipart(padded_png(300_000))
    not_an_image, _ = multipart(b"GIF89a" + b"\0" * 300_000)
    too_big, _ = multipart(padded_png(LIMIT + 50_000))
    standin.fail_next("500")

    statuses = []
    for body in (ok, ok, not_an_image, too_big):
        response = requests.post(
            served.url + "/v1/images/edits", data=chunks(body), headers={"Content-Type": content_type}, timeout=30
        )
        statuses.append(response.status_code)

    assert statuses == [502, 200, 400, 413]
    time.sleep(0.2)
    assert list(served.tmpdir.iterdir()) == []


def test_metrics_add_up_the_workers_samples(served: Served, standin: StandIn) -> None:
    body, content_type = multipart(padded_png(10_000))
    for _ in range(3):
        requests.post(served.url + "/v1/images/edits", data=body, headers={"Content-Type": content_type}, timeout=30)

    text = requests.get(served.url + "/metrics", timeout=10).text

    assert 'gateway_requests_total{endpoint="edits",image_model="img-openai",route="served",status="200"} 3.0' in text


def test_a_body_that_arrives_in_small_pieces_is_forwarded_whole(served: Served, standin: StandIn) -> None:
    """A declared-length body whose pieces come apart (a real network, a slow client): every byte
    reaches the provider. The worker's reader once returned a short read where gunicorn expects
    the full size, and the body was cut short (at 1 MiB reads, 1 edit in 3 lost its image)."""
    image = padded_png(300_000)
    body, content_type = multipart(image)
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for piece in chunks(body, 7_000):
            sock.sendall(piece)
            time.sleep(0.002)  # each arrives on its own, so a read finds less than it asked for
        answer = b""
        while data := sock.recv(65536):
            answer += data

    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert standin.last.files[0].size == len(image)


def test_the_image_endpoints_chain_keeps_the_api_headers_and_the_admin_keeps_its_own(
    served: Served, standin: StandIn
) -> None:
    # gateway_project/wsgi.py serves the image endpoints with a shorter middleware chain: they keep
    # the request id and the security headers, and set no cookie; the admin keeps sessions and CSRF.
    body, content_type = multipart(image_bytes("png", (64, 64)))
    edit = requests.post(
        served.url + "/v1/images/edits", data=body, headers={"Content-Type": content_type, "X-Request-Id": "req-abc"}
    )
    assert edit.status_code == 200, edit.text
    assert edit.headers["X-Request-Id"] == "req-abc"
    assert edit.headers["X-Content-Type-Options"] == "nosniff"
    assert edit.headers["X-Frame-Options"] == "DENY"
    assert edit.headers["X-Gateway-Route"] == "served"
    assert "Set-Cookie" not in edit.headers and "Cookie" not in edit.headers.get("Vary", "")

    login = requests.get(served.url + "/admin/login/")
    assert login.status_code == 200
    assert "csrftoken" in login.cookies
    assert 'name="csrfmiddlewaretoken"' in login.text
    assert login.headers["X-Frame-Options"] == "DENY" and login.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("charset", "prompt_bytes", "status"),
    [
        ("; charset=ISO-8859-1", "un chapeau rétro".encode("latin-1"), 200),  # the fields' encoding
        ("; charset=no-such-charset", "un chapeau rétro".encode(), 200),  # unknown: UTF-8, as Django does
        ("", "un chapeau rétro".encode("latin-1"), 400),  # not UTF-8, and nothing said otherwise
    ],
)
def test_the_image_endpoints_read_the_boundary_and_charset_as_sent(
    served: Served, standin: StandIn, charset: str, prompt_bytes: bytes, status: int
) -> None:
    # The image endpoints split their Content-Type with the multipart package's parser, not
    # Django's (gateway_project/wsgi.py): a quoted boundary with RFC 2046's punctuation and a space,
    # and the charset of the text fields, come out as Django's own parser reads them.
    boundary = "b'()+_,-./:=? 1"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
        + prompt_bytes
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image_bytes("png", (64, 64))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/form-data{charset}; boundary="{boundary}"'

    answer = requests.post(served.url + "/v1/images/edits", data=body, headers={"Content-Type": content_type})

    assert answer.status_code == status, answer.text
    if status == 200:
        assert standin.last.fields["prompt"] == "un chapeau rétro"
    else:
        assert answer.json()["error"]["param"] == "prompt"
