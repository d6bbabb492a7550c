"""Errors after a provider already did, and billed, part of a request (the first of n Gemini
calls, a created Luma generation): such a request is never sent again (contract §3.6)."""

from __future__ import annotations

from edits_api.errors import GatewayError
from edits_api.providers.base import Connection


class PartlyBilledError(GatewayError):
    """A GatewayError that no retry or fallback may repeat."""

    def __init__(self, error: GatewayError, connection: Connection) -> None:
        super().__init__(
            error.status,
            f"{error.message.rstrip('.')}; {connection.provider_name} had already done part of this "
            "request, so it was not sent again.",
            type=error.type,
            param=error.param,
            code=error.code,
            headers=error.headers,
        )
        self.outcome_unknown = True  # the HTTP seam's flag for "may have been billed"

    @property
    def retryable(self) -> bool:
        return False


def partly_billed(error: GatewayError, connection: Connection) -> GatewayError:
    """`error`, marked as not to be repeated (a moderation refusal or other 4xx stays as it is)."""
    if not error.retryable:
        return error
    return PartlyBilledError(error, connection)
