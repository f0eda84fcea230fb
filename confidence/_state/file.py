"""Load a resolver state from a local file (`state_file=`: offline and bootstrap mode).

Accepted forms, detected by content (a user should not have to say which one they have):
- an encrypted `.enc` body as the CDN serves it (needs the encryption key);
- a serialized `ClientResolverState` (state + account id + log destinations);
- a raw serialized `ResolverState` (needs `account_id=`, which a raw state does not carry).

Detection of the two plaintext forms: `ClientResolverState` only has fields 1, 2 and 4,
while every usable `ResolverState` has clients and credentials (fields 6 and 7). A plaintext
whose top-level fields all lie in {1, 2, 4} and whose field 1 is one bytes blob is read as a
`ClientResolverState`.
"""

from __future__ import annotations

from pathlib import Path

from confidence._config import BootstrapState
from confidence._state.crypto import decrypt_state
from confidence._wasm.protowire import (
    ProtoDecodeError,
    decode_client_resolver_state,
    iter_fields,
)
from confidence.errors import (
    MissingAccountIdError,
    StateDecryptionError,
    StateFileError,
    StateNotDecryptableError,
)

__all__ = [
    "MissingAccountIdError",
    "StateFileError",
    "StateNotDecryptableError",
    "load_state_file",
    "parse_state_bytes",
]

_CLIENT_STATE_FIELDS = frozenset({1, 2, 4})


def _looks_like_client_state(data: bytes) -> bool:
    try:
        fields = [number for number, _wire, _value in iter_fields(data)]
    except ProtoDecodeError:
        return False
    return bool(fields) and set(fields) <= _CLIENT_STATE_FIELDS and fields.count(1) == 1


def _is_resolver_state(data: bytes) -> bool:
    """A full, strict parse: random bytes (e.g. ciphertext) essentially never pass it."""
    from google.protobuf.message import DecodeError

    from confidence._proto.confidence.flags.admin.v1 import resolver_pb2

    try:
        state = resolver_pb2.ResolverState.FromString(data)
    except (DecodeError, ValueError):
        return False
    return bool(state.client_credentials or state.flags)


def _is_plaintext(data: bytes) -> bool:
    if _looks_like_client_state(data):
        try:
            return _is_resolver_state(decode_client_resolver_state(data).state)
        except ProtoDecodeError:
            return False
    return _is_resolver_state(data)


def parse_state_bytes(
    data: bytes, *, encryption_key: bytes | None, account_id: str | None
) -> BootstrapState:
    """Turn the bytes of a state file into (state, account id, log destinations)."""
    plaintext = data
    if encryption_key is not None:
        try:
            plaintext = decrypt_state(data, encryption_key)
        except StateDecryptionError as exc:
            # Not necessarily an error: a plaintext file with a key configured is fine.
            if not _is_plaintext(data):
                raise StateNotDecryptableError(
                    f"state file could not be decrypted: {exc}"
                ) from None
            plaintext = data
    if _looks_like_client_state(plaintext):
        try:
            client_state = decode_client_resolver_state(plaintext)
        except ProtoDecodeError as exc:
            raise StateFileError(f"invalid ClientResolverState: {exc}") from None
        account = account_id or client_state.account
        if not account:
            raise MissingAccountIdError("state file has no account id; pass account_id=")
        return BootstrapState(client_state.state, account, tuple(client_state.log_destinations))
    if not _is_resolver_state(plaintext):
        raise StateFileError(
            "state file is neither a ResolverState nor a ClientResolverState"
            + ("" if encryption_key else " (if it is encrypted, pass encryption_key=)")
        )
    if not account_id:
        raise MissingAccountIdError("state file holds a raw ResolverState; pass account_id=")
    return BootstrapState(plaintext, account_id)


def load_state_file(
    path: Path, *, encryption_key: bytes | None, account_id: str | None
) -> BootstrapState:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StateFileError(f"cannot read state file {str(path)!r}: {exc.strerror}") from None
    return parse_state_bytes(data, encryption_key=encryption_key, account_id=account_id)
