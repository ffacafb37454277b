"""Virtual key secrets: `mr-` + 32 random bytes + a CRC-32 checksum, all url-safe base64.

The checksum is not a secret and proves nothing about a key: it lets a typo, a truncated paste
or a random string be refused by arithmetic alone, before any lookup reaches the database
(the issue's "refused without a query"). Only the SHA-256 of a secret is stored; a secret is
shown once, at creation or rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import zlib
from typing import Final

PREFIX: Final = "mr-"
RANDOM_BYTES: Final = 32
_BODY_CHARS: Final = 43  # url-safe base64 of 32 bytes, unpadded
_CHECK_CHARS: Final = 6  # url-safe base64 of a 4-byte CRC-32, unpadded
LENGTH: Final = len(PREFIX) + _BODY_CHARS + _CHECK_CHARS
_SHAPE: Final = re.compile(rf"mr-[A-Za-z0-9_-]{{{_BODY_CHARS + _CHECK_CHARS}}}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _checksum(body: str) -> str:
    return _b64(zlib.crc32(body.encode("ascii")).to_bytes(4, "big"))


def new_secret() -> str:
    """A fresh secret (shown to its owner once; only `hash_secret` of it is kept)."""
    body = _b64(secrets.token_bytes(RANDOM_BYTES))
    return f"{PREFIX}{body}{_checksum(body)}"


def well_formed(secret: str) -> bool:
    """Whether `secret` has a virtual key's shape and a correct checksum (no I/O)."""
    if len(secret) != LENGTH or not _SHAPE.fullmatch(secret):
        return False
    body, check = secret[len(PREFIX) : -_CHECK_CHARS], secret[-_CHECK_CHARS:]
    try:
        # The body must decode to exactly 32 bytes: a non-canonical last character is refused.
        if _b64(base64.urlsafe_b64decode(body + "=")) != body:
            return False
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(check, _checksum(body))


def hash_secret(secret: str) -> str:
    """What the database keeps of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Compare two secret hashes in constant time."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))
