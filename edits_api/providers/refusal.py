"""The adapter for providers that cannot edit images (and whose generation is not wired up yet)."""

from __future__ import annotations

from edits_api.errors import GatewayError
from edits_api.providers.base import Connection, ImageRequest, ImageResult, ProviderAdapter


class RefusalAdapter(ProviderAdapter):
    """Refuses without any network call, so a misrouted request costs nothing upstream."""

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        raise GatewayError(
            400,
            f"{connection.provider_name} cannot edit images; choose an image model on a provider that can.",
            code="edition_not_supported",
        )

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        raise GatewayError(
            400,
            f"Image generation with {connection.provider_name} is not implemented in this gateway yet.",
            code="generation_not_supported",
        )
