"""Slow and idle clients against gunicorn with the project's worker (gateway_project/gworker.py):
they cannot take the threads that answer everyone else, and each is cut off on time.

Bounded and loopback only: at most 2,000 client sockets, a few seconds each test.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.core import signing

from edits_api.models import UsageRecord
from entities.models import DEFAULT_DEADLINE_MS
from tests.edits_api.test_served import multipart, padded_png
from tests.gateway import make_image_model, make_route
from tests.gunicorn import SERVER_SECRET_KEY, gunicorn, gunicorn_process, resolved_config
from tests.standin import StandIn

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 3


@pytest.fixture
def route(transactional_db: None, standin: StandIn) -> None:
    make_route("served", ["127.0.0.1"], [make_image_model("img-openai", "openai", standin)])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _read_answer(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer.decode("latin-1")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _edit(url: str, timeout: float) -> requests.Response:
    body, content_type = multipart(padded_png(20_000))
    return requests.post(url + "/v1/images/edits", data=body, headers={"Content-Type": content_type}, timeout=timeout)


@pytest.fixture
def hardened(route: None, tmp_path: Path) -> Iterator[str]:
    """The gateway's base URL, served with small limits so the tests stay short."""
    with gunicorn(
        tmp_path,
        GUNICORN_THREADS="8",
        GUNICORN_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        GUNICORN_BODY_TIMEOUT="1",
        GUNICORN_WORKER_CONNECTIONS="4000",
    ) as url:
        yield url


def test_thousands_of_slow_and_idle_connections_do_not_starve_healthz_or_an_edit(hardened: str) -> None:
    idle = [_connect(_port(hardened)) for _ in range(1000)]
    slow = [_connect(_port(hardened)) for _ in range(1000)]
    for sock in slow:  # a request line and a header that never ends (slowloris)
        sock.sendall(b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    try:
        began = time.monotonic()
        healthz = requests.get(hardened + "/healthz", timeout=2)
        healthz_s = time.monotonic() - began
        began = time.monotonic()
        edit = _edit(hardened, timeout=5)
        edit_s = time.monotonic() - began

        assert healthz.status_code == 200
        assert edit.status_code == 200, edit.text
        assert healthz_s < 2 and edit_s < 5  # 8 threads, 2,000 connections held open

        time.sleep(HEADER_TIMEOUT + 1.5)  # past the header timeout: every one of them is cut off
        assert _read_answer(slow[0]).startswith("HTTP/1.1 408")
        assert all(_read_answer(sock) == "" for sock in idle[:50])
        assert '"code": "request_timeout"' in _read_answer(slow[-1])
    finally:
        for sock in idle + slow:
            sock.close()


def test_a_body_that_stops_arriving_is_cut_off_with_408(hardened: str, standin: StandIn) -> None:
    body, content_type = multipart(padded_png(50_000))
    with _connect(_port(hardened)) as sock:
        sock.sendall(
            b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )  # then nothing: the body stalls
        began = time.monotonic()
        answer = _read_answer(sock)

    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    error = json.loads(answer.split("\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout"
    assert time.monotonic() - began < 4
    assert standin.received == []


def test_connections_past_the_cap_are_refused_at_once_with_503(route: None, tmp_path: Path) -> None:
    # The held connections send nothing: a header timeout longer than this test keeps the worker
    # from closing them as idle while a busy machine slows the loop below.
    with gunicorn(tmp_path, GUNICORN_WORKER_CONNECTIONS="50", GUNICORN_HEADER_TIMEOUT="120") as url:
        # gunicorn() leaves the worker holding none of its own connections: it counts these 50.
        held = [_connect(_port(url)) for _ in range(50)]
        tries: list[tuple[float, int]] = []  # (seconds, status) of each probe, for the failure message
        try:
            # The worker accepts the 50 as its loop gets to them (slower on a busy machine); from
            # then on every new connection is refused.
            began = time.monotonic()
            while True:
                refused = requests.get(url + "/healthz", headers={"Connection": "close"}, timeout=2)
                tries.append((round(time.monotonic() - began, 2), refused.status_code))
                if refused.status_code == 503 or time.monotonic() > began + 10:
                    break
                time.sleep(0.2)
            # The clients leave; the worker closes its side of each once it no longer counts it,
            # and none of the 50 was answered (a refused one would have its 503 to read).
            for sock in held:
                sock.shutdown(socket.SHUT_WR)
            answered = {i: answer[:40] for i, sock in enumerate(held) if (answer := _read_answer(sock))}
        finally:
            for sock in held:
                sock.close()
        again = requests.get(url + "/healthz", timeout=2)

    assert refused.status_code == 503, tries
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "server_busy"
    assert answered == {}
    assert again.status_code == 200


def _read_one(sock: socket.socket) -> tuple[str, bytes]:
    """One answer on a kept-alive connection: its head, and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length  # nothing of a next answer was read
    return head.decode("latin-1"), body


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_requests_back_to_back_on_one_connection_and_a_head_split_after_an_answer_are_served(hardened: str) -> None:
    # The thread that answered waits a moment for the connection's next head (GUNICORN_KEEPALIVE_LINGER);
    # a head that began then and ends later is finished by the main loop, its first bytes kept.
    with _connect(_port(hardened)) as sock:
        answers = []
        for _ in range(3):
            sock.sendall(HEALTHZ)
            answers.append(_read_one(sock))
        sock.sendall(HEALTHZ[:20])  # at once after the answer: inside the linger
        time.sleep(0.3)  # long past it
        sock.sendall(HEALTHZ[20:])
        split = _read_one(sock)

    assert [head.split("\r\n")[0] for head, _ in answers] == ["HTTP/1.1 200 OK"] * 3
    assert split[0].startswith("HTTP/1.1 200 OK") and json.loads(split[1]) == json.loads(answers[0][1])


def test_bodies_read_or_left_unread_keep_the_connection_in_step(hardened: str, standin: StandIn) -> None:
    # A body the gateway refuses unread (no route: 404 before the body) is drained before the next
    # head is read; one read to its end (an edit) needs no drain. Either way the next request on
    # the connection starts where it should.
    body, content_type = multipart(padded_png(20_000))

    def post(path: str) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    with _connect(_port(hardened)) as sock:
        answers = []
        for request in (post("/elsewhere/v1/images/edits"), post("/v1/images/edits"), HEALTHZ,
                        post("/v1/images/edits"), post("/elsewhere/v1/images/edits"), HEALTHZ):  # fmt: skip
            sock.sendall(request)
            answers.append(_read_one(sock))

    assert [head.split(" ")[1] for head, _ in answers] == ["404", "200", "200", "200", "404", "200"]
    assert json.loads(answers[0][1])["error"]["code"] == "route_not_found"
    assert json.loads(answers[1][1])["data"][0]["b64_json"]
    assert len(standin.received) == 2


def test_heads_longer_than_one_read_are_served_new_and_kept_alive(hardened: str) -> None:
    # Heads are read 8 KiB at a time (a read of 64 KiB took the body's start with it, copied
    # several times by the parser); a 20 KB head takes several reads, on a new connection (the
    # main loop) and right after an answer (the answering thread's linger).
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 4000) for n in range(5))
    long_head = HEALTHZ[:-2] + padding + b"\r\n"
    with _connect(_port(hardened)) as sock:
        sock.sendall(long_head)
        first = _read_one(sock)
        sock.sendall(long_head)
        second = _read_one(sock)

    assert first[0].startswith("HTTP/1.1 200 OK") and second[0].startswith("HTTP/1.1 200 OK")


# Heads that two servers in a row could read apart (request smuggling) or that are not HTTP/1.1.
_REFUSED_HEADS = {
    "Content-Length and chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "chunked twice": b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "a space before the colon": b"Content-Length : 5\r\n\r\nhello",
    "a folded line": b"X-A: a\r\n b\r\n\r\n",
    "a NUL in a value": b"X-A: a\x00b\r\n\r\n",
    "a bare CR in a value": b"X-A: a\rb\r\n\r\n",
    "a bare LF ending a line": b"X-A: a\nX-B: b\r\n\r\n",
    "a signed Content-Length": b"Content-Length: +5\r\n\r\nhello",
    "two Hosts": b"Host: elsewhere\r\n\r\n",
}


def test_ambiguous_heads_are_refused_with_400_and_reach_no_provider(hardened: str, standin: StandIn) -> None:
    # gunicorn's C parser (http_parser = "fast") refuses what its Python parser refuses.
    first_lines = {}
    for case, rest in _REFUSED_HEADS.items():
        with _connect(_port(hardened)) as sock:
            sock.sendall(b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\n" + rest)
            first_lines[case] = _read_answer(sock).split("\r\n")[0]

    assert first_lines == dict.fromkeys(_REFUSED_HEADS, "HTTP/1.1 400 Bad Request")
    assert standin.received == []


def test_a_head_begun_right_after_an_answer_and_never_finished_gets_the_header_timeout(hardened: str) -> None:
    with _connect(_port(hardened)) as sock:
        sock.sendall(HEALTHZ)
        _read_one(sock)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127")  # then nothing (slowloris on a kept-alive connection)
        began = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT + 10)
        answer = _read_answer(sock)

    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - began < HEADER_TIMEOUT + 2.5  # the header timeout, not keep-alive's 75 s


def test_answers_that_fill_the_socket_buffers_reach_a_slow_reader_whole(route: None, tmp_path: Path) -> None:
    # The worker writes what the socket takes at once and waits for the client for the rest
    # (TurnTakingSocket.sendall). 120 requests sent at once by a client that then reads nothing for
    # 3 s: their answers (15 MB) fill the socket's buffers and the worker's writes wait; then every
    # answer comes out whole.
    request = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with gunicorn(tmp_path, GUNICORN_BODY_TIMEOUT="30") as url:
        whole = requests.get(url + "/openapi.json", timeout=10).content
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no receive-window growth
        sock.settimeout(30)
        with sock:
            sock.connect(("127.0.0.1", _port(url)))
            sock.sendall(request * 120)
            time.sleep(3)
            stream = b""
            while stream.count(b"HTTP/1.1 200 OK\r\n") < 120 or not stream.endswith(whole):
                chunk = sock.recv(65536)
                assert chunk, len(stream)
                stream += chunk

    assert len(whole) > 100_000
    heads_and_bodies = stream.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [part.partition(b"\r\n\r\n")[2] for part in heads_and_bodies] == [whole] * 120


def test_a_client_slow_to_take_an_image_holds_no_cpu_turn(route: None, tmp_path: Path) -> None:
    # A stored image is sent from its file (sendfile). A client that takes none of it must not keep
    # the worker's CPU turn while the worker waits for it: every other request would wait for the
    # turn as long as a request can (2 s) before running without one.
    image = padded_png(16_000_000)
    (tmp_path / "media" / "images").mkdir(parents=True)
    (tmp_path / "media" / "images" / "big.png").write_bytes(image)
    token = signing.TimestampSigner(key=SERVER_SECRET_KEY, salt="gateway-image-url").sign("big.png")
    with gunicorn(tmp_path, GUNICORN_BODY_TIMEOUT="30") as url:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(30)
        with sock:
            sock.connect(("127.0.0.1", _port(url)))
            sock.sendall(f"GET /images/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            time.sleep(0.5)  # the image fills the socket's buffers; the worker waits for the client
            probes = []
            for _ in range(3):
                began = time.monotonic()
                healthz = requests.get(url + "/healthz", timeout=10)
                probes.append((healthz.status_code, round(time.monotonic() - began, 2)))
            head, body = _read_one(sock)

    assert all(status == 200 and seconds < 0.5 for status, seconds in probes), probes
    assert head.startswith("HTTP/1.1 200") and body == image


def test_a_deploy_lets_held_edits_finish_and_records_them(route: None, tmp_path: Path, standin: StandIn) -> None:
    # SIGTERM (a deploy, a scale-down) stops accepting but lets an edit the provider is working on
    # finish: the provider may already bill it, so it must reach its client and the ledger.
    standin.fail_always("slow", seconds=3)
    with gunicorn_process(tmp_path) as (url, server), ThreadPoolExecutor(1) as pool:
        edit = pool.submit(_edit, url, 30)
        deadline = time.monotonic() + 10
        while not standin.received and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        answer = edit.result()
        server.wait(timeout=30)

    assert answer.status_code == 200, answer.text[:300]
    assert list(UsageRecord.objects.values_list("status", flat=True)) == [200]
    # And by default it waits as long as an edit may last (a route's default deadline).
    printed = resolved_config(tmp_path)
    assert int(printed["graceful_timeout"]) * 1000 > DEFAULT_DEADLINE_MS, printed
