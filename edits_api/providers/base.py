"""The small interface every provider adapter implements, over plain dataclasses (no models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Connection:
    """Where and how to call one provider; the token is already resolved from ${env.NAME}."""

    provider: str  # catalog key, e.g. "openai"
    provider_name: str  # display name used in error messages, e.g. "OpenAI"
    base_url: str  # without trailing slash
    token: str
    timeout_s: float  # the whole call's budget
    extra: dict[str, str] = field(default_factory=dict)
    # Where image URLs the provider answers may be fetched from (http.fetch_images): besides the
    # provider's own host, these hosts ("*.example.com" for subdomains); private, loopback and
    # link-local addresses only with allow_private_network (an on-premises provider, tests).
    image_hosts: tuple[str, ...] = ()
    allow_private_network: bool = False


@dataclass(frozen=True)
class ImageFile:
    """An uploaded image, already checked, readable from `path` (spooled to disk) or `data`."""

    filename: str
    content_type: str  # image/png, image/jpeg or image/webp
    size: int  # bytes
    width: int
    height: int
    path: str | None = None  # a file on disk; streamed, never read whole into memory
    data: bytes | None = None  # small uploads that stayed in memory
    has_alpha: bool = False

    def open(self) -> Any:
        """A fresh binary file object positioned at the start (callers close it)."""
        import io

        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.data or b"")


@dataclass(frozen=True)
class ImageRequest:
    """An edit (images given) or a generation (no images), with the entity defaults applied."""

    prompt: str
    model: str
    images: list[ImageFile] = field(default_factory=list)
    mask: ImageFile | None = None
    n: int = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    style: str | None = None
    moderation: str | None = None
    response_format: str | None = None  # what the client wants back: "url" or "b64_json"
    output_format: str | None = None
    output_compression: int | None = None
    input_fidelity: str | None = None
    user: str | None = None
    complexity: str | None = None
    safety_identifier: str | None = None
    frame_count: int | None = None  # gif output only
    frame_duration_ms: int | None = None


@dataclass(frozen=True)
class ImageItem:
    """One image: bytes as base64 or a URL to fetch, and the prompt the provider really used."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None  # only when the provider rewrote the prompt (DALL·E 3, Grok 2)
    content_type: str | None = None  # of the bytes in b64_json (or at url), when known


@dataclass(frozen=True)
class ImageResult:
    created: int
    items: list[ImageItem]
    # OpenAI's `usage` shape (input_tokens, output_tokens, total_tokens, input_tokens_details
    # {text_tokens, image_tokens}, output_tokens_details when known), mapped by the adapter from
    # the provider's own counts; None when the provider gives none.
    usage: dict[str, Any] | None = None
    # Top-level values the provider answered (OpenAI's gpt-image models do), passed through.
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """The answer to an operator's "Test connection": never holds the token."""

    ok: bool
    detail: str  # what happened, in an operator's words
    called: str  # what was called, e.g. "GET https://api.openai.com/v1/models" ("" when nothing)


@dataclass(frozen=True)
class ProbeTarget:
    """A cheap authenticated GET that proves the connection works (a model list, a balance)."""

    url: str
    headers: dict[str, str]
    what: str  # what a 2xx answer proves, e.g. "the model list"


class ProviderAdapter:
    """One subclass per wire protocol. Failures raise edits_api.errors.GatewayError."""

    def check_edit(self, connection: Connection, request: ImageRequest) -> None:
        """Refuse (GatewayError 400 naming the field) what this protocol cannot carry, before any call."""

    def check_generate(self, connection: Connection, request: ImageRequest) -> None:
        """As check_edit, for generations."""

    def edit(self, connection: Connection, request: ImageRequest) -> ImageResult:
        raise NotImplementedError

    def generate(self, connection: Connection, request: ImageRequest) -> ImageResult:
        raise NotImplementedError

    def probe_target(self, connection: Connection) -> ProbeTarget | None:
        """The call `probe` makes; None when the provider has no call that is both cheap and free."""
        return None

    def probe(self, connection: Connection) -> ProbeResult:
        """Check the connection (address and credentials) with one cheap authenticated call."""
        from edits_api.providers import probing  # probing imports http, which imports this module

        return probing.probe(connection, self.probe_target(connection))
