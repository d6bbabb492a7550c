"""Fernet encryption for secrets at rest, with key rotation (the first key encrypts, all decrypt)."""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger(__name__)


def keys_in_use() -> list[str]:
    """The Fernet keys, first one encrypting: ENCRYPTION_KEYS, else one derived from SECRET_KEY."""
    keys = list(settings.ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(("gateway-token-key:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return keys


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys_in_use()])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"ENCRYPTION_KEYS holds an invalid Fernet key: {exc}") from None


@receiver(setting_changed)
def _forget_keys(setting: str, **kwargs: Any) -> None:
    if setting in ("ENCRYPTION_KEYS", "SECRET_KEY"):
        _fernet.cache_clear()
        decrypt.cache_clear()


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


# What a secret reads as when no configured key decrypts it: one bad row must not stop every
# route from loading, so the entity that holds it fails alone, when it is called.
UNDECRYPTABLE = "\x00undecryptable"


# Every provider call needs its entity's token: decrypted once per process, not per request
# (a Fernet decryption was 4% of an edit's CPU). Bounded; emptied when the keys change.
@lru_cache(maxsize=1024)
def decrypt(cipher: str) -> str:
    try:
        return _fernet().decrypt(cipher.encode()).decode()
    except InvalidToken:
        logger.error("a stored token cannot be decrypted: ENCRYPTION_KEYS or SECRET_KEY changed without the old key")
        return UNDECRYPTABLE


def rotate(cipher: str) -> str:
    """The same secret encrypted with the first key; an undecryptable value is returned as is."""
    try:
        return _fernet().rotate(cipher.encode()).decode()
    except InvalidToken:
        return cipher


# Every Fernet token starts so: version byte 0x80 and the high bytes of a 64-bit timestamp
# (zero for millennia). A stored value with this prefix is ciphertext, even a damaged one.
_FERNET_PREFIX = "gAAAAA"


def is_ciphertext(value: str) -> bool:
    return value.startswith(_FERNET_PREFIX)
