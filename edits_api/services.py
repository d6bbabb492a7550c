"""The image use cases, `image_edit` and `image_generate`, over typed requests.

Each chooses the route's image model, checks the request against that model's family before any
call, calls the provider with retries, fallback and breaker, and shapes OpenAI's answer. Connections
and tokens stay in here: callers get the answer body and what happened.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.files.uploadedfile import UploadedFile

from edits_api import resilience, results, validation
from edits_api.accounting import admission
from edits_api.accounting.ledger import Draft
from edits_api.errors import GatewayError
from edits_api.providers import adapter_for
from edits_api.providers.base import Connection, ImageFile, ImageRequest, ImageResult
from edits_api.resilience import RetryPolicy
from edits_api.routing import KeyInfo, RouteInfo
from edits_api.selection import Candidate, select_image_models
from edits_api.wire import ImagesRequest
from entities import vocabulary
from entities.catalog import PROVIDERS, Operation
from entities.crypto import UNDECRYPTABLE
from entities.models import ImageModel, token_problem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The answer: OpenAI's ImagesResponse as a dict, and whether the plugin wants the bytes instead."""

    body: dict[str, Any]
    decode: bool = False  # the generation plugin's `decode` with exactly one image


@dataclass(frozen=True)
class _Prepared:
    request: ImageRequest
    response_format: str | None  # what the client gets back; the gateway produces it itself
    connection: Connection  # the one its adapter checked the request against, and calls


def connection_for(image_model: ImageModel) -> Connection:
    token = image_model.plain_token()
    problem = "cannot be decrypted" if token == UNDECRYPTABLE else token_problem(token)
    if problem:
        raise GatewayError(
            502,
            f"Image model '{image_model.id}' ({PROVIDERS[image_model.provider].name}) has a token the gateway "
            f"cannot use: {problem}; an operator must set it again.",
            type="server_error",
            code="upstream_misconfigured",
        )
    return Connection(
        provider=image_model.provider,
        provider_name=PROVIDERS[image_model.provider].name,
        base_url=image_model.effective_base_url,
        token=token,
        timeout_s=image_model.timeout_ms / 1000,
        extra={k: str(v) for k, v in image_model.connection_extra.items()},
        image_hosts=tuple(image_model.image_hosts),
        allow_private_network=image_model.allow_private_network,
    )


def _prepare(
    candidate: Candidate, request: ImagesRequest, images: list[ImageFile], mask: ImageFile | None, *, decode: bool
) -> _Prepared:
    """The provider request for one candidate: its defaults under the client's values, checked for
    its model family and by its adapter. Raises the 400 the client gets when it cannot take it.
    With `decode`, a single image comes back inline so that its bytes can be the answer."""
    image_model, operation = candidate.image_model, request.operation
    fields = vocabulary.DEFAULT_FIELDS[operation]
    defaults = {k: v for k, v in image_model.options(operation).items() if k in fields and k != "model"}
    family = vocabulary.family_for(provider=image_model.provider, model=candidate.model)
    values = validation.check_values(
        request.prompt, {**defaults, **request.options}, family=family, operation=operation
    )
    if operation is Operation.EDIT:
        validation.check_images(images, mask, family)
    response_format = values.pop("response_format", None)
    if operation is Operation.GENERATION and response_format is None:
        response_format = "b64_json"  # as OpenAI's gpt-image models answer (contract §4)
    if decode and values.get("n", 1) == 1:
        response_format = "b64_json"
    provider_request = ImageRequest(
        prompt=request.prompt,
        model=candidate.model,
        images=images,
        mask=mask,
        response_format=response_format,
        **values,
    )
    adapter = adapter_for(image_model.provider)
    check = adapter.check_edit if operation is Operation.EDIT else adapter.check_generate
    connection = connection_for(image_model)
    check(connection, provider_request)
    return _Prepared(provider_request, response_format, connection)


def _inspect(files: tuple[UploadedFile, ...], mask: UploadedFile | None) -> tuple[list[ImageFile], ImageFile | None]:
    """Each upload's header read once (format, size), whichever candidates it goes to."""
    images = [validation.inspect_image(upload, "image") for upload in files]
    return images, (validation.inspect_image(mask, "mask") if mask is not None else None)


def _serve(
    *, route: RouteInfo, request: ImagesRequest, public_base: str, started: float, draft: Draft, key: KeyInfo | None
) -> Served:
    operation = request.operation
    outcome = draft.outcome
    plugin = route.plugin(operation)
    selection = select_image_models(
        refs=route.refs(operation), operation=operation, model=request.model, provider=request.provider
    )
    images, mask = _inspect(request.images, request.mask)
    # The first candidate is checked before any call, so bad input never reaches a provider.
    first = selection.candidates[0]
    prepared = {first.image_model.id: _prepare(first, request, images, mask, decode=plugin.decode)}
    _admit(draft, key, first, prepared[first.image_model.id].request)

    def prepare(candidate: Candidate) -> tuple[ImageRequest, str | None]:
        found = prepared.get(candidate.image_model.id)
        if found is None:
            if key is not None and not admission.key_allows_model(key, candidate.model):
                raise admission.model_not_allowed(key, candidate.model)  # this fallback is skipped
            found = _prepare(candidate, request, images, mask, decode=plugin.decode)
            prepared[candidate.image_model.id] = found
        return found.request, found.response_format

    def connect(image_model: ImageModel) -> Connection:
        return prepared[image_model.id].connection  # call_candidates prepares a candidate before it connects

    def adapter_call(connection: Connection, provider_request: ImageRequest) -> ImageResult:
        adapter = adapter_for(connection.provider)
        if operation is Operation.EDIT:
            return adapter.edit(connection, provider_request)
        return adapter.generate(connection, provider_request)

    result, connection, response_format = resilience.call_candidates(
        selection.candidates,
        fallback=plugin.fallback and (plugin.fallback_named or not selection.explicit),
        policy=RetryPolicy(plugin.retries, started + plugin.deadline_ms / 1000),
        outcome=outcome,
        prepare=prepare,
        connect=connect,
        call=adapter_call,
    )
    # Counted and billed by what the provider made, before anything else can fail.
    outcome.images, outcome.usage = len(result.items), result.usage
    draft.size, draft.quality = result.size or draft.size, result.quality or draft.quality
    body = results.answer(
        result, response_format=response_format, public_base=public_base, connection=connection,
        notices=outcome.notices,
    )  # fmt: skip
    logger.info(
        "%s served by %s in %.0f ms after %d attempt(s)",
        operation.value,
        outcome.image_model.id if outcome.image_model else "-",
        (time.monotonic() - started) * 1000,
        outcome.attempts,
    )
    return Served(body=body, decode=plugin.decode and len(body["data"]) == 1)


def _admit(draft: Draft, key: KeyInfo | None, first: Candidate, checked: ImageRequest) -> None:
    """The key's model, rate limits and budget, for the first candidate, before any call."""
    admission.admit(
        draft=draft,
        key=key,
        provider=first.image_model.provider,
        model=checked.model,
        n=checked.n,
        size=checked.size,
        quality=checked.quality,
        images_in=len(checked.images),
    )


def image_edit(
    *,
    route: RouteInfo,
    request: ImagesRequest,
    public_base: str,
    started: float,
    draft: Draft,
    key: KeyInfo | None = None,
) -> Served:
    """Edits the request's images with the route's edit plugin (contract §3). `draft` is the
    request's ledger row (ledger.recording), filled in as it goes; `key` is admitted before any
    provider call (accounting/admission.py)."""
    assert request.operation is Operation.EDIT
    return _serve(route=route, request=request, public_base=public_base, started=started, draft=draft, key=key)


def image_generate(
    *,
    route: RouteInfo,
    request: ImagesRequest,
    public_base: str,
    started: float,
    draft: Draft,
    key: KeyInfo | None = None,
) -> Served:
    """Generates images from the request's prompt with the route's generation plugin (contract §4);
    `draft` and `key` as for image_edit."""
    assert request.operation is Operation.GENERATION
    return _serve(route=route, request=request, public_base=public_base, started=started, draft=draft, key=key)
