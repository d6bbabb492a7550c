"""Which route serves a request (Host + path), and which image models it may use.

The route table is an in-process snapshot of routes, refs, image models and keys, so a request
costs no query. It is rebuilt at most every ROUTE_CACHE_SECONDS, and at once in this process
when an entity is saved (signals below), so an admin change reaches every worker within seconds.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError
from django.db.models.signals import m2m_changed, post_delete, post_save

from entities.catalog import Operation
from entities.models import ApiKey, ImageModel, Route, RouteRef
from entities.plugins import PluginConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    enabled: bool
    requests_per_minute: int | None
    images_per_day: int | None
    budget_usd_per_day: Decimal | None = None
    budget_usd_per_month: Decimal | None = None
    expires_at: datetime.datetime | None = None
    models_include: tuple[str, ...] = ()
    models_exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(
            id=key.id,
            enabled=key.enabled,
            requests_per_minute=key.requests_per_minute,
            images_per_day=key.images_per_day,
            budget_usd_per_day=key.budget_usd_per_day,
            budget_usd_per_month=key.budget_usd_per_month,
            expires_at=key.expires_at,
            models_include=tuple(key.models_include or ()),
            models_exclude=tuple(key.models_exclude or ()),
        )

    def usable(self, now: datetime.datetime) -> bool:
        """Enabled and not expired."""
        return self.enabled and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class RouteInfo:
    route: Route
    prefix: str  # the matched path prefix without slashes ('' for none)
    edit_refs: list[ImageModel]
    generation_refs: list[ImageModel]
    key_hashes: dict[str, KeyInfo] = field(default_factory=dict)  # secret hash -> key
    # Each plugin's config, read from the route's columns once per table instead of per request.
    plugins: dict[Operation, PluginConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", {operation: self.route.plugin(operation) for operation in Operation})

    def refs(self, operation: Operation) -> list[ImageModel]:
        return self.edit_refs if operation is Operation.EDIT else self.generation_refs

    def plugin(self, operation: Operation) -> PluginConfig:
        return self.plugins[operation]

    @property
    def requires_key(self) -> bool:
        return bool(self.key_hashes)


@dataclass(frozen=True)
class _Entry:
    host: str  # lowercased host or '*'
    prefix: str
    info: RouteInfo


class RouteTable:
    def __init__(self, entries: list[_Entry]) -> None:
        # Longest prefix first, then exact host before '*'.
        self._entries = sorted(entries, key=lambda e: (-len(e.prefix), e.host == "*"))

    def match(self, host: str, path: str) -> tuple[RouteInfo, str] | None:
        """The route for this host and path, and the path below its prefix."""
        host = _bare_host(host)
        for entry in self._entries:
            if entry.host != "*" and entry.host != host:
                continue
            if not entry.prefix:
                return entry.info, path
            base = "/" + entry.prefix
            if path == base or path.startswith(base + "/"):
                return entry.info, path[len(base) :] or "/"
        return None


def _bare_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _build() -> RouteTable:
    models = {m.id: m for m in ImageModel.objects.all()}
    refs: dict[tuple[str, str], list[ImageModel]] = {}
    for ref in RouteRef.objects.order_by("position", "id"):
        refs.setdefault((ref.route_id, ref.plugin), []).append(models[ref.image_model_id])
    keys: dict[str, dict[str, KeyInfo]] = {}
    for key in ApiKey.objects.prefetch_related("routes"):
        key_info = KeyInfo.of(key)
        for route in key.routes.all():
            keys.setdefault(route.id, {})[key.secret_hash] = key_info
    entries = []
    for route in Route.objects.filter(enabled=True):
        for domain in route.domains:
            host, _, prefix = domain.partition("/")
            info = RouteInfo(
                route=route,
                prefix=prefix.strip("/"),
                edit_refs=refs.get((route.id, RouteRef.EDIT), []),
                generation_refs=refs.get((route.id, RouteRef.GENERATION), []),
                key_hashes=keys.get(route.id, {}),
            )
            entries.append(_Entry(host.lower(), info.prefix, info))
    return RouteTable(entries)


_lock = threading.Lock()
_table: RouteTable | None = None
_built_at = 0.0


def route_table() -> RouteTable:
    """The current snapshot. When it has expired, one thread re-reads the database while the others
    go on with the snapshot; if the database does not answer, the snapshot stays in use (no entity
    can change while it is down) and the re-read is tried again later."""
    global _table, _built_at
    table = _table
    if table is not None and time.monotonic() - _built_at < settings.ROUTE_CACHE_SECONDS:
        return table
    if table is not None:
        if not _lock.acquire(blocking=False):
            return table
        try:
            _table = _build()
        except DatabaseError as exc:
            logger.warning("routes not re-read, serving the last snapshot: %s", exc)
        finally:
            _built_at = time.monotonic()
            _lock.release()
        return _table or table
    with _lock:  # no snapshot yet (start, or an entity changed here): everyone waits for it
        if _table is None:
            _table = _build()
            _built_at = time.monotonic()
        return _table


def invalidate_route_table(**_: object) -> None:
    global _table
    _table = None


for _model in (ImageModel, Route, RouteRef, ApiKey):
    post_save.connect(invalidate_route_table, sender=_model, dispatch_uid=f"routes-{_model.__name__}-save")
    post_delete.connect(invalidate_route_table, sender=_model, dispatch_uid=f"routes-{_model.__name__}-del")
m2m_changed.connect(invalidate_route_table, sender=ApiKey.routes.through, dispatch_uid="routes-key-m2m")
