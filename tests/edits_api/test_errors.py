"""Every answer of the gateway is the OpenAI error envelope, whoever raised the error.

Over real HTTP to the live server: validation errors raised inside DRF views (Django's and DRF's,
nested or not) become a 400 naming the field as `param`; Django's own 400 (an invalid Host
header), 403 and CSRF failures are the envelope too, not Django's HTML pages.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.core.exceptions import PermissionDenied, SuspiciousOperation, ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_project import urls as gateway_urls


class _Connection(serializers.Serializer):
    token = serializers.CharField(max_length=4)


class _Config(serializers.Serializer):
    connection = _Connection()


class _Entity(serializers.Serializer):
    prompt = serializers.CharField()
    n = serializers.IntegerField(min_value=1, max_value=10, required=False)
    config = _Config(required=False)


class Raises(APIView):
    """POST a JSON body; `?what=` picks the error to raise."""

    def post(self, request: Request) -> Response:
        what = request.query_params.get("what")
        if what == "django-field":
            raise ValidationError({"size": ["size must be one of 256x256, 512x512."]})
        if what == "django-plain":
            raise ValidationError("Nothing here is valid.")
        if what == "django-list":
            raise ValidationError(["First problem.", "Second problem."])
        if what == "latin1":
            "sk-€".encode("latin-1")
        serializer = _Entity(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response({"ok": True})


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def suspicious(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("the request looks forged")


urlpatterns = [
    path("test-errors/raise", Raises.as_view()),
    path("test-errors/forbidden", forbidden),
    path("test-errors/suspicious", suspicious),
    *gateway_urls.urlpatterns,
]
handler400 = gateway_urls.handler400
handler403 = gateway_urls.handler403
handler404 = gateway_urls.handler404
handler500 = gateway_urls.handler500

pytestmark = pytest.mark.urls(__name__)


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    assert "ErrorDetail" not in response.text
    body = response.json()
    assert set(body) >= {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("what", "body", "param", "code", "message"),
    [
        ("django-field", {}, "size", "invalid_value", "size must be one of 256x256, 512x512."),
        ("django-plain", {}, None, "invalid_value", "Nothing here is valid."),
        ("django-list", {}, None, "invalid_value", "First problem."),
        ("drf", {}, "prompt", "missing_required_parameter", "This field is required."),
        ("drf", {"prompt": "x", "n": 11}, "n", "invalid_value", "Ensure this value is less than or equal to 10."),
        (
            "drf",
            {"prompt": "x", "config": {"connection": {"token": "too-long"}}},
            "config.connection.token",
            "invalid_value",
            "Ensure this field has no more than 4 characters.",
        ),
    ],
)
def test_validation_errors_raised_in_a_drf_view_are_a_400_naming_the_field(
    live_server: Any, what: str, body: dict[str, Any], param: str | None, code: str, message: str
) -> None:
    response = requests.post(f"{live_server.url}/test-errors/raise?what={what}", json=body, timeout=10)

    assert response.status_code == 400
    assert error_of(response) == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


def test_a_value_http_cannot_carry_is_a_502_upstream_misconfigured(live_server: Any) -> None:
    response = requests.post(f"{live_server.url}/test-errors/raise?what=latin1", json={}, timeout=10)

    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_misconfigured"


def test_a_malformed_json_body_is_a_400_envelope(live_server: Any) -> None:
    response = requests.post(
        f"{live_server.url}/test-errors/raise",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request_body"


def test_django_403_and_400_outside_drf_are_envelopes(live_server: Any) -> None:
    forbidden_answer = requests.get(f"{live_server.url}/test-errors/forbidden", timeout=10)
    suspicious_answer = requests.get(f"{live_server.url}/test-errors/suspicious", timeout=10)

    assert forbidden_answer.status_code == 403
    assert error_of(forbidden_answer)["code"] == "permission_denied"
    assert suspicious_answer.status_code == 400
    assert error_of(suspicious_answer)["code"] == "bad_request"
    assert "forged" not in suspicious_answer.text


def test_a_csrf_failure_is_a_403_envelope(live_server: Any) -> None:
    response = requests.post(
        f"{live_server.url}/admin/login/", data={"username": "a", "password": "b"}, allow_redirects=False, timeout=10
    )

    assert response.status_code == 403
    assert error_of(response)["code"] == "csrf_failed"


def raw_request(
    url: str, host_line: str, request_line: str = "GET /healthz HTTP/1.1"
) -> tuple[int, dict[str, str], str]:
    """Send a request with `host_line` as written (requests would refuse or fix most of these)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\n{host_line}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body.decode()


@pytest.mark.parametrize(
    "host_line",
    ["Host: bad_host!", "Host: ", "Host: user@localhost", "Host: user:pass@localhost", "Host: [::1", "Host: [::1]]"],
)
@pytest.mark.parametrize("request_line", ["GET /healthz HTTP/1.1", "POST /v1/images/edits HTTP/1.1"])
def test_an_invalid_host_header_gets_a_400_envelope(
    live_server: Any, transactional_db: None, host_line: str, request_line: str
) -> None:
    status, headers, body = raw_request(live_server.url, host_line, request_line)

    assert status == 400
    assert headers["content-type"] == "application/json"
    assert '"code": "invalid_host"' in body and '"param": null' in body
    assert "<html" not in body.lower()


def test_a_valid_host_header_still_works(live_server: Any) -> None:
    status, _, body = raw_request(live_server.url, "Host: localhost")

    assert (status, body) == (200, '{"status": "ok"}')
