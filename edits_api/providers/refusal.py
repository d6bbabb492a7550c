"""The base for providers that generate but cannot edit: an edit is refused before any call, so a
misrouted request costs nothing upstream."""

from __future__ import annotations

from edits_api.errors import GatewayError, invalid
from edits_api.providers.base import Connection, ImageRequest, ImageResult, ProviderAdapter


class GenerationOnlyAdapter(ProviderAdapter):
    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        raise GatewayError(
            400,
            f"{connection.provider_name} cannot edit images; choose an image model on a provider that can.",
            code="edition_not_supported",
        )

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        self.check_edit(connection, request)
        raise AssertionError("unreachable: check_edit always refuses")


# Quality values that ask for nothing a provider without a quality setting could refuse: the
# seed page's standard/hd are accepted for every model (contract §1) and mean "the default" here.
DEFAULT_QUALITIES = frozenset({"auto", "standard", "hd"})


def refuse_what_cannot_be_carried(provider_name: str, request: ImageRequest, *, quality_setting: bool) -> None:
    """The OpenAI fields a generation-only protocol has no place for: a 400 naming the field,
    unless the value only asks for what the provider does anyway (opaque, auto moderation)."""
    if request.style is not None:
        raise invalid(f"{provider_name} has no style; describe the style in the prompt.", "style")
    if request.background not in (None, "auto", "opaque"):
        raise invalid(
            f"{provider_name} makes opaque images only; background {request.background!r} is not possible.",
            "background",
        )
    if request.moderation not in (None, "auto"):
        raise invalid(f"{provider_name} has no moderation setting; its own moderation always applies.", "moderation")
    if not quality_setting and request.quality not in (None, *DEFAULT_QUALITIES):
        raise invalid(f"{provider_name} has no quality setting; leave quality out (or auto) for this model.", "quality")
