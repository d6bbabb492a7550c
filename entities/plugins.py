"""The route plugins of the entity JSON (the images-edit and images-generation plugins) and their
config: one table maps each JSON key to the Route column that stores it, for the importer, the
exporter, the route snapshot and the admin alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entities.catalog import Operation

_NAMESPACE = "cp:otoroshi_plugins.com.cloud.apim.otoroshi.extensions.aigateway.plugins."
EDIT_PLUGIN = _NAMESPACE + "OpenAICompatImagesEdit"
GENERATION_PLUGIN = _NAMESPACE + "OpenAICompatImagesGen"
PLUGIN_IDS = {Operation.EDIT: EDIT_PLUGIN, Operation.GENERATION: GENERATION_PLUGIN}
OPERATION_OF_PLUGIN = {plugin: operation for operation, plugin in PLUGIN_IDS.items()}


def _shared(prefix: str) -> dict[str, str]:
    """The resilience keys both plugins share (contract §1)."""
    return {
        "fallback": f"{prefix}_fallback",
        "fallback_named": f"{prefix}_fallback_named",
        "retries": f"{prefix}_retries",
        "deadline": f"{prefix}_deadline_ms",
    }


# JSON config key -> Route column, per plugin (`refs` is stored as RouteRef rows).
CONFIG_COLUMNS: dict[Operation, dict[str, str]] = {
    Operation.EDIT: {"max_size_upload": "max_size_upload", **_shared("edit")},
    Operation.GENERATION: {"decode": "generation_decode", **_shared("generation")},
}
ENABLED_COLUMN = {Operation.EDIT: "edit_plugin_enabled", Operation.GENERATION: "generation_plugin_enabled"}


@dataclass(frozen=True)
class PluginConfig:
    """One plugin of one route, as the request path uses it."""

    enabled: bool  # present on the route and switched on
    fallback: bool
    fallback_named: bool
    retries: int
    deadline_ms: int
    max_size_upload: int | None = None  # edits only: the whole body's limit in bytes
    decode: bool = False  # generations only: answer the bytes of a single image


def plugin_config(route: Any, operation: Operation) -> PluginConfig:
    """The plugin's config read from a Route's columns."""
    values = {key: getattr(route, column) for key, column in CONFIG_COLUMNS[operation].items()}
    return PluginConfig(
        enabled=bool(getattr(route, ENABLED_COLUMN[operation])),
        fallback=values["fallback"],
        fallback_named=values["fallback_named"],
        retries=values["retries"],
        deadline_ms=values["deadline"],
        max_size_upload=values.get("max_size_upload"),
        decode=bool(values.get("decode", False)),
    )
