"""Provider answers' heads, as a real server on 127.0.0.1 writes them byte for byte: the gateway's
HTTP client parses them without the email package (providers/http.py `_Response`), so each quirk
of a head that http.client's own parser accepts is checked here against that parser."""

from __future__ import annotations

import http.client as stdlib_http
import io
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from edits_api.errors import GatewayError
from edits_api.providers import http
from edits_api.providers.base import Connection

BODY = b'{"data": [{"b64_json": "aGk="}]}'


class ScriptedUpstream:
    """Answers every request it reads (head and Content-Length body) with the next scripted bytes,
    keeping the connection open unless the script runs out; counts connections."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while self.answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                reader.read(length)
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def upstream() -> Iterator[list[ScriptedUpstream]]:
    made: list[ScriptedUpstream] = []
    yield made
    for server in made:
        server.close()


def call(server: ScriptedUpstream) -> http.Answer:
    connection = Connection("openai", "OpenAI", f"http://127.0.0.1:{server.port}/v1", "sk-test", 5.0)
    return http.send(connection, "POST", connection.base_url + "/images/edits", headers={}, data=b"{}")


def answer(*fields: bytes, body: bytes = BODY, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


LENGTH = b"Content-Length: %d" % len(BODY)

# Heads http.client's own parser reads too: the gateway's must read the same fields and values.
HEADS = [
    pytest.param([b"Content-Type: application/json", LENGTH], id="plain"),
    pytest.param([b"content-LENGTH: %d" % len(BODY), b"X-Request-Id: req_1"], id="name-case"),
    pytest.param([LENGTH, b"Set-Thing: a", b"set-thing: b", b"Set-Thing:c"], id="repeated-field"),
    pytest.param([b"Content-Length:   %d   " % len(BODY), b"X-Empty:", b"X-Tab:\tv\t"], id="spaces-and-tabs"),
    pytest.param([LENGTH, b"X-Latin: caf\xe9", b"X-Colons: a:b:c"], id="latin-1-and-colons"),
    pytest.param([LENGTH] + [b"X-Field-%d: %d" % (i, i) for i in range(98)], id="99-fields"),
]


@pytest.mark.parametrize("fields", HEADS)
def test_heads_are_read_as_http_client_reads_them(upstream: list[ScriptedUpstream], fields: list[bytes]) -> None:
    server = ScriptedUpstream([answer(*fields)])
    upstream.append(server)
    got = call(server)
    expected = stdlib_http.parse_headers(io.BytesIO(b"".join(f + b"\r\n" for f in fields) + b"\r\n"))
    assert [(k, v.strip(" \t")) for k, v in expected.items()] == got.headers.items()
    assert got.headers.get("CONTENT-length") == expected.get("content-length").strip()
    assert got.headers.get_all("set-thing") == expected.get_all("Set-Thing")
    assert got.status_code == 200 and json.loads(got.content) == json.loads(BODY)


def test_a_folded_field_is_one_value_and_the_fields_after_it_count(upstream: list[ScriptedUpstream]) -> None:
    server = ScriptedUpstream([answer(b"X-Note: first", b"  second", b"\tthird", LENGTH, b"Retry-After: 7")])
    upstream.append(server)
    got = call(server)
    assert got.headers["x-note"] == "first second third"
    assert got.headers["retry-after"] == "7" and got.content == BODY


def test_a_line_that_is_no_field_is_skipped(upstream: list[ScriptedUpstream]) -> None:
    server = ScriptedUpstream([answer(b"this is not a field", b"Bad Name: x", LENGTH, b"X-After: yes")])
    upstream.append(server)
    got = call(server)
    assert got.headers.items() == [("Content-Length", str(len(BODY))), ("X-After", "yes")]
    assert got.content == BODY


def test_a_100_continue_before_the_answer_is_skipped(upstream: list[ScriptedUpstream]) -> None:
    server = ScriptedUpstream([b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + answer(LENGTH, b"X-Final: 1")])
    upstream.append(server)
    got = call(server)
    assert (got.status_code, got.content, got.headers.get("x-interim"), got.headers["x-final"]) == (
        200,
        BODY,
        None,
        "1",
    )


def test_chunked_and_close_delimited_bodies_are_read_whole(upstream: list[ScriptedUpstream]) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    first = ScriptedUpstream([answer(b"Transfer-Encoding: Chunked", LENGTH, body=chunked)])
    second = ScriptedUpstream([answer(b"Connection: close", body=BODY)])  # no length: until closed
    upstream += [first, second]
    assert call(first).content == BODY
    assert call(second).content == BODY


def test_a_kept_alive_connection_is_reused_after_a_parsed_head(upstream: list[ScriptedUpstream]) -> None:
    server = ScriptedUpstream([answer(LENGTH, b"X-N: 1"), answer(LENGTH, b"X-N: 2")])
    upstream.append(server)
    assert [call(server).headers["x-n"] for _ in range(2)] == ["1", "2"]
    assert server.connections == 1


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([LENGTH] + [b"X-F%d: v" % i for i in range(99)], id="100-fields"),
        pytest.param([LENGTH, b"X-Long: " + b"a" * 70_000], id="70-KB-line"),
    ],
)
def test_heads_past_http_clients_limits_are_a_502_naming_the_provider(
    upstream: list[ScriptedUpstream], fields: list[bytes]
) -> None:
    server = ScriptedUpstream([answer(*fields)])
    upstream.append(server)
    with pytest.raises(GatewayError) as failed:
        call(server)
    assert failed.value.status == 502 and "OpenAI" in failed.value.message
