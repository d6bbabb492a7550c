"""Test connection: each image model's adapter makes its cheapest authenticated call (a model
list where the provider has one) and the operator sees OK or the provider's error, and what was
called, never the token."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from edits_api.errors import GatewayError
from edits_api.providers import adapter_for
from edits_api.services import connection_for
from entities.catalog import PROVIDERS
from entities.models import ImageModel, env_reference, resolve_secret

# A test answers within this, whatever the entity's own timeout (made for 150 s edits) says.
PROBE_TIMEOUT_S = 15.0
PARALLEL_PROBES = 4


@dataclass(frozen=True)
class ConnectionTest:
    image_model_id: str
    image_model_name: str
    provider_name: str
    ok: bool
    detail: str  # what happened, in an operator's words; never holds the token
    called: str  # e.g. "GET https://api.openai.com/v1/models"; '' when nothing was called
    milliseconds: int


def image_models_test_connection(*, image_models: Iterable[ImageModel]) -> list[ConnectionTest]:
    """One probe per image model, a few at a time, in the order given."""
    models = list(image_models)
    with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
        return list(pool.map(_test, models))


def _test(image_model: ImageModel) -> ConnectionTest:
    started = time.monotonic()
    provider_name = PROVIDERS[image_model.provider].name

    def answer(ok: bool, detail: str, called: str = "") -> ConnectionTest:
        return ConnectionTest(
            image_model_id=image_model.id,
            image_model_name=image_model.name,
            provider_name=provider_name,
            ok=ok,
            detail=detail,
            called=called,
            milliseconds=int((time.monotonic() - started) * 1000),
        )

    variable = env_reference(image_model.token)
    if variable and not resolve_secret(image_model.token):
        return answer(False, f"The token is read from ${{env.{variable}}}, which is not set where the gateway runs.")
    try:
        connection = connection_for(image_model)
    except GatewayError as error:
        return answer(False, error.message)
    connection = replace(connection, timeout_s=min(connection.timeout_s, PROBE_TIMEOUT_S))
    result = adapter_for(image_model.provider).probe(connection)
    return answer(result.ok, result.detail, result.called)
