"""A minimal protobuf wire-format reader/writer for the two tiny envelopes the network layer
touches: ``ClientResolverState`` (what the CDN serves) and ``IngestFlagLogsRequest`` (the
Cloudflare wrapper around an already-serialized ``WriteFlagLogsRequest``).

Why hand-written: the state-sync and log-sending paths only need three fields of one message
and two fields of another. Decoding them here keeps those paths independent of generated code
(and of the protobuf runtime's version quirks), and lets the Cloudflare wrapper embed the
WASM-produced batch bytes verbatim instead of parsing and re-serializing up to 4 MiB.

The reader is strict: truncated input, invalid tags, group wire types and malformed UTF-8 in
string fields raise ``ProtoDecodeError``, so garbage from the network is rejected rather than
half-accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "ClientResolverState",
    "ProtoDecodeError",
    "decode_client_resolver_state",
    "encode_client_resolver_state",
    "encode_ingest_flag_logs_request",
    "iter_fields",
]

WIRE_VARINT = 0
WIRE_I64 = 1
WIRE_LEN = 2
WIRE_I32 = 5

_MAX_VARINT_BYTES = 10


class ProtoDecodeError(ValueError):
    """The bytes are not a valid protobuf encoding of the expected message."""


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ProtoDecodeError("truncated varint")
        b = data[pos + i]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos + i + 1
        shift += 7
    raise ProtoDecodeError("varint longer than 10 bytes")


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)``; value is an int for varint/fixed fields and
    the payload bytes for length-delimited ones."""
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        tag, pos = _read_varint(view, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ProtoDecodeError("invalid field number 0")
        if wire == WIRE_VARINT:
            value, pos = _read_varint(view, pos)
            yield field, wire, value
        elif wire == WIRE_LEN:
            length, pos = _read_varint(view, pos)
            if pos + length > end:
                raise ProtoDecodeError("truncated length-delimited field")
            yield field, wire, bytes(view[pos : pos + length])
            pos += length
        elif wire in (WIRE_I64, WIRE_I32):
            size = 8 if wire == WIRE_I64 else 4
            if pos + size > end:
                raise ProtoDecodeError("truncated fixed-width field")
            yield field, wire, int.from_bytes(view[pos : pos + size], "little")
            pos += size
        else:
            # Groups (3/4) are proto2-only and never appear in these messages; 6/7 are invalid.
            raise ProtoDecodeError(f"unsupported wire type {wire}")


def encode_varint(value: int) -> bytes:
    """`value` as a protobuf varint (the one encoder of the package; `_wasm.abi` uses it too).

    A negative number (an int32, int64 or enum field) is written as its 64-bit two's
    complement, ten bytes, as every protobuf encoder does. Outside [-2**63, 2**64) there is
    no such field: ValueError rather than silently wrapped bytes.
    """
    if value < 0x80:
        if value >= 0:
            return bytes((value,))
        if value < -(1 << 63):
            raise ValueError(f"varint out of range: {value}")
        value += 1 << 64
    elif value >> 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_len_field(field: int, payload: bytes) -> bytes:
    return encode_varint((field << 3) | WIRE_LEN) + encode_varint(len(payload)) + payload


@dataclass(frozen=True)
class ClientResolverState:
    """``confidence.flags.admin.v1.ClientResolverState`` (protocol §2.4)."""

    state: bytes
    account: str
    log_destinations: tuple[int, ...] = ()


def decode_client_resolver_state(data: bytes) -> ClientResolverState:
    """Decode fields 1 (bytes state), 2 (string account) and 4 (repeated enum, packed or not).

    Unknown fields are skipped, as any protobuf parser would, so a newer CDN schema still parses.
    """
    state = b""
    account = ""
    destinations: list[int] = []
    for field, wire, value in iter_fields(data):
        if field == 1:
            if wire != WIRE_LEN:
                raise ProtoDecodeError("ClientResolverState.state has the wrong wire type")
            assert isinstance(value, bytes)
            state = value  # proto3: the last occurrence of a singular field wins
        elif field == 2:
            if wire != WIRE_LEN:
                raise ProtoDecodeError("ClientResolverState.account has the wrong wire type")
            assert isinstance(value, bytes)
            try:
                account = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtoDecodeError("ClientResolverState.account is not valid UTF-8") from None
        elif field == 4:
            if wire == WIRE_VARINT:
                assert isinstance(value, int)
                destinations.append(_as_enum(value))
            elif wire == WIRE_LEN:
                assert isinstance(value, bytes)
                pos = 0
                while pos < len(value):
                    item, pos = _read_varint(value, pos)
                    destinations.append(_as_enum(item))
            else:
                raise ProtoDecodeError(
                    "ClientResolverState.log_destinations has the wrong wire type"
                )
    return ClientResolverState(state=state, account=account, log_destinations=tuple(destinations))


def _as_enum(value: int) -> int:
    # Enums are int32 on the wire; negative values arrive sign-extended to 64 bits.
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def encode_client_resolver_state(
    state: bytes, account: str, log_destinations: Sequence[int] = ()
) -> bytes:
    """Encode a ``ClientResolverState`` the way protoc-generated code would (packed enums)."""
    out = bytearray()
    if state:
        out += encode_len_field(1, state)
    if account:
        out += encode_len_field(2, account.encode("utf-8"))
    if log_destinations:
        packed = b"".join(encode_varint(d) for d in log_destinations)
        out += encode_len_field(4, packed)
    return bytes(out)


def encode_ingest_flag_logs_request(account_id: str, batch: bytes) -> bytes:
    """``IngestFlagLogsRequest{account_id = 1; WriteFlagLogsRequest batch = 2}``.

    ``batch`` is embedded as already-serialized bytes, which is wire-identical to setting the
    sub-message (protocol §3.6). Field 2 is written even when empty so the receiver sees a
    present (if empty) batch, matching ``HasField("batch")`` semantics of generated code.
    """
    out = bytearray()
    if account_id:
        out += encode_len_field(1, account_id.encode("utf-8"))
    out += encode_len_field(2, batch)
    return bytes(out)
