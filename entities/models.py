"""Gateway entities: image models (provider connections), routes and client API keys.

Every rule on an entity lives in its model's `clean()`, so the admin, the importer and any
service that calls `full_clean()` enforce the same rules.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from entities import crypto, vocabulary
from entities.catalog import PROVIDERS, Operation, provider_choices
from entities.plugins import PluginConfig, plugin_config

ENTITY_ID = RegexValidator(r"\A[A-Za-z0-9_.:-]+\Z", "ids may hold letters, digits and _ . : - only")
ENV_REF = re.compile(r"^\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}$")
DEFAULT_TIMEOUT_MS = 180_000
DEFAULT_MAX_SIZE_UPLOAD = 104_857_600
DEFAULT_RETRIES = 1
DEFAULT_DEADLINE_MS = 600_000


def _option_types(operation: Operation) -> dict[str, type]:
    """Option keys an operator may set, with the JSON type each must have (bool is checked before int)."""
    fields = vocabulary.DEFAULT_FIELDS[operation]
    return {"enabled": bool, **{name: int if name in vocabulary.INTEGER_FIELDS else str for name in fields}}


EDITION_OPTIONS: dict[str, type] = _option_types(Operation.EDIT)
GENERATION_OPTIONS: dict[str, type] = _option_types(Operation.GENERATION)


def env_reference(value: str) -> str | None:
    """The variable name when `value` is written `${env.NAME}`, else None."""
    match = ENV_REF.match(value.strip())
    return match.group(1) if match else None


def resolve_secret(value: str) -> str:
    """A literal as is, or the environment value of a `${env.NAME}` reference ('' when unset)."""
    name = env_reference(value)
    return os.environ.get(name, "") if name else value


def mask_secret(value: str) -> str:
    """What the admin may show of a secret: env references whole, literals by their last 4."""
    if not value:
        return "—"
    if value == crypto.UNDECRYPTABLE:
        return "(cannot be decrypted: set it again)"
    if env_reference(value):
        return value
    return "…" + value[-4:] if len(value) > 8 else "…"


def validate_options(options: Any, allowed: dict[str, type]) -> None:
    """The JSON shape of an options block: known keys, each of its JSON type."""
    if not isinstance(options, dict):
        raise ValidationError("must be an object")
    errors = []
    checked: dict[str, Any] = options
    for key, value in checked.items():
        expected = allowed.get(key)
        if expected is None:
            errors.append(f"unknown key {key!r} (known: {', '.join(sorted(allowed))})")
        elif expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"{key} must be a whole number")
        elif not isinstance(value, expected):
            errors.append(f"{key} must be a {'boolean' if expected is bool else 'string'}")
    if errors:
        raise ValidationError("; ".join(errors))


def validate_option_values(options: dict[str, Any], *, provider: str, operation: Operation) -> None:
    """Defaults that could never be valid for the entity's model are refused now, not on every call."""
    model = options.get("model") or PROVIDERS[provider].default_model
    family = vocabulary.family_for(provider=provider, model=model)
    values = {key: value for key, value in options.items() if key != "enabled"}
    try:
        vocabulary.check_options(values, family=family, operation=operation, defaults_only=True)
    except vocabulary.OptionError as exc:
        raise ValidationError(f"{exc.param}: {exc.message}") from None


def validate_regex_list(patterns: Any) -> None:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValidationError("must be a list of regular expressions")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValidationError(f"{pattern!r} is not a valid regular expression: {exc}") from None


def model_allowed(model: str, include: list[str], exclude: list[str]) -> bool:
    """Whether `model` passes include/exclude regular expressions (whole-name matches)."""
    included = not include or any(re.fullmatch(pattern, model) for pattern in include)
    return included and not any(re.fullmatch(pattern, model) for pattern in exclude)


def validate_string_list(values: Any) -> None:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValidationError("must be a list of strings")


def validate_string_map(values: Any) -> None:
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ValidationError("must be an object of strings")


_IMAGE_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def validate_image_hosts(hosts: Any) -> None:
    """Host names ('*.example.com' for subdomains) or IP addresses, no scheme, port or path."""
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ValidationError("must be a list of host names")
    for host in hosts:
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal)
            continue
        except ValueError:
            pass
        if not _IMAGE_HOST.match(host):
            raise ValidationError(f"{host!r} is not a host name (write 'cdn.example.com' or '*.example.com')")


_HOST = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$")


def validate_domains(domains: Any) -> None:
    if not isinstance(domains, list) or not domains:
        raise ValidationError("must be a non-empty list of 'host' or 'host/prefix'")
    for domain in domains:
        if not isinstance(domain, str):
            raise ValidationError("each domain must be a string")
        host, _, prefix = domain.partition("/")
        if not _HOST.match(host):
            raise ValidationError(f"{domain!r}: {host!r} is not a host name or '*'")
        if prefix and not re.match(r"^[A-Za-z0-9._~%!$&'()*+,;=:@/-]+$", prefix):
            raise ValidationError(f"{domain!r}: the prefix holds characters not allowed in a path")
        if "//" in domain or domain.endswith("/"):
            raise ValidationError(f"{domain!r}: write the prefix without empty segments or a trailing '/'")


class EncryptedTextField(models.TextField):
    """The token column as migration 0001 created it (decrypted on read); kept for that migration only."""


class SealedSecretField(models.TextField):
    """A secret in its stored form, in the database and in Python alike: Fernet ciphertext for a
    literal, `${env.NAME}` as written. Nothing that reads the field (dumpdata, the admin, any
    serializer) sees the secret; a literal assigned directly is encrypted when the row is saved.
    """

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = super().pre_save(model_instance, add)
        if value and not env_reference(value) and not crypto.is_ciphertext(value):
            value = crypto.encrypt(value)
            setattr(model_instance, self.attname, value)
        return value


# What an HTTP header value cannot carry: control characters and anything past latin-1.
_UNSENDABLE = re.compile(r"[^\x20-\x7e\x80-\xff]")


def token_problem(token: str) -> str | None:
    """Why `token` cannot be sent in a provider's credential header, or None when it can.

    HTTP header values are latin-1: anything else makes every call fail before it leaves. Checked
    on every provider call, hence one regular expression rather than a loop per character.
    """
    found = _UNSENDABLE.search(token)
    if found is None:
        return None
    char = found.group()
    if ord(char) > 0xFF:
        return f"the token holds {char!r}, which an HTTP header cannot carry (latin-1 characters only)"
    return "the token holds a control character (a line break or tab?), which an HTTP header cannot carry"


class ImageModel(models.Model):
    id = models.CharField(primary_key=True, max_length=200, validators=[ENTITY_ID])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    metadata = models.JSONField(default=dict, blank=True, validators=[validate_string_map])
    provider = models.CharField(max_length=32, choices=provider_choices)
    base_url = models.URLField(max_length=500, blank=True, default="", help_text="Empty: the provider's default.")
    # Ciphertext or `${env.NAME}`, never the literal: use set_token() and plain_token().
    token = SealedSecretField(
        blank=True,
        default="",
        help_text="A literal key (encrypted at rest) or ${env.NAME}, read at call time.",
    )
    timeout_ms = models.PositiveIntegerField(default=DEFAULT_TIMEOUT_MS)
    # Where the gateway may download image URLs this provider answers (to inline them as b64_json):
    # the provider's own host and these; never a private network address unless allowed.
    image_hosts = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_image_hosts],
        help_text="Hosts the provider's image URLs may be fetched from, besides its own host; "
        "'*.example.com' covers its subdomains.",
    )
    allow_private_network = models.BooleanField(
        default=False,
        help_text="Let image URLs point at private, loopback or link-local addresses "
        "(an on-premises provider); off, such URLs are refused.",
    )
    connection_extra = models.JSONField(
        default=dict, blank=True, help_text="Provider-specific connection keys (Azure: resource_name, ...)."
    )
    generation = models.JSONField(default=dict, blank=True)
    edition = models.JSONField(default=dict, blank=True)
    models_include = models.JSONField(default=list, blank=True, validators=[validate_regex_list])
    models_exclude = models.JSONField(default=list, blank=True, validators=[validate_regex_list])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "image model"

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def options(self, operation: Operation) -> dict[str, Any]:
        """The entity's defaults and switch for one operation (`config.options.<edition|generation>`)."""
        return self.edition if operation is Operation.EDIT else self.generation

    def set_token(self, value: str) -> None:
        """Take a literal (encrypted at once) or a `${env.NAME}` reference (kept as written).

        Setting the token already held changes nothing, so an unchanged import stays unchanged.
        """
        value = value.strip()
        if value == self.token_as_written():
            return
        self.token = crypto.encrypt(value) if value and not env_reference(value) else value

    def token_as_written(self) -> str:
        """The literal (decrypted) or the `${env.NAME}` reference, as the operator gave it.

        `crypto.UNDECRYPTABLE` when no configured key decrypts the stored literal.
        """
        if self.token and crypto.is_ciphertext(self.token):
            return crypto.decrypt(self.token)
        return self.token  # empty, a reference, or a literal assigned directly and not yet saved

    def plain_token(self) -> str:
        """The credential to send: the decrypted literal or the environment's value ('' when unset).

        Only the connection handed to a provider adapter calls this.
        """
        return resolve_secret(self.token_as_written())

    def masked_token(self) -> str:
        """What the admin may show: the reference whole, a literal by its last 4 characters."""
        return mask_secret(self.token_as_written())

    @property
    def edition_enabled(self) -> bool:
        return bool(self.edition.get("enabled", False))

    @property
    def generation_enabled(self) -> bool:
        return bool(self.generation.get("enabled", False))

    @property
    def effective_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        default = PROVIDERS[self.provider].default_base_url
        return default.format(**{k: self.connection_extra.get(k, "") for k in ("resource_name",)})

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        provider = PROVIDERS.get(self.provider)
        for field, options, allowed, operation in (
            ("edition", self.edition, EDITION_OPTIONS, Operation.EDIT),
            ("generation", self.generation, GENERATION_OPTIONS, Operation.GENERATION),
        ):
            try:
                validate_options(options, allowed)
                if provider:
                    validate_option_values(options, provider=provider.key, operation=operation)
            except ValidationError as exc:
                errors.setdefault(field, []).extend(exc.messages)
                continue
            extra = self.connection_extra if isinstance(self.connection_extra, dict) else {}
            if provider and options.get("enabled") and not provider.can(operation, extra):
                errors.setdefault(field, []).append(
                    f"{provider.cannot_reason(operation, extra)}: turn {operation.gerund} off for this image model"
                )
        if not isinstance(self.connection_extra, dict):
            errors["connection_extra"] = ["must be an object"]
        elif provider:
            unknown = set(self.connection_extra) - set(provider.extra_connection_keys)
            if unknown:
                errors["connection_extra"] = [f"{provider.name} takes no connection key {', '.join(sorted(unknown))}"]
            elif (
                provider.key == "azure-openai" and not self.base_url and not self.connection_extra.get("resource_name")
            ):
                errors["connection_extra"] = ["Azure OpenAI needs resource_name (or a base_url)"]
        if self.timeout_ms is not None and not 1 <= self.timeout_ms <= 3_600_000:
            errors["timeout_ms"] = ["the timeout must be between 1 ms and one hour"]
        written = self.token_as_written()
        problem = None if env_reference(written) or written == crypto.UNDECRYPTABLE else token_problem(written)
        if problem:
            errors["token"] = [problem]
        if errors:
            raise ValidationError(errors)


class Route(models.Model):
    """A frontend (hosts and path prefixes) and the plugins that serve it."""

    id = models.CharField(primary_key=True, max_length=200, validators=[ENTITY_ID])
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    domains = models.JSONField(
        validators=[validate_domains],
        help_text="'host' or 'host/prefix' entries; '*' matches any host.",
    )
    # The images-edit plugin: null = absent from the route.
    edit_plugin_enabled = models.BooleanField(null=True, blank=True, verbose_name="edit plugin")
    max_size_upload = models.PositiveBigIntegerField(default=DEFAULT_MAX_SIZE_UPLOAD)
    edit_fallback = models.BooleanField(default=True, help_text="On a retryable provider failure, try the next ref.")
    edit_fallback_named = models.BooleanField(
        default=False, help_text="Fall back even when the client named a ref (X/model or provider)."
    )
    edit_retries = models.PositiveSmallIntegerField(
        default=DEFAULT_RETRIES, help_text="Extra attempts per ref on a retryable failure (0-5)."
    )
    edit_deadline_ms = models.PositiveIntegerField(
        default=DEFAULT_DEADLINE_MS, help_text="Time budget of one request across retries and fallbacks."
    )
    # The images-generation plugin: null = absent from the route.
    generation_plugin_enabled = models.BooleanField(null=True, blank=True, verbose_name="generation plugin")
    generation_decode = models.BooleanField(
        default=False, help_text="Answer with the image bytes when exactly one image is asked for."
    )
    generation_fallback = models.BooleanField(
        default=True, help_text="On a retryable provider failure, try the next ref."
    )
    generation_fallback_named = models.BooleanField(
        default=False, help_text="Fall back even when the client named a ref (X/model or provider)."
    )
    generation_retries = models.PositiveSmallIntegerField(
        default=DEFAULT_RETRIES, help_text="Extra attempts per ref on a retryable failure (0-5)."
    )
    generation_deadline_ms = models.PositiveIntegerField(
        default=DEFAULT_DEADLINE_MS, help_text="Time budget of one request across retries and fallbacks."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def clean(self) -> None:
        errors = {}
        if self.max_size_upload is not None and self.max_size_upload < 1:
            errors["max_size_upload"] = "must be a positive number of bytes"
        for prefix in ("edit", "generation"):
            retries, deadline = getattr(self, f"{prefix}_retries"), getattr(self, f"{prefix}_deadline_ms")
            if retries is not None and retries > 5:
                errors[f"{prefix}_retries"] = "at most 5 retries per ref"
            if deadline is not None and not 1_000 <= deadline <= 3_600_000:
                errors[f"{prefix}_deadline_ms"] = "the deadline must be between 1 s and one hour"
        if errors:
            raise ValidationError(errors)

    def plugin(self, operation: Operation) -> PluginConfig:
        return plugin_config(self, operation)

    def ref_ids(self, plugin: str) -> list[str]:
        return [ref.image_model_id for ref in self.refs.all() if ref.plugin == plugin]


class RouteRef(models.Model):
    """One image model in a plugin's ordered `refs`."""

    EDIT = "edit"
    GENERATION = "generation"
    PLUGIN_CHOICES = [(EDIT, "images edit"), (GENERATION, "images generation")]

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="refs")
    plugin = models.CharField(max_length=16, choices=PLUGIN_CHOICES)
    image_model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="route_refs")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["plugin", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["route", "plugin", "image_model"], name="unique_ref_per_plugin")]

    def __str__(self) -> str:
        return f"{self.plugin} #{self.position}: {self.image_model_id}"


def hash_secret(secret: str) -> str:
    # Client keys are long random strings, so one SHA-256 is enough and keeps the lookup O(1).
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    """A client's key: which routes it opens, and the limits, budget, lifetime and models it has."""

    id = models.CharField(primary_key=True, max_length=200, validators=[ENTITY_ID])
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_hint = models.CharField(max_length=8, blank=True, editable=False)
    routes = models.ManyToManyField(Route, related_name="api_keys", blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    images_per_day = models.PositiveIntegerField(null=True, blank=True)
    budget_usd_per_day = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="budget (USD per day)"
    )
    budget_usd_per_month = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, verbose_name="budget (USD per month)"
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    models_include = models.JSONField(
        default=list, blank=True, validators=[validate_regex_list], help_text="Empty: every model."
    )
    models_exclude = models.JSONField(default=list, blank=True, validators=[validate_regex_list])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def set_secret(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValidationError({"secret": "a key secret must be at least 16 characters"})
        self.secret_hash = hash_secret(secret)
        self.secret_hint = "…" + secret[-4:]

    def clean(self) -> None:
        if not self.secret_hash:
            raise ValidationError({"secret": "a key needs a secret"})
        errors = {}
        for field in ("requests_per_minute", "images_per_day"):
            if getattr(self, field) == 0:
                errors[field] = "must be at least 1 (leave empty for no limit)"
        for field in ("budget_usd_per_day", "budget_usd_per_month"):
            value = getattr(self, field)
            if value is not None and value <= 0:
                errors[field] = "must be more than 0 USD (leave empty for no budget)"
        if errors:
            raise ValidationError(errors)


class AdminToken(models.Model):
    """A bearer token for the admin REST API (/api/v1/...): only its SHA-256 is stored.

    Made by `manage.py create_admin_token NAME`, which prints it once; revoking keeps the row so the
    admin still shows who had access and when it was last used.
    """

    name = models.CharField(max_length=100, help_text="Who or what uses it, e.g. 'terraform-ci'.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(max_length=8, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name", "-created_at"]
        verbose_name = "admin API token"
        constraints = [
            # One live token per name, so a name tells which token a client holds; revoked ones may repeat.
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(revoked_at__isnull=True), name="unique_active_admin_token_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_hint})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
