"""The hand-encoded ResolveCall and the JSON answer of ABI 2 (confidence/_abi.py)."""

from __future__ import annotations

import pytest

from confidence._abi import (
    MaterializationMode,
    MaterializationRecord,
    ResolveRequest,
    encode_resolve_call,
)
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._proto.confidence.wasm.v1 import abi_pb2


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
