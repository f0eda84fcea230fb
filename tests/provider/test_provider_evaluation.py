"""Every row of the evaluation table (protocol.md §6.4) through the real resolver, on the
sync methods (from a plain thread) and their async twins (inline on the event loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from provider_support import make_provider, requires_wasm, sample_state, variant

from confidence import ConfidenceProvider
from confidence.testing.emulator import ConfidenceEmulator
from confidence.testing.state_builder import StateBuilder

USER = EvaluationContext("user-1")

pytestmark = requires_wasm

_CYCLE: dict[str, Any] = {}
_CYCLE["self"] = _CYCLE


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    key: str
    default: Any
    value: Any
    reason: str
    error_code: ErrorCode | None = None
    message: str | None = None
    variant: str | None = None
    ctx: EvaluationContext | None = field(default_factory=lambda: ctx("user-1"))


def ctx(key: str | None = "user-1", **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=key, attributes=attributes)


ON = variant("feature", "blue")
FULL_VALUE = {
    "enabled": True,
    "color": "blue",
    "size": 42,
    "ratio": 0.25,
    "nested": {"deep": {"x": 7}},
    "items": [1, 2],
    "nothing": None,
}
MATCH = Reason.TARGETING_MATCH
ERROR = Reason.ERROR

CASES = [
    Case("bool", "boolean", "feature.enabled", False, True, MATCH, variant=ON),
    Case("str", "string", "feature.color", "", "blue", MATCH, variant=ON),
    Case("int", "integer", "feature.size", 0, 42, MATCH, variant=ON),
    Case("int->float", "float", "feature.size", 0.0, 42.0, MATCH, variant=ON),
    Case("float", "float", "feature.ratio", 0.0, 0.25, MATCH, variant=ON),
    Case("object", "object", "feature.nested", {}, {"deep": {"x": 7}}, MATCH, variant=ON),
    Case("deep path", "integer", "feature.nested.deep.x", 0, 7, MATCH, variant=ON),
    Case("whole flag", "object", "feature", {}, FULL_VALUE, MATCH, variant=ON),
    Case(
        "null value -> default",
        "string",
        "feature.nothing",
        "dflt",
        "dflt",
        MATCH,
        variant=ON,
    ),
    Case(
        "unknown flag",
        "boolean",
        "nope",
        True,
        True,
        ERROR,
        ErrorCode.FLAG_NOT_FOUND,
        "Flag 'nope' not found",
    ),
    Case(
        "missing path",
        "string",
        "feature.missing",
        "d",
        "d",
        ERROR,
        ErrorCode.FLAG_NOT_FOUND,
        "Path 'missing' not found in flag 'feature'",
    ),
    Case(
        "path through a non-object",
        "string",
        "feature.color.x",
        "d",
        "d",
        ERROR,
        ErrorCode.FLAG_NOT_FOUND,
        "Path 'color.x' not found in flag 'feature'",
    ),
    Case(
        "bool on the bare flag",
        "boolean",
        "feature",
        False,
        False,
        ERROR,
        ErrorCode.TYPE_MISMATCH,
        "Value is not bool",
    ),
    Case(
        "fraction as int",
        "integer",
        "feature.ratio",
        1,
        1,
        ERROR,
        ErrorCode.TYPE_MISMATCH,
        "Value is not int",
    ),
    Case(
        "bool as int",
        "integer",
        "feature.enabled",
        1,
        1,
        ERROR,
        ErrorCode.TYPE_MISMATCH,
        "Value is not int",
    ),
    Case(
        "number as str",
        "string",
        "feature.size",
        "d",
        "d",
        ERROR,
        ErrorCode.TYPE_MISMATCH,
        "Value is not str",
    ),
    Case(
        "list as object",
        "object",
        "feature.items",
        {"d": 1},
        {"d": 1},
        ERROR,
        ErrorCode.TYPE_MISMATCH,
        "Value is not dict",
    ),
    Case("no segment match", "boolean", "swedish.enabled", False, False, Reason.DEFAULT),
    Case(
        "segment match",
        "boolean",
        "swedish.enabled",
        False,
        True,
        MATCH,
        variant=variant("swedish", "yes"),
        ctx=ctx(country="SE"),
    ),
    Case(
        "targeting key is a struct",
        "string",
        "split.group",
        "d",
        "d",
        ERROR,
        ErrorCode.INVALID_CONTEXT,
        ctx=ctx(None, targeting_key={"a": 1}),
    ),
    Case(
        "targeting key is a bool",
        "string",
        "split.group",
        "d",
        "d",
        ERROR,
        ErrorCode.INVALID_CONTEXT,
        ctx=ctx(None, targeting_key=True),
    ),
    Case(
        "context with a cycle",
        "string",
        "split.group",
        "d",
        "d",
        ERROR,
        ErrorCode.INVALID_CONTEXT,
        ctx=ctx(loop=_CYCLE),
    ),
    Case(
        "materialization needed",
        "boolean",
        "sticky.enabled",
        False,
        False,
        ERROR,
        ErrorCode.GENERAL,
        "Flag 'sticky' requires materializations. Configure a materialization store.",
        ctx=ctx("user-1"),
    ),
    Case(
        "empty flag name",
        "boolean",
        ".enabled",
        False,
        False,
        ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    ),
]


def check(case: Case, details: FlagResolutionDetails[Any]) -> None:
    assert details.value == case.value
    assert type(details.value) is type(case.value)
    assert details.reason == case.reason
    assert details.error_code == case.error_code
    if case.message is not None:
        assert details.error_message == case.message
    if case.error_code is None:
        assert details.error_message is None
    assert details.variant == case.variant


@pytest.fixture(scope="module")
def emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator().run_in_thread() as emu:
        emu.set_state(sample_state().build())
        yield emu


@pytest.fixture(scope="module")
def sync_provider(emulator: ConfidenceEmulator) -> Iterator[ConfidenceProvider]:
    provider = make_provider(emulator)
    provider.initialize(EvaluationContext())
    yield provider
    provider.shutdown()


@pytest.fixture
async def async_provider(emulator: ConfidenceEmulator) -> AsyncIterator[ConfidenceProvider]:
    async with make_provider(emulator) as provider:
        yield provider


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sync(sync_provider: ConfidenceProvider, case: Case) -> None:
    method = getattr(sync_provider, f"resolve_{case.method}_details")
    check(case, method(flag_key=case.key, default_value=case.default, evaluation_context=case.ctx))


@pytest.mark.anyio
async def test_async(async_provider: ConfidenceProvider) -> None:
    # One provider for all rows (starting one per row would dominate the run time).
    for case in CASES:
        method = getattr(async_provider, f"resolve_{case.method}_details_async")
        details = await method(
            flag_key=case.key, default_value=case.default, evaluation_context=case.ctx
        )
        check(case, details)


@pytest.mark.anyio
async def test_split_assigns_by_targeting_key(async_provider: ConfidenceProvider) -> None:
    groups = set()
    for i in range(40):
        details = await async_provider.resolve_string_details_async(
            "split.group", "d", ctx(f"user-{i}")
        )
        assert details.error_code is None
        assert details.variant == variant("split", details.value)
        groups.add(details.value)
        # Deterministic: the same unit always gets the same group.
        again = async_provider.resolve_string_details("split.group", "d", ctx(f"user-{i}"))
        assert again.value == details.value
    assert groups == {"a", "b"}


def test_flag_metadata(sync_provider: ConfidenceProvider) -> None:
    details = sync_provider.resolve_boolean_details("feature.enabled", False, USER)
    assert details.flag_metadata["rule"].startswith("flags/feature/rules/")
    assert details.flag_metadata["resolveId"]
    assert "assignmentId" in details.flag_metadata


def test_unknown_client_secret_is_general(tmp_path: Path) -> None:
    # A state that does not know our secret: the resolver refuses, without echoing it.
    state = tmp_path / "state.pb"
    state.write_bytes(sample_state(secret="someone-else").build_client_state())
    provider = ConfidenceProvider("my-own-secret", state_file=state, offline=True)
    provider.initialize(EvaluationContext())
    try:
        details = provider.resolve_boolean_details("feature.enabled", False, USER)
        assert (details.value, details.reason, details.error_code) == (
            False,
            Reason.ERROR,
            ErrorCode.GENERAL,
        )
        assert "my-own-secret" not in (details.error_message or "")
    finally:
        provider.shutdown()


def test_object_flag_value_kinds_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state.pb"
    builder = (
        StateBuilder(account="acct")
        .client("s")
        .segment("segments/all")
        .flag(
            "flags/kinds",
            variants={"flags/kinds/variants/v": {"i": 1, "f": 1.5, "neg": -3, "big": 2**40}},
            rules=[
                {
                    "segment": "segments/all",
                    "enabled": True,
                    "assignmentSpec": {
                        "bucketCount": 1,
                        "assignments": [
                            {
                                "assignmentId": "x",
                                "variant": {"variant": "flags/kinds/variants/v"},
                                "bucketRanges": [{"lower": 0, "upper": 1}],
                            }
                        ],
                    },
                }
            ],
        )
    )
    state.write_bytes(builder.build_client_state())
    provider = ConfidenceProvider("s", state_file=state, offline=True)
    provider.initialize(EvaluationContext())
    try:
        assert provider.resolve_integer_details("kinds.i", 0, USER).value == 1
        assert provider.resolve_integer_details("kinds.neg", 0, USER).value == -3
        assert provider.resolve_integer_details("kinds.big", 0, USER).value == 2**40
        assert provider.resolve_float_details("kinds.i", 0.0, USER).value == 1.0
        assert provider.resolve_float_details("kinds.f", 0.0, USER).value == 1.5
    finally:
        provider.shutdown()
