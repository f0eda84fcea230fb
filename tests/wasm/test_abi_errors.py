"""Typed resolver errors (ABI 3): the guest's error kind crosses the ABI as a code and
becomes `ResolverError.kind`, through the real resolver.wasm. Nothing here reads a message
to learn what failed."""

from __future__ import annotations

import pickle
from typing import cast

import pytest
from provider_support import REPO, requires_wasm

from confidence._proto.confidence.flags.admin.v1 import resolver_pb2
from confidence._wasm.abi import (
    _KIND_BY_CODE,
    ABI_VERSION,
    MaterializationMode,
    ResolveRequest,
    ResolverError,
    ResolverErrorKind,
    ResolverInstance,
    WasmTrap,
)
from confidence._wasm.engine import CompiledResolver
from confidence.testing.state_builder import StateBuilder, rollout, with_materialization

SECRET = "abi-errors-secret"
ACCOUNT = "abi-errors"

pytestmark = requires_wasm


@pytest.fixture(scope="module")
def compiled() -> CompiledResolver:
    return CompiledResolver.load()


@pytest.fixture
def instance(compiled: CompiledResolver) -> ResolverInstance:
    return ResolverInstance(compiled, sdk_version="test")


def _builder() -> StateBuilder:
    return StateBuilder(account=ACCOUNT).client(SECRET).segment("segments/everyone")


def _good_state() -> bytes:
    return (
        _builder()
        .flag(
            "flags/color",
            variants={"red": {"color": "red"}},
            rules=[rollout("segments/everyone", {"red": 100})],
        )
        .build()
    )


def _request(flags: tuple[str, ...] = ("flags/color",), **overrides: object) -> ResolveRequest:
    fields: dict[str, object] = {
        "flags": flags,
        "context_json": b'{"targeting_key":"u1"}',
        "client_secret": SECRET,
        "apply": False,
    }
    fields.update(overrides)
    return ResolveRequest(**fields)  # type: ignore[arg-type]


def _kind(call: object) -> ResolverErrorKind:
    assert callable(call)
    with pytest.raises(ResolverError) as info:
        call()
    return info.value.kind


def test_the_python_table_names_every_guest_code_once() -> None:
    """resolver/src/error.rs numbers the kinds 1..=8; the host maps each to its own kind."""
    assert ABI_VERSION == 3
    assert sorted(_KIND_BY_CODE) == list(range(1, 9))
    assert len(set(_KIND_BY_CODE.values())) == len(_KIND_BY_CODE)
    host_only = set(ResolverErrorKind) - set(_KIND_BY_CODE.values())
    assert host_only == {
        ResolverErrorKind.INCOMPATIBLE_RESOLVER,
        ResolverErrorKind.RESOLVER_UNAVAILABLE,
    }


def test_the_table_matches_the_rust_enum() -> None:
    """Read the codes out of the Rust source, so the two sides cannot drift apart."""
    source = (REPO / "resolver" / "src" / "error.rs").read_text()
    enum_body = source.split("pub enum ErrorKind {", 1)[1].split("\n}", 1)[0]
    rust: dict[int, str] = {}
    for line in enum_body.splitlines():
        line = line.strip().rstrip(",")
        if "=" in line and not line.startswith("//"):
            name, code = (part.strip() for part in line.split("="))
            rust[int(code)] = name
    python = {
        code: "".join(word.title() for word in kind.name.split("_"))
        for code, kind in _KIND_BY_CODE.items()
    }
    assert rust == python


def test_no_state(instance: ResolverInstance) -> None:
    assert _kind(lambda: instance.resolve(_request())) is ResolverErrorKind.NO_STATE


@pytest.mark.parametrize("bad", [b"\xff\x00garbage" * 10, _good_state()[: len(_good_state()) // 2]])
def test_invalid_state_keeps_the_previous_one(instance: ResolverInstance, bad: bytes) -> None:
    instance.set_state(_good_state(), ACCOUNT)
    assert _kind(lambda: instance.set_state(bad, ACCOUNT)) is ResolverErrorKind.INVALID_STATE
    resolved = instance.resolve(_request())
    assert [f.variant for f in resolved.flags] == ["red"]  # type: ignore[union-attr]


def test_an_undecodable_bitset_is_an_invalid_state(instance: ResolverInstance) -> None:
    state = resolver_pb2.ResolverState.FromString(
        _builder().segment("segments/broken", bits=[1, 2, 3]).build()
    )
    (packed,) = [b for b in state.bitsets if b.segment == "segments/broken"]
    packed.gzipped_bitset = b"\x1f\x8b\x08\x00" + b"\x00" * 20  # a gzip header, no stream
    with pytest.raises(ResolverError) as info:
        instance.set_state(state.SerializeToString(), ACCOUNT)
    assert info.value.kind is ResolverErrorKind.INVALID_STATE


def test_unknown_client_secret_never_echoes_it(instance: ResolverInstance) -> None:
    instance.set_state(_good_state(), ACCOUNT)
    with pytest.raises(ResolverError) as info:
        instance.resolve(_request(client_secret="sk-do-not-echo-me"))
    assert info.value.kind is ResolverErrorKind.UNKNOWN_CLIENT_SECRET
    assert "sk-do-not-echo-me" not in str(info.value)
    assert "do-not-echo" not in repr(info.value)


@pytest.mark.parametrize(
    "context_json",
    [
        b'{"a":' + b"[" * 200 + b"]" * 200 + b"}",  # deeper than the resolver reads
        b"[1, 2]",  # not an object
        b'{"a": 1',  # truncated
        b'{"s": "\xff"}',  # invalid UTF-8 (a context error like any other)
    ],
)
def test_invalid_context(instance: ResolverInstance, context_json: bytes) -> None:
    instance.set_state(_good_state(), ACCOUNT)
    kind = _kind(lambda: instance.resolve(_request(context_json=context_json)))
    assert kind is ResolverErrorKind.INVALID_CONTEXT


def test_too_many_flags(instance: ResolverInstance) -> None:
    builder = _builder()
    for i in range(1001):
        builder.flag(
            f"flags/f{i}",
            variants={"on": {"on": True}},
            rules=[rollout("segments/everyone", {"on": 100})],
        )
    instance.set_state(builder.build(), ACCOUNT)
    assert _kind(lambda: instance.resolve(_request(flags=()))) is ResolverErrorKind.TOO_MANY_FLAGS


@pytest.mark.parametrize(
    "rule",
    [
        rollout("segments/everyone", {"missing": 100}),  # a variant the flag lacks
        rollout("segments/everyone", {"on": 5}, bucket_count=0),  # nothing to bucket into
    ],
)
def test_invalid_flag(instance: ResolverInstance, rule: dict[str, object]) -> None:
    state = _builder().flag("flags/broken", variants={"on": {"on": True}}, rules=[rule])
    instance.set_state(state.build(), ACCOUNT)
    kind = _kind(lambda: instance.resolve(_request(flags=("flags/broken",))))
    assert kind is ResolverErrorKind.INVALID_FLAG


def test_duplicate_materialization_write(instance: ResolverInstance) -> None:
    # Two flags whose rules share a name and write materialization: one unit would get
    # two records for the same (unit, materialization, rule).
    rule = with_materialization(
        rollout("segments/everyone", {"on": 100}, name="shared-rule"), write="materializations/m"
    )
    state = (
        _builder()
        .flag("flags/w1", variants={"on": {"on": True}}, rules=[rule])
        .flag("flags/w2", variants={"on": {"on": True}}, rules=[rule])
    )
    instance.set_state(state.build(), ACCOUNT)
    mode = MaterializationMode.COMPLETE
    instance.resolve(_request(flags=("flags/w1",), materialization_mode=mode))
    both = _request(flags=("flags/w1", "flags/w2"), materialization_mode=mode)
    kind = _kind(lambda: instance.resolve(both))
    assert kind is ResolverErrorKind.DUPLICATE_MATERIALIZATION_WRITE


def test_invalid_request(instance: ResolverInstance) -> None:
    instance.set_state(_good_state(), ACCOUNT)
    unknown_mode = cast(MaterializationMode, 99)
    kind = _kind(lambda: instance.resolve_flag("flags/color", SECRET, False, unknown_mode, b"{}"))
    assert kind is ResolverErrorKind.INVALID_REQUEST


def test_the_kind_survives_pickling() -> None:
    error = ResolverError(ResolverErrorKind.INVALID_CONTEXT, "invalid context JSON at byte 3")
    back = pickle.loads(pickle.dumps(error))
    assert (back.kind, str(back)) == (error.kind, str(error))


@pytest.mark.parametrize(
    ("response", "trap"),
    [
        (b"", "empty response"),
        (b"\x07rest", "unknown status 7"),
        (b"\x01", "without an error kind"),
        (b"\x01\xfemessage", "unknown error kind 254"),
    ],
)
def test_a_response_outside_the_format_is_a_trap(response: bytes, trap: str) -> None:
    """An ERROR the host cannot type means a guest speaking another ABI: the pool retires
    the instance (WasmTrap) instead of guessing a kind."""
    with pytest.raises(WasmTrap, match=trap):
        ResolverInstance._call_failed("cr_resolve", response)


def test_each_kind_maps_from_its_code() -> None:
    for code, kind in _KIND_BY_CODE.items():
        with pytest.raises(ResolverError) as info:
            ResolverInstance._call_failed("cr_resolve", bytes((1, code)) + b"text")
        assert info.value.kind is kind and str(info.value) == "text"


def test_the_provider_answers_from_the_kind_not_the_wording() -> None:
    from openfeature.exception import ErrorCode

    from confidence import ConfidenceProvider

    provider = ConfidenceProvider("some-secret")  # starts nothing
    reworded = ResolverError(ResolverErrorKind.INVALID_CONTEXT, "the context is unreadable")
    assert provider._failure("d", reworded).error_code == ErrorCode.INVALID_CONTEXT
    lookalike = ResolverError(ResolverErrorKind.INVALID_FLAG, "invalid context JSON, says the text")
    assert provider._failure("d", lookalike).error_code == ErrorCode.GENERAL
