"""AES-256-GCM state encryption (protocol §2.3) and the hand-written protobuf envelopes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confidence._proto.confidence.flags.admin.v1 import resolver_pb2
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._state.crypto import (
    NONCE_SIZE,
    TAG_SIZE,
    StateDecryptionError,
    decrypt_state,
    encrypt_state,
    parse_encryption_key,
)
from confidence._wasm.protowire import (
    ProtoDecodeError,
    decode_client_resolver_state,
    encode_client_resolver_state,
    encode_ingest_flag_logs_request,
)

KEY_HEX = "00112233445566778899aabbccddeeff" * 2
KEY = bytes.fromhex(KEY_HEX)
OTHER_KEY = bytes(32)


# -- keys -----------------------------------------------------------------------------------


def test_parse_key_accepts_64_hex_any_case() -> None:
    assert parse_encryption_key(KEY_HEX) == KEY
    assert parse_encryption_key(KEY_HEX.upper()) == KEY


@pytest.mark.parametrize(
    "bad",
    [
        "",
        KEY_HEX[:-1],
        KEY_HEX + "0",
        "0x" + KEY_HEX[2:],
        " " + KEY_HEX[1:],
        KEY_HEX[:-1] + "g",
        KEY_HEX[:-1] + "\n",
    ],
)
def test_parse_key_rejects_without_echoing(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_encryption_key(bad)
    message = str(info.value)
    assert "64" in message
    if bad.strip():
        assert bad.strip() not in message
        assert KEY_HEX[:16] not in message


def test_parse_key_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        parse_encryption_key(KEY)  # type: ignore[arg-type]


# -- AES-GCM --------------------------------------------------------------------------------


def test_round_trip_and_layout() -> None:
    nonce = bytes(range(12))
    body = encrypt_state(b"client state", KEY, nonce=nonce)
    # nonce ‖ ciphertext ‖ 16-byte tag
    assert body[:NONCE_SIZE] == nonce
    assert len(body) == NONCE_SIZE + len(b"client state") + TAG_SIZE
    assert decrypt_state(body, KEY) == b"client state"


def test_fresh_nonce_each_time() -> None:
    a = encrypt_state(b"same", KEY)
    b = encrypt_state(b"same", KEY)
    assert a[:NONCE_SIZE] != b[:NONCE_SIZE]
    assert decrypt_state(a, KEY) == decrypt_state(b, KEY) == b"same"


def test_wrong_key_is_a_clear_error() -> None:
    body = encrypt_state(b"secret state", KEY)
    with pytest.raises(StateDecryptionError, match="wrong encryption key or corrupted"):
        decrypt_state(body, OTHER_KEY)


def test_corrupted_body_is_a_clear_error() -> None:
    body = bytearray(encrypt_state(b"secret state", KEY))
    body[NONCE_SIZE + 2] ^= 0x01
    with pytest.raises(StateDecryptionError, match="corrupted"):
        decrypt_state(bytes(body), KEY)


@pytest.mark.parametrize("size", [0, 5, NONCE_SIZE - 1])
def test_too_short_for_nonce(size: int) -> None:
    with pytest.raises(StateDecryptionError, match="too short \\(missing nonce\\)"):
        decrypt_state(b"x" * size, KEY)


def test_too_short_for_tag() -> None:
    with pytest.raises(StateDecryptionError, match="too short"):
        decrypt_state(b"x" * (NONCE_SIZE + TAG_SIZE - 1), KEY)


def test_empty_plaintext_round_trips() -> None:
    body = encrypt_state(b"", KEY)
    assert len(body) == NONCE_SIZE + TAG_SIZE
    assert decrypt_state(body, KEY) == b""


def test_bad_key_and_nonce_sizes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_state(b"x", b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt_state(b"x" * 40, b"short")
    with pytest.raises(ValueError, match="nonce"):
        encrypt_state(b"x", KEY, nonce=b"123")


def test_decryption_error_is_a_value_error() -> None:
    assert issubclass(StateDecryptionError, ValueError)


@given(st.binary(max_size=2048), st.binary(min_size=32, max_size=32))
def test_round_trip_property(plaintext: bytes, key: bytes) -> None:
    assert decrypt_state(encrypt_state(plaintext, key), key) == plaintext


# -- ClientResolverState codec ---------------------------------------------------------------


def test_decode_matches_generated_code_packed() -> None:
    message = resolver_pb2.ClientResolverState(
        state=b"\x0a\x03abc", account="acct-1", log_destinations=[2, 1]
    )
    decoded = decode_client_resolver_state(message.SerializeToString())
    assert decoded.state == b"\x0a\x03abc"
    assert decoded.account == "acct-1"
    assert decoded.log_destinations == (2, 1)


def test_decode_unpacked_enums_and_unknown_fields() -> None:
    # field 4 as two separate varints (unpacked), plus unknown fields 3 (varint), 9 (fixed32),
    # 10 (fixed64) and 11 (bytes) that must be skipped.
    data = (
        b"\x0a\x02st"  # 1: state
        + b"\x18\x05"  # 3: varint (reserved / unknown)
        + b"\x12\x01a"  # 2: account
        + b"\x20\x02\x20\x01"  # 4: unpacked enums
        + b"\x4d\x01\x02\x03\x04"  # 9: fixed32
        + b"\x51"
        + bytes(8)  # 10: fixed64
        + b"\x5a\x00"  # 11: empty bytes
    )
    decoded = decode_client_resolver_state(data)
    assert (decoded.state, decoded.account, decoded.log_destinations) == (b"st", "a", (2, 1))


def test_encode_is_readable_by_generated_code() -> None:
    data = encode_client_resolver_state(b"\x01\x02", "acct", (2, 1))
    message = resolver_pb2.ClientResolverState.FromString(data)
    assert message.state == b"\x01\x02"
    assert message.account == "acct"
    assert list(message.log_destinations) == [2, 1]


@given(
    st.binary(max_size=300),
    st.text(max_size=40),
    st.lists(st.integers(min_value=0, max_value=5), max_size=4),
)
def test_codec_agrees_with_generated_code(state: bytes, account: str, dests: list[int]) -> None:
    ours = encode_client_resolver_state(state, account, dests)
    theirs = resolver_pb2.ClientResolverState(
        state=state, account=account, log_destinations=dests
    ).SerializeToString()
    assert ours == theirs
    decoded = decode_client_resolver_state(theirs)
    assert (decoded.state, decoded.account, decoded.log_destinations) == (
        state,
        account,
        tuple(dests),
    )


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00garbage",  # field number 0
        b"\x0a\x05ab",  # truncated length-delimited
        b"\x0a",  # truncated length
        b"\xff\xff\xff",  # truncated varint tag
        b"\x0b",  # group wire type
        b"\x12\x02\xff\xfe",  # account not UTF-8
        b"\x08\x01",  # state with varint wire type
        b"\x15\x00\x00\x00\x00",  # account with fixed32 wire type
        b"\x80" * 11,  # overlong varint
    ],
)
def test_decode_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(ProtoDecodeError):
        decode_client_resolver_state(garbage)


def test_ingest_wrapper_is_wire_identical_to_generated() -> None:
    batch = api_pb2.WriteFlagLogsRequest()
    batch.flag_resolve_info.add(flag="flags/a").variant_resolve_info.add(variant="v", count=3)
    raw = batch.SerializeToString()
    ours = encode_ingest_flag_logs_request("acct-9", raw)
    parsed = api_pb2.IngestFlagLogsRequest.FromString(ours)
    assert parsed.account_id == "acct-9"
    assert parsed.batch == batch
    generated = api_pb2.IngestFlagLogsRequest(account_id="acct-9", batch=batch)
    assert ours == generated.SerializeToString()


def test_ingest_wrapper_marks_empty_batch_present() -> None:
    parsed = api_pb2.IngestFlagLogsRequest.FromString(encode_ingest_flag_logs_request("a", b""))
    assert parsed.HasField("batch")
