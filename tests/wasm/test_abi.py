"""The hand-encoded ABI messages (confidence/_wasm/abi.py) against the generated protobuf code."""

from __future__ import annotations

from typing import Any

import pytest

from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._proto.confidence.wasm.v1 import abi_pb2
from confidence._wasm.abi import (
    ABI_VERSION,
    FlushedLogs,
    MaterializationMode,
    MaterializationRecord,
    ResolveRequest,
    ResolverError,
    ResolverErrorKind,
    ResolverInstance,
    WasmTrap,
    encode_resolve_call,
)
from confidence._wasm.protowire import encode_varint


@pytest.mark.parametrize(
    "request_",
    [
        ResolveRequest(flags=("flags/a",), context_json=b"{}", client_secret="s", apply=True),
        ResolveRequest(
            flags=("flags/a", "flags/b"),
            context_json=b'{"targeting_key":"\xc3\xa9' + b"x" * 300 + b'"}',
            client_secret="secret-\u00e9",
            apply=False,
            materialization_mode=MaterializationMode.COMPLETE,
            materializations=(
                MaterializationRecord("u", "m", "r", "v"),
                MaterializationRecord("u", "m"),
            ),
            skip_logging=True,
        ),
        ResolveRequest(flags=(), context_json=b"", client_secret="", apply=False),
    ],
)
@pytest.mark.parametrize("now_ms", [0, 1, 1_764_000_000_123, -5])
def test_hand_encoding_is_the_protobuf_message(request_: ResolveRequest, now_ms: int) -> None:
    decoded = abi_pb2.ResolveCall.FromString(encode_resolve_call(request_, now_ms))
    expected = abi_pb2.ResolveCall(
        flags=request_.flags,
        context_json=request_.context_json,
        client_secret=request_.client_secret,
        apply=request_.apply,
        now_unix_millis=now_ms,
        materialization_mode=int(request_.materialization_mode),
        materializations=[
            api_pb2.MaterializationRecord(
                unit=r.unit, materialization=r.materialization, rule=r.rule, variant=r.variant
            )
            for r in request_.materializations
        ],
        skip_logging=request_.skip_logging,
    )
    assert decoded == expected


# -- the other calls: Configure, SetState, FlushLogs and their results, by hand too -----------


class RecordingWasm:
    """A stand-in guest for one call: records the payload, answers `response`."""

    abi_version = ABI_VERSION

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.responses: list[bytes] = [
            b"\x00" + abi_pb2.ConfigureResult(resolver_version="r1").SerializeToString()
        ]

    def call(self, export: str, payload: bytes) -> bytes:
        self.calls.append((export, payload))
        return self.responses.pop(0)

    def bind(self, export: str) -> Any:
        return lambda payload: self.call(export, payload)


class FakeCompiled:
    def __init__(self, wasm: RecordingWasm) -> None:
        self.wasm = wasm

    def instantiate(self, **kwargs: Any) -> RecordingWasm:
        return self.wasm


@pytest.mark.parametrize(
    ("dedup", "no_exposures", "cap", "version"),
    [(True, False, 0, "1.2.3"), (False, True, 123_456, ""), (True, True, 2**32 - 1, "é")],
)
def test_configure_is_the_protobuf_message(
    dedup: bool, no_exposures: bool, cap: int, version: str
) -> None:
    wasm = RecordingWasm()
    instance = ResolverInstance(
        FakeCompiled(wasm),  # type: ignore[arg-type]
        sdk_version=version,
        enable_apply_dedup=dedup,
        disable_exposure_collection=no_exposures,
        max_pending_exposure_bytes=cap,
    )
    assert instance.resolver_version == "r1"
    export, payload = wasm.calls[0]
    sent = abi_pb2.Configure.FromString(payload)
    assert export == "cr_configure"
    expected = abi_pb2.Configure(
        rng_seed=sent.rng_seed,
        sdk=api_pb2.Sdk(id=api_pb2.SDK_ID_PYTHON_LOCAL_PROVIDER, version=version),
        enable_apply_dedup=dedup,
        disable_exposure_collection=no_exposures,
        max_pending_assigned_bytes=cap,
    )
    assert sent == expected


def _instance() -> tuple[ResolverInstance, RecordingWasm]:
    wasm = RecordingWasm()
    return ResolverInstance(FakeCompiled(wasm), sdk_version="v"), wasm  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [b"", b"\x0a\x03abc" * 1000])
@pytest.mark.parametrize("account", ["", "confidence-test"])
def test_set_state_round_trip(state: bytes, account: str) -> None:
    instance, wasm = _instance()
    flags = [
        abi_pb2.FlagDigest(name=f"flags/f-{i}", digest=(i * 2**61 + 7) % 2**64) for i in range(300)
    ]
    # An entry in another field order (digest first) and one with an unknown field: the
    # general decoder's cases.
    odd = abi_pb2.FlagDigest(name="flags/odd", digest=2**64 - 1).SerializeToString()
    odd = odd[-9:] + odd[:-9] + b"\x18\x05"
    result = abi_pb2.SetStateResult(flags=flags, segment_count=300, client_count=2)
    body = result.SerializeToString() + b"\x0a" + bytes([len(odd)]) + odd + b"\x22\x01z"
    wasm.responses.append(b"\x00" + body)
    summary = instance.set_state(state, account)
    assert abi_pb2.SetState.FromString(wasm.calls[-1][1]) == abi_pb2.SetState(
        state=state, account_id=account
    )
    want = {f.name: f.digest for f in flags} | {"flags/odd": 2**64 - 1}
    assert dict(summary.flag_digests) == want
    assert (summary.segment_count, summary.client_count) == (300, 2)


def test_a_malformed_answer_is_a_trap_and_an_error_answer_an_error() -> None:
    instance, wasm = _instance()
    wasm.responses.append(b"\x00\x0a\x40abc")  # a FlagDigest longer than the message
    with pytest.raises(WasmTrap, match="malformed"):
        instance.set_state(b"", "a")
    wasm.responses.append(b"\x01\x03bad state")  # ERROR, kind 3 (INVALID_STATE)
    with pytest.raises(ResolverError, match="bad state") as info:
        instance.set_state(b"", "a")
    assert info.value.kind is ResolverErrorKind.INVALID_STATE


@pytest.mark.parametrize("now_ms", [0, 1_764_000_000_123, -5])
@pytest.mark.parametrize("cap", [0, 4 << 20])
def test_flush_logs_round_trip(now_ms: int, cap: int) -> None:
    instance, wasm = _instance()
    answer = abi_pb2.FlushLogsResult(
        write_flag_logs_request=b"batch" * 100,
        more_pending=True,
        flag_assigned_count=7,
        dropped_flag_assigned=2**40,
        dropped_applied_flags=3,
    )
    wasm.responses.append(b"\x00" + answer.SerializeToString())
    flushed = instance.flush_logs(now_ms, max_assigned_bytes=cap)
    assert abi_pb2.FlushLogs.FromString(wasm.calls[-1][1]) == abi_pb2.FlushLogs(
        now_unix_millis=now_ms, max_assigned_bytes=cap
    )
    assert flushed == FlushedLogs(b"batch" * 100, True, 7, 2**40, 3)
    wasm.responses.append(b"\x00")  # everything at its default
    assert instance.flush_logs(1) == FlushedLogs(b"", False, 0, 0, 0)


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 2**31 - 1, 2**63 - 1, 2**64 - 1, -1, -5, -(2**31), -(2**63)]
)
def test_the_varint_encoder_matches_protobuf_for_every_int64_and_uint64(value: int) -> None:
    # FlushLogs.now_unix_millis is an int64, Configure.rng_seed an uint64 (field 1 of both).
    if value == 0:
        want = b"\x00"  # (protobuf omits a zero field)
    elif value >= 2**63:
        want = abi_pb2.Configure(rng_seed=value).SerializeToString()[1:]
    else:
        want = abi_pb2.FlushLogs(now_unix_millis=value).SerializeToString()[1:]
    assert encode_varint(value) == want
    assert len(encode_varint(value)) == (10 if value < 0 else len(want))


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_the_varint_encoder_refuses_what_no_field_holds(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)
