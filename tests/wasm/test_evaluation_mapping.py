"""The resolver answer -> FlagResolutionDetails mapping (protocol.md §6.4 table, §6.5).

Pure: builds `Resolved` values directly, so every row of the table is covered, including
reasons a real state cannot easily produce (ERROR, UNRECOGNIZED_TARGETING_RULE).
"""

from __future__ import annotations

from typing import Any

import pytest
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from confidence._evaluation import FlagKind, interpret, map_reason, parse_flag_key
from confidence._wasm.abi import Resolved, ResolvedFlag

VALUE = {
    "enabled": True,
    "label": "hi",
    "size": 42,
    "whole": 3.0,
    "ratio": 0.5,
    "obj": {"deep": {"x": 1}},
    "list": [1, 2],
    "nothing": None,
}


def resolved(
    *,
    flag: str = "flags/f",
    variant: str = "flags/f/variants/on",
    value: dict[str, Any] | None = None,
    reason: int = 1,
    empty: bool = False,
) -> Resolved:
    flags = (
        ()
        if empty
        else (
            ResolvedFlag(
                flag=flag,
                variant=variant,
                value=VALUE if value is None and variant else value,
                reason=reason,
                should_apply=True,
                assignment_origin="flags/f/rules/r1" if variant else "",
                assignment_id="a-1" if variant else "",
            ),
        )
    )
    return Resolved(flags=flags, resolve_id="rid", writes=())


def run(key: str, kind: FlagKind, default: Any, res: Resolved | None = None) -> Any:
    return interpret(res or resolved(), parse_flag_key(key), kind, default)


def test_parse_flag_key() -> None:
    lookup = parse_flag_key("flag.a.b")
    assert (lookup.name, lookup.resource, lookup.path, lookup.path_text) == (
        "flag",
        "flags/flag",
        ("a", "b"),
        "a.b",
    )
    assert parse_flag_key("flag").path == ()


@pytest.mark.parametrize(
    ("key", "kind", "default", "expected"),
    [
        ("f.enabled", FlagKind.BOOLEAN, False, True),
        ("f.label", FlagKind.STRING, "", "hi"),
        ("f.size", FlagKind.INTEGER, 0, 42),
        ("f.whole", FlagKind.INTEGER, 0, 3),  # whole float -> int
        ("f.size", FlagKind.FLOAT, 0.0, 42.0),  # int -> float
        ("f.ratio", FlagKind.FLOAT, 0.0, 0.5),
        ("f.obj", FlagKind.OBJECT, {}, {"deep": {"x": 1}}),
        ("f.obj.deep.x", FlagKind.INTEGER, 0, 1),
        ("f", FlagKind.OBJECT, {}, VALUE),
    ],
)
def test_success(key: str, kind: FlagKind, default: Any, expected: Any) -> None:
    details = run(key, kind, default)
    assert details.value == expected
    assert type(details.value) is type(expected)
    assert details.error_code is None
    assert details.reason == Reason.TARGETING_MATCH
    assert details.variant == "flags/f/variants/on"
    assert details.flag_metadata == {
        "resolveId": "rid",
        "rule": "flags/f/rules/r1",
        "assignmentId": "a-1",
    }


@pytest.mark.parametrize(
    ("key", "kind", "default", "type_name"),
    [
        ("f", FlagKind.BOOLEAN, False, "bool"),  # bare key: the value is an object
        ("f.label", FlagKind.BOOLEAN, False, "bool"),
        ("f.size", FlagKind.STRING, "d", "str"),
        ("f.ratio", FlagKind.INTEGER, 7, "int"),
        ("f.enabled", FlagKind.INTEGER, 7, "int"),  # bool is not an int here
        ("f.enabled", FlagKind.FLOAT, 1.0, "float"),
        ("f.list", FlagKind.OBJECT, {"d": 1}, "dict"),  # lists are rejected
        ("f.label", FlagKind.OBJECT, {"d": 1}, "dict"),
    ],
)
def test_type_mismatch(key: str, kind: FlagKind, default: Any, type_name: str) -> None:
    details = run(key, kind, default)
    assert details.value == default
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    assert details.error_message == f"Value is not {type_name}"


def test_flag_not_found() -> None:
    details = run("f", FlagKind.OBJECT, {"d": 1}, resolved(empty=True))
    assert (details.value, details.reason, details.error_code, details.error_message) == (
        {"d": 1},
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
        "Flag 'f' not found",
    )


def test_unexpected_flag_returned() -> None:
    details = run("f", FlagKind.OBJECT, {}, resolved(flag="flags/other"))
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.error_message == "Unexpected flag returned"


@pytest.mark.parametrize("key", ["f.missing", "f.label.x", "f.obj.deep.x.y", "f.obj.nope"])
def test_path_not_found(key: str) -> None:
    details = run(key, FlagKind.STRING, "d")
    path = key.split(".", 1)[1]
    assert details.value == "d"
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.error_message == f"Path '{path}' not found in flag 'f'"


def test_null_value_returns_default_with_variant() -> None:
    details = run("f.nothing", FlagKind.FLOAT, 2)
    assert details.value == 2.0 and isinstance(details.value, float)  # lossless conversion
    assert details.error_code is None
    assert details.reason == Reason.TARGETING_MATCH
    assert details.variant == "flags/f/variants/on"


def test_materialization_not_supported() -> None:
    details = run("f", FlagKind.OBJECT, {}, resolved(variant="", reason=8))
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.GENERAL
    assert details.error_message == (
        "Flag 'f' requires materializations. Configure a materialization store."
    )


@pytest.mark.parametrize(
    ("reason", "expected_reason"),
    [(2, Reason.DEFAULT), (4, Reason.DISABLED), (1, Reason.TARGETING_MATCH), (0, Reason.UNKNOWN)],
)
def test_no_variant_returns_default_with_mapped_reason(reason: int, expected_reason: str) -> None:
    details = run("f.size", FlagKind.INTEGER, 5, resolved(variant="", reason=reason))
    assert details.value == 5
    assert details.reason == expected_reason
    assert details.error_code is None
    assert details.variant is None


def test_no_variant_default_is_converted_only_losslessly() -> None:
    assert run("f", FlagKind.FLOAT, 1, resolved(variant="", reason=2)).value == 1.0
    assert run("f", FlagKind.INTEGER, 2.0, resolved(variant="", reason=2)).value == 2
    # Not convertible: the caller's own default comes back untouched, with no error.
    details = run("f", FlagKind.INTEGER, 1.5, resolved(variant="", reason=2))
    assert (details.value, details.error_code) == (1.5, None)


def test_targeting_key_error_is_invalid_context() -> None:
    details = run("f", FlagKind.BOOLEAN, True, resolved(variant="", reason=5))
    assert details.value is True
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.INVALID_CONTEXT
    assert "targeting key" in (details.error_message or "")


@pytest.mark.parametrize("reason", [6, 7])
def test_resolver_error_reasons_are_general(reason: int) -> None:
    details = run("f", FlagKind.BOOLEAN, True, resolved(variant="", reason=reason))
    assert (details.value, details.reason, details.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.GENERAL,
    )
    assert "'f'" in (details.error_message or "")


def test_reason_table() -> None:
    assert [map_reason(n) for n in range(12)] == [
        Reason.UNKNOWN,
        Reason.TARGETING_MATCH,
        Reason.DEFAULT,
        Reason.UNKNOWN,
        Reason.DISABLED,
        Reason.ERROR,
        Reason.ERROR,
        Reason.ERROR,
        Reason.ERROR,
        Reason.UNKNOWN,
        Reason.UNKNOWN,
        Reason.UNKNOWN,
    ]
