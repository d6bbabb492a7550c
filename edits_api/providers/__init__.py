"""Provider adapters by catalog key (entities.catalog.PROVIDERS); a test keeps the two in step."""

from __future__ import annotations

from edits_api.providers.base import ProviderAdapter
from edits_api.providers.gemini import GeminiAdapter
from edits_api.providers.hive import HiveAdapter
from edits_api.providers.local import LocalAdapter
from edits_api.providers.luma import LumaAdapter
from edits_api.providers.openai import AzureOpenAIAdapter, OpenAIAdapter
from edits_api.providers.xai import XAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": OpenAIAdapter(),
    "cloud-temple": OpenAIAdapter(),  # OpenAI's images protocol under another base URL
    "gemini": GeminiAdapter(),
    "azure-openai": AzureOpenAIAdapter(),
    "x-ai": XAIAdapter(),
    "luma": LumaAdapter(),
    "hive": HiveAdapter(),
    "local": LocalAdapter(),  # the built-in demo provider: Pillow, no network
}


def adapter_for(provider_key: str) -> ProviderAdapter:
    """The adapter for a catalog key; an unknown key is a programming error, not a client's."""
    try:
        return ADAPTERS[provider_key]
    except KeyError:
        raise LookupError(f"no provider adapter for {provider_key!r}") from None
