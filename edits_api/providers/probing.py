"""The admin's "Test connection": one cheap authenticated call through the HTTP seam, reported
without the token."""

from __future__ import annotations

from edits_api.errors import GatewayError
from edits_api.providers import http
from edits_api.providers.base import Connection, ProbeResult, ProbeTarget


def probe(connection: Connection, target: ProbeTarget | None) -> ProbeResult:
    if target is None:
        return ProbeResult(
            ok=False,
            detail=(
                f"{connection.provider_name} offers no free authenticated call to test with; "
                "the connection is checked by the first real request."
            ),
            called="",
        )
    called = _scrub(f"GET {target.url}", connection.token)
    try:
        response = http.send(connection, "GET", target.url, headers=target.headers)
    except GatewayError as error:
        return ProbeResult(ok=False, detail=_scrub(error.message, connection.token), called=called)
    return ProbeResult(
        ok=True,
        detail=f"{connection.provider_name} accepted the credentials and answered {target.what} "
        f"(HTTP {response.status_code}).",
        called=called,
    )


def _scrub(text: str, token: str) -> str:
    # A token pasted into a base URL or echoed by an upstream must not reach the admin page.
    return text.replace(token, "[redacted]") if token else text
