"""The provider catalog: which providers exist, their defaults and what each can do."""

from __future__ import annotations

from dataclasses import dataclass


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
        ),
        Provider(
            "gemini",
            "Google Gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            can_edit=True,
            can_generate=True,
            default_model="gemini-3.1-flash-image",
        ),
        Provider(
            "cloud-temple",
            "Cloud Temple",
            "https://api.ai.cloud-temple.com/v1",
            can_edit=True,
            can_generate=True,
            default_model="gpt-image-1",
        ),
        Provider(
            "azure-openai",
            "Azure OpenAI",
            "https://{resource_name}.openai.azure.com/openai",
            can_edit=False,
            can_generate=True,
            default_model="gpt-image-1",
            extra_connection_keys=("resource_name", "deployment_id", "api_version"),
        ),
        Provider(
            "x-ai",
            "Grok (xAI)",
            "https://api.x.ai/v1",
            can_edit=False,
            can_generate=True,
            default_model="grok-2-image",
        ),
        Provider(
            "luma",
            "Luma",
            "https://api.lumalabs.ai",
            can_edit=False,
            can_generate=True,
            default_model="photon-1",
        ),
        Provider(
            "hive",
            "Hive",
            "https://api.thehive.ai/api/v3",
            can_edit=False,
            can_generate=True,
            default_model="black-forest-labs/flux-schnell",
        ),
    ]
}

PROVIDER_CHOICES = [(p.key, p.name) for p in PROVIDERS.values()]


def provider_can(provider_key: str, operation: str) -> bool:
    """Whether the provider supports 'edition' or 'generation'."""
    provider = PROVIDERS.get(provider_key)
    if provider is None:
        return False
    return provider.can_edit if operation == "edition" else provider.can_generate
