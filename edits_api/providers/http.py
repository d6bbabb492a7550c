"""The one HTTP seam to providers: pooled urllib3 connections, the entity's timeout as a whole-call deadline,
every failure turned into a GatewayError that names the provider and never the token, and the only
way to fetch an image URL a provider answered (allowed hosts, public addresses, one budget).

Three things the rest of the gateway relies on:
- a failure says whether the provider received the whole request (`GatewayError.outcome_unknown`):
  such a request may have been processed and billed, so it is never sent again (contract §3.6);
- nothing a provider wrote reaches an error unscrubbed: its token (in any case, percent-encoded or
  base64) is redacted from every field, and only known error codes pass (`KNOWN_UPSTREAM_CODES`);
- a provider's Retry-After is clamped to `MAX_RETRY_AFTER_S`.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import ipaddress
import json
import math
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from edits_api import turns
from edits_api.errors import GatewayError
from edits_api.providers.base import Connection, ImageItem, ImageResult
from edits_api.providers.formdata import FileRange, FormData

# Bounds on what we hold in memory from an upstream: a JSON answer may carry up to ten large
# base64 images; an error answer only its error fields.
MAX_JSON_BYTES = 512 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024
# Images fetched to inline them: each capped like an upload, and all of one answer together.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_FETCH_BYTES = 64 * 1024 * 1024
# The longest wait a provider's Retry-After may ask of the gateway or, passed on, of its client.
MAX_RETRY_AFTER_S = 60
# How much of a provider's error message an error keeps.
MAX_MESSAGE_CHARS = 1000
_READ_CHUNK = 256 * 1024
_SEND_BLOCK = 1024 * 1024
REDACTED = "[redacted]"

# Error codes a provider may answer that reach the client verbatim (matched lower-cased, after the
# aliases); any other code becomes "upstream_error" with the provider's text in the message, so
# the stored UsageRecord.error_code and idempotency answers only ever hold known codes.
KNOWN_UPSTREAM_CODES = frozenset(
    {
        # OpenAI, and the providers that speak its protocol (Cloud Temple, Azure OpenAI, xAI).
        "invalid_api_key",
        "invalid_value",
        "invalid_type",
        "missing_required_parameter",
        "unknown_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "invalid_image",
        "invalid_image_format",
        "image_too_large",
        "moderation_blocked",
        "rate_limit_exceeded",
        "insufficient_quota",
        "billing_hard_limit_reached",
        "model_not_found",
        "unsupported_country_region_territory",
        "server_error",
        # Gemini's google.rpc status names, lower-cased (INVALID_ARGUMENT -> invalid_argument).
        "invalid_argument",
        "failed_precondition",
        "out_of_range",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "aborted",
        "already_exists",
        "resource_exhausted",
        "cancelled",
        "data_loss",
        "unknown",
        "internal",
        "unavailable",
        "deadline_exceeded",
        "unimplemented",
    }
)
UPSTREAM_CODE_ALIASES = {
    "content_policy_violation": "moderation_blocked",  # DALL·E and Azure OpenAI's content filter
    "contentfilter": "moderation_blocked",  # Azure OpenAI image edits ("contentFilter")
    "content_filter": "moderation_blocked",
}
GENERIC_UPSTREAM_CODE = "upstream_error"
_KNOWN_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "server_error",
        "service_unavailable_error",
        "image_generation_user_error",
    }
)
# Request fields a provider's `param` may name (an image of several as image[0]).
_KNOWN_PARAM = re.compile(
    r"^(prompt|image|mask|model|n|size|quality|background|style|moderation|response_format|output_format"
    r"|output_compression|input_fidelity|user)(\[\d*\])?$"
)

# Hosts where a provider's image URLs live besides its API host; an entity adds its own with
# `config.connection.image_hosts`.
DEFAULT_IMAGE_HOSTS: dict[str, tuple[str, ...]] = {
    "openai": ("oaidalleapiprodscus.blob.core.windows.net",),  # DALL·E result URLs
    "azure-openai": ("*.blob.core.windows.net",),
    "x-ai": ("imgen.x.ai",),
    "luma": ("storage.cdn-luma.com",),
}

NO_CLIENT_RETRY = {"x-should-retry": "false"}


# -- connection pools ------------------------------------------------------------------------------
#
# urllib3 directly, not requests: requests' layer above it (sessions, cookie merging, hooks, body
# encoding) was a sixth of an edit's CPU. urllib3 reads no proxy from the environment and keeps no
# cookies, so nothing one upstream sets is replayed on another call.

_DEFAULT_HEADERS = {"User-Agent": "image-gateway", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}


@dataclass(frozen=True)
class Answer:
    """An upstream's answer, its body read in full."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class _NotPublicAddress(NewConnectionError):
    """An image host that resolves to (or connected on) an address image fetches may not reach."""


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


def _connect_public(conn: HTTPConnection) -> socket.socket:
    """Resolve the host, connect only to a public address among its answers, and check the address
    actually connected to, so neither a name resolving to 127.0.0.1 nor a rebinding DNS reaches the
    gateway's own network."""
    host = conn._dns_host.strip("[]")
    try:
        answers = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    last_error: OSError | None = None
    refused = False
    for family, kind, proto, _name, address in answers:
        if not _is_public(str(address[0])):
            refused = True
            continue
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if isinstance(conn.timeout, int | float):
                sock.settimeout(conn.timeout)
            sock.connect(address)
            peer = str(sock.getpeername()[0])
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.") from exc
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        if not _is_public(peer):
            sock.close()
            raise _NotPublicAddress(conn, f"{conn.host} connected to a non-public address")
        return sock
    if refused and last_error is None:
        raise _NotPublicAddress(conn, f"{conn.host} resolves to a private, loopback or link-local address")
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}")


class _HTTPConnection(HTTPConnection):
    """Sends a request body's file pieces itself (`_FilePiece.send_to`): with sendfile on a plain TCP
    connection, so a file on disk goes to the provider without passing through Python."""

    def send(self, data: Any) -> None:
        if isinstance(data, _FilePiece):
            data.send_to(self.sock)
        else:
            super().send(data)


class _HTTPSConnection(_HTTPConnection, HTTPSConnection):
    pass


class _PublicHTTPConnection(_HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _PublicHTTPSConnection(_HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


def _pool_manager(plain: type[HTTPConnectionPool], tls: type[HTTPSConnectionPool]) -> urllib3.PoolManager:
    # One kept-alive connection per thread that may be calling the same provider at once. Bodies
    # go out 1 MiB at a time: urllib3's 16 KiB blocks made a 50 MB edit spend 1.1 s in the
    # provider call instead of 0.35 s.
    manager = urllib3.PoolManager(
        num_pools=16, maxsize=settings.PROVIDER_POOL_SIZE, retries=False, blocksize=_SEND_BLOCK
    )
    manager.pool_classes_by_scheme = {"http": plain, "https": tls}
    return manager


_providers = _pool_manager(_HTTPPool, _HTTPSPool)
# Image URLs: public addresses only (the address connected to is checked), or any address for
# entities that opt in.
_fetch_public = _pool_manager(_PublicHTTPPool, _PublicHTTPSPool)
_fetch_any = _pool_manager(_HTTPPool, _HTTPSPool)


# -- request bodies --------------------------------------------------------------------------------


class _DeadlineExceeded(Exception):
    """Raised from inside a request body when the upload outlives the whole-call deadline."""


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _TrackedBody:
    """A request body that knows when it was sent in full and cannot outlive the deadline.

    urllib3 sends the chunks of an iterable body one by one, asking for the next only once the
    previous one was sent, so the iteration that finds the end means the provider has the whole
    request. Chunks are views of bytes and `_FilePiece`s (a file on disk, sent by the connection).
    """

    def __init__(self, body: Any, deadline: float) -> None:
        self._body = body
        self._deadline = deadline
        # bytes, a FormData or a stream that knows its length: providers get a Content-Length.
        self._length = len(body)
        self.sent = False

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[memoryview | bytes | _FilePiece]:
        for chunk in self._chunks():
            if time.monotonic() > self._deadline:
                raise _DeadlineExceeded
            yield chunk
        self.sent = True

    def _chunks(self) -> Iterator[memoryview | bytes | _FilePiece]:
        if isinstance(self._body, bytes):
            yield from _blocks(self._body)
        elif isinstance(self._body, FormData):
            for segment in self._body:
                if isinstance(segment, FileRange):
                    yield _FilePiece(segment, self._deadline)
                else:
                    yield from _blocks(segment)
        else:
            while chunk := self._body.read(_SEND_BLOCK):
                yield chunk


def _blocks(data: bytes) -> Iterator[memoryview]:
    """`data` in blocks, so the deadline is checked between them; views, not copies."""
    view = memoryview(data)
    for start in range(0, len(view), _SEND_BLOCK):
        yield view[start : start + _SEND_BLOCK]


class _FilePiece:
    """A file on disk in a request body, sent by the connection (`_HTTPConnection.send`), in blocks
    each bounded by what is left of the deadline."""

    def __init__(self, part: FileRange, deadline: float) -> None:
        self._part = part
        self._deadline = deadline

    def __len__(self) -> int:  # urllib3 skips a chunk that is empty
        return self._part.count

    def send_to(self, sock: socket.socket) -> None:
        file, offset, end = self._part.file, self._part.offset, self._part.offset + self._part.count
        if isinstance(sock, ssl.SSLSocket):
            # TLS is encrypted in this process: the file is read, into one reused buffer.
            buffer = memoryview(bytearray(min(_SEND_BLOCK, self._part.count)))
            while offset < end:
                read = os.preadv(file.fileno(), [buffer[: end - offset]], offset)
                if not read:
                    raise EOFError(f"a file part ended before its {self._part.count} bytes")
                self._bound(sock)
                sock.sendall(buffer[:read])
                offset += read
            return
        # A plain TCP socket: the kernel copies from the page cache to the socket.
        while offset < end:
            count = min(_SEND_BLOCK, end - offset)
            self._bound(sock)
            if sock.sendfile(file, offset, count) != count:
                raise EOFError(f"a file part ended before its {self._part.count} bytes")
            offset += count

    def _bound(self, sock: socket.socket) -> None:
        """The next block's socket timeout: what is left of the deadline."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded
        sock.settimeout(left)


# -- errors ----------------------------------------------------------------------------------------


def timeout_error(connection: Connection, *, outcome_unknown: bool = False, upload: bool = False) -> GatewayError:
    """`upload`: the provider stopped taking the request body before it was all sent."""
    what = "take the whole request" if upload else "answer"
    message = f"{connection.provider_name} did not {what} within {connection.timeout_s:g} s"
    if outcome_unknown:
        message += "; it had the whole request and may have processed it, so it was not sent again"
    return GatewayError(
        504, message + ".", type="upstream_error", code="upstream_timeout", outcome_unknown=outcome_unknown
    )


def connection_lost(connection: Connection) -> GatewayError:
    """The provider had the whole request, then closed the connection without a (complete) answer."""
    return GatewayError(
        502,
        f"{connection.provider_name} closed the connection before answering; it had the whole request "
        "and may have processed it, so it was not sent again.",
        type="upstream_error",
        code="upstream_error",
        outcome_unknown=True,
    )


def bad_response(connection: Connection, why: str) -> GatewayError:
    """A 2xx answer the gateway cannot use (not JSON, or not the protocol's shape): the provider
    may have billed it, so it is not sent again."""
    return GatewayError(
        502,
        f"{connection.provider_name} sent an unusable answer: {scrub(why, connection.token)}.",
        type="upstream_error",
        code="upstream_bad_response",
        outcome_unknown=True,
    )


# -- calls -----------------------------------------------------------------------------------------


def send(
    connection: Connection,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: Any = None,
    json_body: Any = None,
    deadline: float | None = None,
    max_bytes: int = MAX_JSON_BYTES,
    upstream_errors_pass_through: bool = True,
) -> Answer:
    """Make one call within ``connection.timeout_s`` and return the 2xx answer, body read.

    ``data`` is bytes, a FormData, or a stream with ``read`` and ``len()``; it goes with a
    Content-Length.
    ``deadline`` (time.monotonic()) lets several calls share one budget.
    With ``upstream_errors_pass_through`` an upstream 4xx keeps its status; otherwise it is a 502.
    """
    if deadline is None:
        deadline = time.monotonic() + connection.timeout_s
    try:
        with turns.waiting_long():  # the provider works: other requests run meanwhile
            response = _exchange(
                _providers,
                connection,
                method,
                url,
                headers=headers,
                data=data,
                json_body=json_body,
                deadline=deadline,
                max_bytes=max_bytes,
            )
    except _TooLarge as exc:
        raise bad_response(connection, f"answer larger than {exc.limit} bytes") from None
    if not 200 <= response.status_code < 300:
        raise _status_error(connection, response, pass_through_4xx=upstream_errors_pass_through)
    return response


def send_json(
    connection: Connection,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: Any = None,
    json_body: Any = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """`send`, then the answer as a JSON object (anything else is upstream_bad_response)."""
    response = send(connection, method, url, headers=headers, data=data, json_body=json_body, deadline=deadline)
    try:
        payload = response.json()
    except ValueError:
        raise bad_response(connection, "not JSON") from None
    if not isinstance(payload, dict):
        raise bad_response(connection, "not a JSON object")
    return payload


def _exchange(
    pool: urllib3.PoolManager,
    connection: Connection,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: Any = None,
    json_body: Any = None,
    deadline: float,
    max_bytes: int,
    read_error_body: bool = True,
) -> Answer:
    """One request and its answer (any status), body read within the deadline and `max_bytes`.

    Transport failures become a GatewayError; one that came after the provider had the whole
    request is `outcome_unknown` (a timeout waiting for the answer, a connection lost mid-answer).
    """
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise timeout_error(connection)
    if json_body is not None:
        data = json.dumps(json_body, allow_nan=False).encode()
        headers = {"Content-Type": "application/json", **headers}
    if isinstance(data, str):
        data = data.encode()
    body = _TrackedBody(data, deadline) if data is not None else None
    headers = {**_DEFAULT_HEADERS, **headers}
    if body is not None:
        headers["Content-Length"] = str(len(body))
    answered_ok = False
    # `total` makes urllib3 count the upload and the wait for headers against one budget.
    timeout = urllib3.Timeout(connect=budget, read=budget, total=budget)
    try:
        _check_url(url)
        response = pool.urlopen(
            method,
            url,
            body=body,
            headers=headers,
            timeout=timeout,
            preload_content=False,
            redirect=False,  # a redirect would replay the credentials to another URL
            retries=False,
        )
        ok = 200 <= response.status < 300
        answered_ok = ok
        if not ok and not read_error_body:
            _discard(response)
            return Answer(response.status, response.headers, b"")
        try:
            content = _read_body(response, deadline, max_bytes if ok else min(max_bytes, MAX_ERROR_BYTES))
        except BaseException:
            _discard(response)  # a half-read connection cannot go back to the pool
            raise
    except (ReadTimeoutError, _DeadlineExceeded) as exc:
        raise _timed_out(connection, body, answered_ok or _was_sent(body, exc)) from exc
    except ConnectTimeoutError as exc:
        if isinstance(exc, NewConnectionError):  # urllib3's subclass for a refused connection
            raise _unreachable(connection, exc) from exc
        raise timeout_error(connection) from exc
    except DecodeError as exc:
        raise bad_response(connection, "its content encoding does not decode") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if answered_ok or _was_sent(body, exc):
            raise connection_lost(connection) from exc
        if body is not None and any(isinstance(cause, TimeoutError) for cause in _causes(exc)):
            # A send that timed out (urllib3 wraps it as "Connection aborted"): the provider was
            # reached but stopped reading, which is slowness (504), not a refused connection.
            raise _timed_out(connection, body, False) from exc
        raise _unreachable(connection, exc) from exc
    response.release_conn()  # read to the end: the connection goes back to the pool for reuse
    return Answer(response.status, response.headers, content)


def _timed_out(connection: Connection, body: _TrackedBody | None, sent: bool) -> GatewayError:
    """The deadline passed: after the whole request (the outcome is unknown), or while sending it."""
    if sent:
        return timeout_error(connection, outcome_unknown=True)
    return timeout_error(connection, upload=body is not None)


def _check_url(url: str) -> None:
    """Only absolute http(s) URLs (urllib3 would take a bare host name as http)."""
    parsed = parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LocationValueError(f"not an absolute http(s) URL: {parsed.scheme or 'no'} scheme")


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    response.close()
    response.release_conn()


def _was_sent(body: _TrackedBody | None, exc: BaseException) -> bool:
    """Whether the provider got the whole request before `exc`: the body was read to its end, or,
    with no body, the connection was made (the failure is not one of connecting)."""
    if body is not None:
        return body.sent
    connecting = (NewConnectionError, ConnectTimeoutError, SSLError, LocationValueError)
    return not any(isinstance(cause, connecting) for cause in _causes(exc))


def _read_body(response: urllib3.BaseHTTPResponse, deadline: float, max_bytes: int) -> bytes:
    """Read the body as it arrives, each wait bounded by what is left of the deadline, so a
    trickling upstream is cut off on time (a socket timeout alone bounds each read, not the sum)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge(max_bytes)
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlineExceeded
        # urllib3 resets the socket timeout before the connection's next request.
        sock = getattr(response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(_READ_CHUNK, decode_content=True)
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > max_bytes:
            raise _TooLarge(max_bytes)


def _failure_reason(exc: Exception) -> str:
    """The kind of transport failure, in a few words (urllib3's messages carry pool internals)."""
    for cause in _causes(exc):
        if isinstance(cause, _NotPublicAddress):  # before its base class NewConnectionError
            return "its address is private, loopback or link-local"
        if isinstance(cause, NameResolutionError):  # before its base class NewConnectionError
            return "its host name did not resolve"
        if isinstance(cause, NewConnectionError):
            return "the connection was refused"
        if isinstance(cause, LocationValueError):
            return "its URL is not a valid http(s) URL"
        if isinstance(cause, SSLError):
            return "the TLS handshake failed"
        if isinstance(cause, ProtocolError):
            return "the connection was closed unexpectedly"
    return "connection failed"


def _unreachable(connection: Connection, exc: Exception) -> GatewayError:
    return GatewayError(
        502,
        f"{connection.provider_name} could not be reached: {_failure_reason(exc)}.",
        type="upstream_error",
        code="upstream_unreachable",
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: urllib3 keeps the cause in `.reason` or args[1]."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
        elif any(isinstance(arg, BaseException) for arg in current.args):
            current = next(arg for arg in current.args if isinstance(arg, BaseException))
        else:
            current = current.__cause__ or current.__context__
    return chain


# -- an upstream's error answer --------------------------------------------------------------------


def _status_error(connection: Connection, response: Answer, *, pass_through_4xx: bool) -> GatewayError:
    """An upstream non-2xx answer as the client's error, every field from the provider scrubbed.

    A 4xx keeps its status, a known type, param and code (an unknown code becomes the generic one,
    named in the message); 401/403 (the provider refused the gateway's own credentials) and 5xx
    are 502s.
    """
    status = response.status_code
    token = connection.token
    upstream = _upstream_error_fields(response)
    message = clip(scrub(upstream.get("message") or f"HTTP {status}", token))
    code = known_code(upstream.get("code"))
    if upstream.get("code") and code is None:
        message += f" (provider code: {_word(scrub(upstream['code'], token))})"
    headers = _retry_after(response, upstream)
    name = connection.provider_name
    if status in (401, 403):
        return GatewayError(
            502,
            f"{name} refused the gateway's credentials (HTTP {status}): {message}",
            type="upstream_error",
            code="upstream_auth_error",
        )
    if 400 <= status < 500 and pass_through_4xx:
        upstream_type = upstream.get("type")
        param = upstream.get("param")
        return GatewayError(
            status,
            f"{name}: {message}",
            type=upstream_type
            if upstream_type in _KNOWN_TYPES
            else ("rate_limit_error" if status == 429 else "invalid_request_error"),
            param=param if isinstance(param, str) and _KNOWN_PARAM.match(param) else None,
            code=code if code or not upstream.get("code") else GENERIC_UPSTREAM_CODE,
            headers=headers,
        )
    return GatewayError(
        502,
        f"{name} answered HTTP {status}: {message}",
        type="upstream_error",
        code="upstream_error",
        headers=headers,
    )


def known_code(raw: Any) -> str | None:
    """A provider's error code as the gateway passes it on, or None when it is not a known one."""
    if not isinstance(raw, str):
        return None
    code = raw.strip().lower()
    code = UPSTREAM_CODE_ALIASES.get(code, code)
    return code if code in KNOWN_UPSTREAM_CODES else None


def _upstream_error_fields(response: Answer) -> dict[str, Any]:
    """message/type/param/code from OpenAI's and Gemini's error shapes (empty when neither); raw."""
    try:
        payload = response.json()
    except ValueError:
        return {}
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return {}
    fields: dict[str, Any] = {
        key: error[key] for key in ("message", "type", "param") if isinstance(error.get(key), str)
    }
    if isinstance(error.get("code"), str):  # OpenAI; Gemini's `code` is the HTTP status number
        fields["code"] = error["code"]
    elif isinstance(error.get("status"), str):  # Gemini: "INVALID_ARGUMENT" -> "invalid_argument"
        fields["code"] = error["status"]
    if isinstance(error.get("details"), list):
        fields["details"] = error["details"]
    return fields


def _retry_after(response: Answer, upstream: dict[str, Any]) -> dict[str, str]:
    """Retry-After for 429/503, clamped: from the header (seconds or a date), retry-after-ms, or
    Gemini's RetryInfo.retryDelay ("41s")."""
    if response.status_code not in (429, 503):
        return {}
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    if seconds is None:
        milliseconds = response.headers.get("retry-after-ms", "")
        seconds = retry_after_seconds(_divided(milliseconds, 1000))
    if seconds is None:
        for detail in upstream.get("details") or []:
            delay = detail.get("retryDelay") if isinstance(detail, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                seconds = retry_after_seconds(delay[:-1])
                break
    return {} if seconds is None else {"Retry-After": str(seconds)}


def _divided(value: str, divisor: int) -> str | None:
    try:
        return str(float(value) / divisor)
    except ValueError:
        return None


def retry_after_seconds(value: str | None) -> int | None:
    """A Retry-After value (seconds or an HTTP date) as whole seconds within 0..MAX_RETRY_AFTER_S;
    None when it is missing or unreadable. A provider once asked for 1e9 seconds."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value.strip()).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    if math.isinf(seconds) or seconds > MAX_RETRY_AFTER_S:
        return MAX_RETRY_AFTER_S
    return max(0, math.ceil(seconds))


# -- scrubbing what a provider wrote ---------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _secret_pattern(token: str) -> re.Pattern[str] | None:
    """Every spelling of the token a provider might echo: itself in any case, percent-encoded, and
    base64 (standard and URL-safe) of it and its case variants at each of the three alignments it
    can have inside a longer encoded text (e.g. a Basic or Bearer header echoed encoded)."""
    if not token:
        return None
    literal = sorted({re.escape(token), re.escape(quote(token, safe=""))}, key=len, reverse=True)
    encoded: set[str] = set()
    for variant in {token, token.lower(), token.upper(), token.swapcase()}:
        raw = variant.encode()
        for shift in range(3):
            text = base64.b64encode(b"\0" * shift + raw).decode()
            # Drop the characters that also depend on the bytes around the token.
            core = text[(0, 2, 3)[shift] : 4 * ((shift + len(raw)) // 3)]
            if len(core) >= 8:
                encoded.update({core, core.translate(str.maketrans("+/", "-_"))})
    # Around a core, up to 3 characters that encode bits of the token too (and padding) go with it.
    cores = "|".join(re.escape(e) for e in sorted(encoded, key=len, reverse=True))
    return re.compile(f"(?i:{'|'.join(literal)})|[A-Za-z0-9+/_-]{{0,3}}(?:{cores})[A-Za-z0-9+/_-]{{0,3}}={{0,2}}")


def scrub(text: str, token: str) -> str:
    """`text` with the token redacted in every spelling `_secret_pattern` knows."""
    pattern = _secret_pattern(token)
    return pattern.sub(REDACTED, text) if pattern is not None else text


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A provider's text, one line, without control characters, at most `limit` characters."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _word(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:\[\]-]", "", text)[:64] or "?"


def scrub_error(error: GatewayError, token: str) -> GatewayError:
    """The error with the token redacted from every field a client or a log could see."""
    error.message = scrub(error.message, token)
    error.type = scrub(error.type, token)
    error.param = scrub(error.param, token) if error.param is not None else None
    error.code = scrub(error.code, token) if error.code is not None else None
    error.headers = {name: scrub(value, token) for name, value in error.headers.items()}
    return error


def scrub_result(connection: Connection, result: ImageResult) -> ImageResult:
    """A successful answer with the token redacted from its text fields; an image URL holding the
    token is refused (it cannot be handed to a client, nor altered and still work)."""
    token = connection.token
    if _secret_pattern(token) is None:
        return result
    items = []
    for item in result.items:
        if item.url is not None and scrub(item.url, token) != item.url:
            raise bad_response(connection, "an image URL holds the gateway's credential")
        revised = scrub(item.revised_prompt, token) if item.revised_prompt is not None else None
        items.append(item if revised == item.revised_prompt else replace(item, revised_prompt=revised))
    return replace(
        result,
        items=items,
        usage=_scrub_json(result.usage, token),
        background=_scrub_json(result.background, token),
        output_format=_scrub_json(result.output_format, token),
        quality=_scrub_json(result.quality, token),
        size=_scrub_json(result.size, token),
    )


def _scrub_json(value: Any, token: str) -> Any:
    if isinstance(value, str):
        return scrub(value, token)
    if isinstance(value, dict):
        return {scrub(str(k), token): _scrub_json(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_json(v, token) for v in value]
    return value


# -- fetching image URLs a provider answered -------------------------------------------------------

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def fetch_images(connection: Connection, urls: list[str]) -> list[tuple[bytes, str]]:
    """Download the image URLs of one provider answer, to inline them; returns (bytes, content type).

    Only from the provider's own host, its known image hosts and the entity's `image_hosts`; only
    to public addresses unless the entity allows its private network (checked on the address
    connected to); within one deadline (the entity's timeout) and one byte budget
    (MAX_FETCH_BYTES) for all of them. No credentials are sent (such URLs are pre-signed), no
    redirect is followed, and no fetched body ever goes into an error. The provider was paid by
    now, so every failure tells the client not to retry.
    """
    deadline = time.monotonic() + connection.timeout_s
    left = MAX_FETCH_BYTES
    pool = _fetch_any if connection.allow_private_network else _fetch_public
    images = []
    for number, url in enumerate(urls, 1):
        where = f"image {number} of {len(urls)}" if len(urls) > 1 else "the image"
        _check_image_url(connection, url, where)
        try:
            with turns.waiting_long():
                response = _exchange(
                    pool,
                    connection,
                    "GET",
                    url,
                    headers={"Accept": "image/*"},
                    deadline=deadline,
                    max_bytes=min(MAX_IMAGE_BYTES, left),
                    read_error_body=False,
                )
        except _TooLarge:
            raise _fetch_error(
                connection,
                f"{where} would take the answer's images past {MAX_FETCH_BYTES // 2**20} MB"
                if left < MAX_IMAGE_BYTES
                else f"{where} is larger than {MAX_IMAGE_BYTES // 2**20} MB",
            ) from None
        except GatewayError as error:
            raise _fetch_transport_error(connection, error, where) from error.__cause__
        if not 200 <= response.status_code < 300:
            raise _fetch_error(connection, f"the host of {where} answered HTTP {response.status_code}")
        content_type = _image_type(response.content)
        if content_type is None:
            raise _fetch_error(connection, f"{where} is not a PNG, JPEG, WebP or GIF image")
        left -= len(response.content)
        images.append((response.content, content_type))
    return images


def fetch_image(connection: Connection, url: str) -> tuple[bytes, str]:
    """One image URL, as `fetch_images`."""
    return fetch_images(connection, [url])[0]


def inline_urls(connection: Connection, items: list[ImageItem]) -> list[ImageItem]:
    """The items with every URL-only image fetched into b64_json (one budget for all)."""
    wanted = [index for index, item in enumerate(items) if item.b64_json is None and item.url]
    fetched = fetch_images(connection, [items[index].url or "" for index in wanted])
    inlined = list(items)
    for index, (content, content_type) in zip(wanted, fetched, strict=True):
        inlined[index] = replace(
            items[index], url=None, b64_json=base64.b64encode(content).decode(), content_type=content_type
        )
    return inlined


def _check_image_url(connection: Connection, url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise _fetch_error(connection, f"{where} has a malformed URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _fetch_error(connection, f"{where} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise _fetch_error(connection, f"{where} has credentials in its URL")
    if not _image_host_allowed(connection, host):
        raise _fetch_error(
            connection,
            f"{where} is on {clip(host, 100)}, which is neither {connection.provider_name}'s own host nor "
            "listed in the image model's image_hosts",
        )


def _image_host_allowed(connection: Connection, host: str) -> bool:
    own = (urlsplit(connection.base_url).hostname or "").rstrip(".").lower()
    for pattern in (own, *DEFAULT_IMAGE_HOSTS.get(connection.provider, ()), *connection.image_hosts):
        pattern = pattern.strip().rstrip(".").lower()
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if pattern and host == pattern:
            return True
    return False


def _image_type(content: bytes) -> str | None:
    """The image type by the bytes' own signature (a server's Content-Type is not evidence)."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    for signature, content_type in _SIGNATURES:
        if content.startswith(signature):
            return content_type
    return None


def _fetch_error(connection: Connection, why: str) -> GatewayError:
    why = scrub(why, connection.token)
    return GatewayError(
        502,
        f"{connection.provider_name} answered with an image URL the gateway will not use: {why}.",
        type="upstream_error",
        code="upstream_bad_response",
        headers=dict(NO_CLIENT_RETRY),
        outcome_unknown=True,  # the provider was paid for these images
    )


def _fetch_transport_error(connection: Connection, error: GatewayError, where: str) -> GatewayError:
    """A transport failure while fetching, worded for the fetch (the provider itself answered)."""
    if error.code == "upstream_timeout":
        return GatewayError(
            504,
            f"The images {connection.provider_name} answered did not download within "
            f"{connection.timeout_s:g} s (at {where}).",
            type="upstream_error",
            code="upstream_timeout",
            headers=dict(NO_CLIENT_RETRY),
            outcome_unknown=True,
        )
    cause = error.__cause__
    if error.code != "upstream_unreachable":
        reason = "the connection was closed before the image arrived"
    elif isinstance(cause, Exception):
        reason = _failure_reason(cause)
    else:
        reason = "connection failed"
    if isinstance(cause, Exception) and any(isinstance(c, _NotPublicAddress) for c in _causes(cause)):
        reason += " (allow_private_network on the image model permits it)"
    return _fetch_error(connection, f"{where} could not be downloaded: {reason}")
