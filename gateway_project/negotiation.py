"""Content negotiation for the DRF views: every API view answers in its first renderer (JSON).

DRF's default negotiation parses the Accept header into media types on every request, through the
email package, which cost about 5% of an edit's CPU in the profile (bench/README.md); the gateway
speaks only JSON, as OpenAI does, so there is nothing to choose. Parsers are still chosen by
Content-Type as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class FirstRendererNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Any, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type
