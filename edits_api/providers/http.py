"""The one HTTP seam to providers: a pooled session, the entity's timeout as a whole-call deadline,
and every failure turned into a GatewayError that names the provider and never the token."""

from __future__ import annotations

import http.cookiejar
import math
import time
from typing import Any

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError, ReadTimeoutError

from edits_api.errors import GatewayError
from edits_api.providers.base import Connection

# Bounds on what we hold in memory from an upstream: a JSON answer may carry up to ten large
# base64 images; an image fetched for inlining is capped like an upload.
MAX_JSON_BYTES = 512 * 1024 * 1024
MAX_IMAGE_BYTES = 50 * 1024 * 1024
_READ_CHUNK = 256 * 1024

_session = requests.Session()
_session.trust_env = False  # proxies/netrc from the environment must not reroute provider calls
# The session is shared by every provider and client: cookies set by one upstream must never be
# replayed on another call.
_session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
_session.headers["User-Agent"] = "image-gateway"
# One kept-alive connection per thread that may be calling the same provider at once.
_pooled = HTTPAdapter(pool_connections=16, pool_maxsize=settings.PROVIDER_POOL_SIZE, max_retries=0)
_session.mount("http://", _pooled)
_session.mount("https://", _pooled)


class _DeadlineExceeded(Exception):
    """Raised from inside a request body when the upload outlives the whole-call deadline."""


class _DeadlineBody:
    """Wraps a file-like request body so a slow upload cannot outlive the deadline.

    requests takes the Content-Length from ``__len__``; urllib3 pulls the body through ``read``.
    """

    def __init__(self, body: Any, deadline: float) -> None:
        self._body = body
        self._deadline = deadline
        self._length = requests.utils.super_len(body)

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise _DeadlineExceeded
        chunk = self._body.read(size)
        return chunk.encode() if isinstance(chunk, str) else chunk


def timeout_error(connection: Connection) -> GatewayError:
    return GatewayError(
        504,
        f"{connection.provider_name} did not answer within {connection.timeout_s:g} s.",
        type="upstream_error",
        code="upstream_timeout",
    )


def bad_response(connection: Connection, why: str) -> GatewayError:
    """A 2xx answer the gateway cannot use (not JSON, or not the protocol's shape)."""
    return GatewayError(
        502,
        f"{connection.provider_name} sent an unusable answer: {why}.",
        type="upstream_error",
        code="upstream_bad_response",
    )


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
) -> requests.Response:
    """Make one call within ``connection.timeout_s`` and return the 2xx response, body read.

    ``data`` is bytes or a file-like object with a known length (streamed with Content-Length).
    ``deadline`` (time.monotonic()) lets several calls share one budget.
    With ``upstream_errors_pass_through`` an upstream 4xx keeps its status; otherwise it is a 502.
    """
    if deadline is None:
        deadline = time.monotonic() + connection.timeout_s
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise timeout_error(connection)
    if data is not None and hasattr(data, "read"):
        data = _DeadlineBody(data, deadline)
    # `total` makes urllib3 count the upload and the wait for headers against one budget;
    # requests hands a urllib3 Timeout through as is (its stubs only know floats).
    timeout: Any = urllib3.Timeout(connect=budget, read=budget, total=budget)
    try:
        response = _session.request(
            method,
            url,
            headers=headers,
            data=data,
            json=json_body,
            timeout=timeout,
            stream=True,
            allow_redirects=False,  # a redirect would replay the credentials to another URL
        )
        try:
            body = _read_body(connection, response, deadline, max_bytes)
        except BaseException:
            response.close()  # a half-read connection cannot go back to the pool
            raise
    except (requests.Timeout, ReadTimeoutError, _DeadlineExceeded) as exc:
        raise timeout_error(connection) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise bad_response(connection, "its content encoding does not decode") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _unreachable(connection, exc) from exc
    response._content = body
    response.raw.release_conn()  # read to the end: the connection goes back to the pool for reuse
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


def fetch_image(connection: Connection, url: str) -> tuple[bytes, str]:
    """Download an image URL a provider answered with, to inline it; returns (bytes, content type).

    No credentials are sent: such URLs are pre-signed and often on another host than the API.
    """
    response = send(
        connection,
        "GET",
        url,
        headers={"Accept": "image/*"},
        max_bytes=MAX_IMAGE_BYTES,
        upstream_errors_pass_through=False,
    )
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise bad_response(connection, f"the image URL served {content_type or 'no content type'}")
    return response.content, content_type


def _read_body(connection: Connection, response: requests.Response, deadline: float, max_bytes: int) -> bytes:
    """Read the body as it arrives, each wait bounded by what is left of the deadline, so a
    trickling upstream is cut off on time (a socket timeout alone bounds each read, not the sum)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise bad_response(connection, f"answer larger than {max_bytes} bytes")
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlineExceeded
        # urllib3 resets the socket timeout before the connection's next request.
        sock = getattr(response.raw.connection, "sock", None)
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.raw.read1(_READ_CHUNK, decode_content=True)
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > max_bytes:
            raise bad_response(connection, f"answer larger than {max_bytes} bytes")


def _unreachable(connection: Connection, exc: Exception) -> GatewayError:
    # Name the kind of failure only: urllib3's messages are long and carry pool internals.
    reason = "connection failed"
    for cause in _causes(exc):
        if isinstance(cause, NameResolutionError):  # before its base class NewConnectionError
            reason = "its host name did not resolve"
        elif isinstance(cause, NewConnectionError):
            reason = "the connection was refused"
        elif isinstance(
            cause,
            (
                requests.exceptions.InvalidURL,
                requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema,
            ),
        ):
            reason = "its URL is not a valid http(s) URL"
        elif isinstance(cause, requests.exceptions.SSLError):
            reason = "the TLS handshake failed"
        elif isinstance(cause, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
            reason = "the connection was closed unexpectedly"
        else:
            continue
        break
    return GatewayError(
        502,
        f"{connection.provider_name} could not be reached: {reason}.",
        type="upstream_error",
        code="upstream_unreachable",
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: urllib3 keeps the cause in `.reason`, requests in args[0]."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            current = current.__cause__ or current.__context__
    return chain


def _status_error(connection: Connection, response: requests.Response, *, pass_through_4xx: bool) -> GatewayError:
    """An upstream non-2xx answer as the client's error: 4xx keeps status/type/code, 5xx is a 502."""
    status = response.status_code
    upstream = _upstream_error_fields(response)
    message = _scrub(upstream.get("message") or f"HTTP {status}", connection.token)
    headers = _retry_after(response, upstream)
    if 400 <= status < 500 and pass_through_4xx:
        return GatewayError(
            status,
            f"{connection.provider_name}: {message}",
            type=upstream.get("type") or ("rate_limit_error" if status == 429 else "invalid_request_error"),
            param=upstream.get("param"),
            code=upstream.get("code"),
            headers=headers,
        )
    return GatewayError(
        502,
        f"{connection.provider_name} answered HTTP {status}: {message}",
        type="upstream_error",
        code="upstream_error",
        headers=headers,
    )


def _upstream_error_fields(response: requests.Response) -> dict[str, Any]:
    """message/type/param/code from OpenAI's and Gemini's error shapes (empty when neither)."""
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
        fields["code"] = error["status"].lower()
    if isinstance(error.get("details"), list):
        fields["details"] = error["details"]
    return fields


def _retry_after(response: requests.Response, upstream: dict[str, Any]) -> dict[str, str]:
    """Retry-After for 429/503, from the header or Gemini's RetryInfo.retryDelay ("41s")."""
    if response.status_code not in (429, 503):
        return {}
    value = response.headers.get("Retry-After")
    if value:
        return {"Retry-After": value}
    for detail in upstream.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return {"Retry-After": str(math.ceil(float(delay[:-1])))}
            except ValueError:
                break
    return {}


def _scrub(message: str, token: str) -> str:
    # Some upstreams echo the credential they rejected; it must never reach a client.
    return message.replace(token, "[redacted]") if token else message
