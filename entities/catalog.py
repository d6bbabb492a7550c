"""The provider catalog: which providers exist, their defaults, what each can do and how the demo
set shows it. Adding a provider is one entry here plus one adapter in edits_api/providers/."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Operation(enum.StrEnum):
    """What a client asks of an image model. The value is the route plugin's kind."""

    EDIT = "edit"
    GENERATION = "generation"

    @property
    def options_key(self) -> str:
        """The entity's JSON options block (`config.options.edition` / `.generation`)."""
        return "edition" if self is Operation.EDIT else "generation"

    @property
    def endpoint(self) -> str:
        """The path below a route's prefix: /v1/images/<endpoint>."""
        return "edits" if self is Operation.EDIT else "generations"

    @property
    def verb(self) -> str:
        return "edit images" if self is Operation.EDIT else "generate images"

    @property
    def gerund(self) -> str:
        return "editing" if self is Operation.EDIT else "generation"


# Azure OpenAI serves /images/edits from this api-version on (ISO dates compare as strings).
AZURE_EDIT_SINCE = "2025-04-01-preview"


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    default_base_url: str
    can_edit: bool
    can_generate: bool
    # The model used when neither the client nor the entity names one.
    default_model: str = ""
    # Connection keys beyond base_url/token/timeout that this provider takes.
    extra_connection_keys: tuple[str, ...] = ()
    # The environment variable the demo entity reads its token from ('' when it needs none).
    demo_token_variable: str = ""
    # Connection values the demo entity starts with (placeholders an operator replaces).
    demo_connection: tuple[tuple[str, str], ...] = ()
    needs_network: bool = True  # False: served inside the gateway (the built-in demo provider)

    def can(self, operation: Operation, connection_extra: dict[str, object] | None = None) -> bool:
        """Whether this provider serves the operation; for Azure, editing depends on the api_version."""
        if operation is Operation.GENERATION:
            return self.can_generate
        if self.key == "azure-openai":
            return azure_can_edit(str((connection_extra or {}).get("api_version") or ""))
        return self.can_edit

    def cannot_reason(self, operation: Operation, connection_extra: dict[str, object] | None = None) -> str:
        """Why `can` is False, in an operator's words."""
        if self.key == "azure-openai" and operation is Operation.EDIT:
            version = str((connection_extra or {}).get("api_version") or "") or "(none)"
            return (
                f"{self.name} edits images from api_version {AZURE_EDIT_SINCE} on; this entity's "
                f"api_version {version} cannot edit"
            )
        return f"{self.name} ({self.key}) cannot {operation.verb} through this gateway"


def azure_can_edit(api_version: str) -> bool:
    """api-version 2025-04-01-preview or later (dated versions sort as strings), or the v1 API."""
    if api_version in ("v1", "preview", "latest"):
        return True
    return api_version[:10] >= AZURE_EDIT_SINCE[:10] and api_version[:4].isdigit()


PROVIDERS: dict[str, Provider] = {
    p.key: p
    for p in [
        Provider(
            "openai",
            "OpenAI",
            "https://api.openai.com/v1",
            can_edit=True,
            can_generate=True,
            default_model="gpt-image-1",
            demo_token_variable="OPENAI_API_KEY",
        ),
        Provider(
            "gemini",
            "Google Gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            can_edit=True,
            can_generate=True,
            default_model="gemini-3.1-flash-image",
            demo_token_variable="GEMINI_API_KEY",
        ),
        Provider(
            "cloud-temple",
            "Cloud Temple",
            "https://api.ai.cloud-temple.com/v1",
            can_edit=True,
            can_generate=True,
            default_model="gpt-image-1",
            demo_token_variable="CLOUD_TEMPLE_API_KEY",
        ),
        Provider(
            "azure-openai",
            "Azure OpenAI",
            "https://{resource_name}.openai.azure.com/openai",
            can_edit=True,  # from AZURE_EDIT_SINCE on: see Provider.can
            can_generate=True,
            default_model="gpt-image-1",
            extra_connection_keys=("resource_name", "deployment_id", "api_version"),
            demo_token_variable="AZURE_OPENAI_KEY",
            demo_connection=(
                ("resource_name", "my-resource"),
                ("deployment_id", "gpt-image-1"),
                ("api_version", AZURE_EDIT_SINCE),
            ),
        ),
        Provider(
            "x-ai",
            "Grok (xAI)",
            "https://api.x.ai/v1",
            can_edit=False,
            can_generate=True,
            default_model="grok-imagine-image",
            demo_token_variable="XAI_API_KEY",
        ),
        Provider(
            "luma",
            "Luma",
            "https://api.lumalabs.ai",
            can_edit=False,
            can_generate=True,
            default_model="photon-1",
            demo_token_variable="LUMA_API_KEY",
        ),
        Provider(
            "hive",
            "Hive",
            "https://api.thehive.ai/api/v3",
            can_edit=False,
            can_generate=True,
            default_model="black-forest-labs/flux-schnell",
            demo_token_variable="HIVE_API_KEY",
        ),
        Provider(
            "local",
            "Local demo (Pillow, no network)",
            "",  # served inside the gateway process
            can_edit=True,
            can_generate=True,
            default_model="pillow",
            needs_network=False,
        ),
    ]
}


def provider_choices() -> list[tuple[str, str]]:
    """The catalog as form choices; a callable, so a provider added to PROVIDERS is one at once."""
    return [(p.key, p.name) for p in PROVIDERS.values()]


def provider_can(provider_key: str, operation: Operation, connection_extra: dict[str, object] | None = None) -> bool:
    """Whether the provider (by catalog key) serves the operation."""
    provider = PROVIDERS.get(provider_key)
    return provider is not None and provider.can(operation, connection_extra)


# --- what the admin suggests for open values (an operator may still type another model or size) ----
# Fixed value sets (quality, formats, ...) are entities.vocabulary's.

_OPENAI_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536", "256x256", "512x512", "1792x1024", "1024x1792")
# Gemini takes an aspect ratio; the gateway maps WxH to the nearest one.
_GEMINI_SIZES = ("1024x1024", "832x1248", "1248x832", "864x1184", "1184x864", "768x1344", "1344x768", "1536x672")
SIZE_SUGGESTIONS: dict[str, tuple[str, ...]] = {
    "openai": _OPENAI_SIZES,
    "cloud-temple": _OPENAI_SIZES,
    "azure-openai": _OPENAI_SIZES,
    "gemini": _GEMINI_SIZES,
    "x-ai": ("1024x1024",),
    "luma": ("1024x1024", "1344x768", "768x1344"),
    "hive": ("1024x1024", "1344x768", "768x1344"),
    "local": ("512x512", "1024x1024", "1536x1024", "1024x1536", "2048x2048"),
}
MODEL_SUGGESTIONS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "dall-e-2", "dall-e-3"),
    "cloud-temple": ("gpt-image-1",),
    "azure-openai": ("gpt-image-1", "gpt-image-1-mini", "dall-e-3"),
    "gemini": ("gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-2.5-flash-image"),
    "x-ai": ("grok-imagine-image", "grok-2-image"),
    "luma": ("photon-1", "photon-flash-1"),
    "hive": ("black-forest-labs/flux-schnell",),
    "local": ("pillow",),
}
