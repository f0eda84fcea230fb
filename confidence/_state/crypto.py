"""AES-256-GCM for the encrypted resolver state (protocol §2.3).

The CDN serves ``<sha256hex(secret)>.enc`` as the Tink "NO_PREFIX" AEAD layout:

    12-byte nonce ‖ ciphertext ‖ 16-byte GCM tag        (no associated data)

``cryptography``'s ``AESGCM`` expects exactly ``ciphertext ‖ tag``, so the only work here is
splitting off the nonce and turning its exceptions into messages a user can act on.

Error messages never contain key material: the key is a credential, and exception text
routinely ends up in logs and error reports.
"""

from __future__ import annotations

import os
import re

from confidence import _lazy
from confidence.errors import StateDecryptionError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "StateDecryptionError",
    "decrypt_state",
    "encrypt_state",
    "parse_encryption_key",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

# Full match, so "0x…", whitespace or a 65th character are all rejected rather than silently
# trimmed: a key that is almost right is a configuration mistake worth surfacing.
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def parse_encryption_key(hex_key: str) -> bytes:
    """Decode the 64-hex-character key shown next to a client credential.

    Raises ``ValueError`` with a message that describes the problem without echoing the input.
    """
    if not isinstance(hex_key, str):
        raise TypeError("encryption key must be a str of 64 hex characters")
    if _HEX_KEY.fullmatch(hex_key) is None:
        raise ValueError(
            "encryption key must be exactly 64 hexadecimal characters "
            f"(got {len(hex_key)} characters; value not shown)"
        )
    return bytes.fromhex(hex_key)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"encryption key must be {KEY_SIZE} bytes (AES-256), got {len(key)}")


def decrypt_state(body: bytes, key: bytes) -> bytes:
    """Decrypt a ``.enc`` state body into serialized ``ClientResolverState`` bytes."""
    _check_key(key)
    if len(body) < NONCE_SIZE:
        raise StateDecryptionError("Encrypted state too short (missing nonce)")
    if len(body) < NONCE_SIZE + TAG_SIZE:
        raise StateDecryptionError("Encrypted state too short (missing authentication tag)")
    # Imported here (~3 ms), not with the package: a plaintext state or a provider that
    # only builds states never needs it; a sync decrypts in a worker thread (see _lazy).
    _lazy.load("cryptography.hazmat.primitives.ciphers.aead")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = body[:NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, body[NONCE_SIZE:], None)
    except InvalidTag:
        # GCM cannot tell a wrong key from corrupted bytes; say both.
        raise StateDecryptionError(
            "Encrypted state failed authentication: wrong encryption key or corrupted body"
        ) from None


def encrypt_state(plaintext: bytes, key: bytes, nonce: bytes | None = None) -> bytes:
    """Encrypt serialized ``ClientResolverState`` bytes into the CDN layout.

    ``nonce`` is for deterministic test fixtures only; by default a fresh random nonce is used,
    since GCM nonce reuse under one key destroys confidentiality and integrity.
    """
    _check_key(key)
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return nonce + AESGCM(key).encrypt(nonce, plaintext, None)
