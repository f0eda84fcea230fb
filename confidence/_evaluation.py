"""From a flag key and a resolver answer to an OpenFeature `FlagResolutionDetails`.

One job: the pure, I/O-free half of an evaluation (protocol.md §6.4 steps 2 and 6, §6.5),
shared by the sync and async resolve methods. Nothing here raises for bad data: every
outcome, including errors, is a `FlagResolutionDetails` carrying the caller's default.

Decisions beyond the spec's baseline table (protocol.md §6.4), each deliberate:
- A resolver reason that maps to OpenFeature `ERROR` always carries an error code, because
  an ERROR reason without a code is invisible to error hooks and to `raise_for_error()`:
  - TARGETING_KEY_ERROR -> `INVALID_CONTEXT`. The targeting key is present but has a bad
    type or length; `TARGETING_KEY_MISSING` would mislead (a *missing* key is no error
    in Confidence, it resolves NO_SEGMENT_MATCH or a full rollout).
  - ERROR / UNRECOGNIZED_TARGETING_RULE -> `GENERAL` with a message naming the flag.
  (The official provider returns reason ERROR with no code here.)
- When the default is returned *without* an error (no match, archived, value null), it is
  converted where that is lossless (int -> float for float flags, a whole float -> int for
  integer flags) so the SDK's own type check accepts it; otherwise it is returned as is.
  (The official provider type-checks the default and can turn a no-match into a
  TYPE_MISMATCH about the caller's own default; we do not.)
- `flag_metadata` carries `resolveId`, and `rule`/`assignmentId` when the resolver reports
  them: cheap strings that let users join an evaluation to Confidence's exposure logs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

if TYPE_CHECKING:
    from confidence._wasm.abi import Resolved

__all__ = [
    "FlagKind",
    "FlagLookup",
    "error_details",
    "interpret",
    "interpret_row",
    "parse_flag_key",
]

# ResolveReason numbers (resolve.md §7).
_MATCH: Final = 1
_NO_SEGMENT_MATCH: Final = 2
_FLAG_ARCHIVED: Final = 4
_TARGETING_KEY_ERROR: Final = 5
_ERROR: Final = 6
_UNRECOGNIZED_TARGETING_RULE: Final = 7
_MATERIALIZATION_NOT_SUPPORTED: Final = 8

_REASONS: Final[Mapping[int, str]] = {
    _MATCH: Reason.TARGETING_MATCH,
    _NO_SEGMENT_MATCH: Reason.DEFAULT,
    _FLAG_ARCHIVED: Reason.DISABLED,
    _TARGETING_KEY_ERROR: Reason.ERROR,
    _ERROR: Reason.ERROR,
    _UNRECOGNIZED_TARGETING_RULE: Reason.ERROR,
    _MATERIALIZATION_NOT_SUPPORTED: Reason.ERROR,
}


#: FlagResolutionDetails takes (value, error_code, error_message, reason, variant,
#: flag_metadata) positionally: ~40 % cheaper than keywords on the hot path. Checked, so
#: an SDK that reorders its fields gets the keyword form.
_POSITIONAL: Final = [f.name for f in fields(FlagResolutionDetails)][:6] == [
    "value",
    "error_code",
    "error_message",
    "reason",
    "variant",
    "flag_metadata",
]


def map_reason(reason: int) -> str:
    """Resolver `ResolveReason` number -> OpenFeature reason (protocol.md §6.5)."""
    return _REASONS.get(reason, Reason.UNKNOWN)


class FlagKind(enum.Enum):
    """The five OpenFeature flag types; `value` is the name used in TYPE_MISMATCH messages."""

    BOOLEAN = "bool"
    STRING = "str"
    INTEGER = "int"
    FLOAT = "float"
    OBJECT = "dict"


_MISMATCH: Final = object()


def _convert(kind: FlagKind, value: Any) -> Any:  # Any: flag values
    """The flag value as `kind`, or `_MISMATCH`. bool is never a number here."""
    if kind is FlagKind.BOOLEAN:
        return value if isinstance(value, bool) else _MISMATCH
    if kind is FlagKind.STRING:
        return value if isinstance(value, str) else _MISMATCH
    if kind is FlagKind.INTEGER:
        if isinstance(value, bool):
            return _MISMATCH
        if isinstance(value, int):
            return value
        # Struct numbers are doubles: an integer flag's 42 may arrive as 42.0.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return _MISMATCH
    if kind is FlagKind.FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _MISMATCH
    return value if isinstance(value, dict) else _MISMATCH


def _lossless_default(kind: FlagKind, default: Any) -> Any:  # Any: flag values
    converted = _convert(kind, default)
    return default if converted is _MISMATCH else converted


@dataclass(frozen=True, slots=True)
class FlagLookup:
    """A parsed flag key: `name.a.b` selects `a.b` inside flag `name`'s value."""

    name: str
    resource: str  # "flags/<name>", as the resolver names flags
    path: tuple[str, ...]
    path_text: str


@lru_cache(maxsize=4096)
def parse_flag_key(flag_key: str) -> FlagLookup:
    """Split once on the first dot (protocol.md §6.4 step 2). Cached: keys repeat."""
    name, _, rest = flag_key.partition(".")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            name = ""  # a lone surrogate is in no flag name (protobuf could not even send it)
    path = tuple(rest.split(".")) if rest else ()
    return FlagLookup(name=name, resource=f"flags/{name}", path=path, path_text=rest)


#: What `select_path` returns when the key's path is not in the flag value.
PATH_NOT_FOUND: Final = object()


def select_path(value: Any, lookup: FlagLookup) -> Any:  # Any: JSON values
    """The property at `lookup.path` inside a flag value, or `PATH_NOT_FOUND`."""
    for step in lookup.path:
        if not isinstance(value, dict) or step not in value:
            return PATH_NOT_FOUND
        value = value[step]
    return value


# Any (here and below): a flag value or the caller's default, of the evaluation's type.
def path_not_found(default: Any, lookup: FlagLookup) -> FlagResolutionDetails[Any]:
    """The FLAG_NOT_FOUND answer for a key whose path is not in the flag's value."""
    return error_details(
        default,
        ErrorCode.FLAG_NOT_FOUND,
        f"Path '{lookup.path_text}' not found in flag '{lookup.name}'",
    )


def error_details(default: Any, code: ErrorCode, message: str) -> FlagResolutionDetails[Any]:
    """The caller's default with reason ERROR, an error code and a message."""
    return FlagResolutionDetails(
        value=default, reason=Reason.ERROR, error_code=code, error_message=message
    )


def _materializations_message(name: str) -> str:
    return f"Flag '{name}' requires materializations. Configure a materialization store."


def interpret(
    resolved: Resolved,
    lookup: FlagLookup,
    kind: FlagKind,
    default: Any,  # Any: flag values
) -> FlagResolutionDetails[Any]:  # Any: flag values
    """Map the resolver's answer for one flag to OpenFeature (protocol.md §6.4 step 6)."""
    flags = resolved.flags
    return interpret_row(flags[0] if flags else None, resolved.resolve_id, lookup, kind, default)


def interpret_row(
    flag: Sequence[Any] | None,  # Any: flag values
    resolve_id: str,
    lookup: FlagLookup,
    kind: FlagKind,
    default: Any,  # Any: flag values
) -> FlagResolutionDetails[Any]:  # Any: flag values
    """`interpret()` of one flag's row: a `ResolvedFlag` or the guest's JSON row, whose
    fields are (flag, variant, value, reason, should_apply, rule, assignment_id)."""
    if flag is None:
        return error_details(default, ErrorCode.FLAG_NOT_FOUND, f"Flag '{lookup.name}' not found")
    if flag[0] != lookup.resource:
        return error_details(default, ErrorCode.FLAG_NOT_FOUND, "Unexpected flag returned")

    reason = flag[3]
    if reason == _MATERIALIZATION_NOT_SUPPORTED:
        return error_details(default, ErrorCode.GENERAL, _materializations_message(lookup.name))

    variant = flag[1]
    if not variant:
        if reason == _TARGETING_KEY_ERROR:
            return error_details(
                default,
                ErrorCode.INVALID_CONTEXT,
                f"Flag '{lookup.name}': the targeting key in the evaluation context is "
                "invalid (it must be a string or a whole number of at most 100 characters)",
            )
        if reason == _UNRECOGNIZED_TARGETING_RULE:
            return error_details(
                default,
                ErrorCode.GENERAL,
                f"Flag '{lookup.name}' uses a targeting rule this resolver does not recognize",
            )
        if reason == _ERROR:
            return error_details(
                default, ErrorCode.GENERAL, f"Flag '{lookup.name}' could not be resolved"
            )
        return FlagResolutionDetails(
            value=_lossless_default(kind, default),
            reason=map_reason(reason),
            flag_metadata=_metadata(resolve_id, flag[5], flag[6]),
        )

    value: Any = flag[2]  # Any: a JSON value, checked against `kind` below
    if lookup.path:  # (most keys have none: they skip the call)
        value = select_path(value, lookup)
        if value is PATH_NOT_FOUND:
            return path_not_found(default, lookup)

    # _metadata(), inlined.
    metadata: dict[str, str] = {}
    if resolve_id:
        metadata["resolveId"] = resolve_id
    rule = flag[5]
    if rule:
        metadata["rule"] = rule
    assignment_id = flag[6]
    if assignment_id:
        metadata["assignmentId"] = assignment_id
    if value is None:
        # The variant leaves this property unset: the caller's default, still attributed
        # to the variant that was assigned.
        return FlagResolutionDetails(
            value=_lossless_default(kind, default),
            reason=map_reason(reason),
            variant=variant,
            flag_metadata=metadata,
        )
    if kind is FlagKind.BOOLEAN:
        converted = value if value is True or value is False else _MISMATCH
    else:
        converted = _convert(kind, value)
    if converted is _MISMATCH:
        return error_details(default, ErrorCode.TYPE_MISMATCH, f"Value is not {kind.value}")
    if _POSITIONAL:
        return FlagResolutionDetails(
            converted, None, None, _REASONS.get(reason, Reason.UNKNOWN), variant, metadata
        )
    return FlagResolutionDetails(
        value=converted, reason=map_reason(reason), variant=variant, flag_metadata=metadata
    )


def _metadata(resolve_id: str, rule: str, assignment_id: str) -> dict[str, str]:
    meta: dict[str, str] = {}
    if resolve_id:
        meta["resolveId"] = resolve_id
    if rule:
        meta["rule"] = rule
    if assignment_id:
        meta["assignmentId"] = assignment_id
    return meta
