"""Fernet encryption for secrets at rest, with key rotation (the first key encrypts)."""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = list(settings.ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(("gateway-token-key:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"ENCRYPTION_KEYS holds an invalid Fernet key: {exc}") from None


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


# What a secret reads as when no configured key decrypts it: one bad row must not stop every
# route from loading, so the entity that holds it fails alone, when it is called.
UNDECRYPTABLE = "\x00undecryptable"


def decrypt(cipher: str) -> str:
    try:
        return _fernet().decrypt(cipher.encode()).decode()
    except InvalidToken:
        logger.error("a stored token cannot be decrypted: ENCRYPTION_KEYS or SECRET_KEY changed without the old key")
        return UNDECRYPTABLE
