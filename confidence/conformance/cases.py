"""Conformance-case helpers shared by the runner (`__main__`) and the store tests.

A case is run by: building its `ResolveRequest` (`case_request`), preloading a store with
its materializations (`case_writes`, as store writes), resolving through `FlagResolver`,
then judging the outcome (`check_outcome`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from confidence._wasm.abi import Resolved, ResolveReason, ResolveRequest
from confidence.materialization import VariantWriteOp

__all__ = ["case_request", "case_writes", "check_outcome", "is_materialization_case"]


def case_writes(materializations: Mapping[str, Any]) -> list[VariantWriteOp]:
    """A case's materializations as the store writes that record them.

    In with a rule map → one write per (rule, variant); in without one → one inclusion
    record (empty rule and variant); not in → nothing.
    """
    writes: list[VariantWriteOp] = []
    for unit, per_unit in materializations.items():
        for materialization, info in per_unit.items():
            if not info.get("isUnitInMaterialization"):
                continue
            rule_to_variant = info.get("ruleToVariant")
            if rule_to_variant:
                for rule, variant in rule_to_variant.items():
                    writes.append(VariantWriteOp(unit, materialization, rule, variant))
            else:
                writes.append(VariantWriteOp(unit, materialization, "", ""))
    return writes


def case_request(case: Mapping[str, Any]) -> ResolveRequest:
    req = case["resolveRequest"]
    return ResolveRequest(
        flags=tuple(req.get("flags", ())),
        context_json=json.dumps(req.get("evaluationContext") or {}).encode(),
        client_secret=req["clientSecret"],
        apply=bool(req.get("apply", False)),
    )


def is_materialization_case(case: Mapping[str, Any]) -> bool:
    """Whether a case exercises materializations: it states records, or it is a `mat_`
    case (no records: discovery mode, where writes and unit-less reads are the point)."""
    return case.get("materializations") is not None or str(case.get("name", "")).startswith("mat_")


def _reason_name(reason: int) -> str:
    try:
        return "RESOLVE_REASON_" + ResolveReason(reason).name
    except ValueError:
        return f"RESOLVE_REASON_{reason}"


def _compare_flag(expected: Mapping[str, Any], got: Any) -> list[str]:
    problems = []
    if expected["reason"] != _reason_name(got.reason):
        problems.append(f"reason: expected {expected['reason']}, got {_reason_name(got.reason)}")
    if expected.get("variant", "") != got.variant:
        problems.append(f"variant: expected {expected.get('variant')!r}, got {got.variant!r}")
    want_value = expected.get("value")
    got_value = got.value or None  # "no value" and an empty struct both compare as null
    if (want_value or None) != got_value:
        problems.append(f"value: expected {want_value!r}, got {got.value!r}")
    for key, attr in (
        ("shouldApply", "should_apply"),
        ("assignmentId", "assignment_id"),
        ("assignmentOrigin", "assignment_origin"),
    ):
        if key in expected and expected[key] != getattr(got, attr):
            problems.append(f"{key}: expected {expected[key]!r}, got {getattr(got, attr)!r}")
    return problems


def check_outcome(
    case: Mapping[str, Any],
    outcome: Resolved | Exception,
    *,
    discovery_reads: Sequence[Any] = (),
) -> list[str]:
    """The problems with a case's outcome (empty = pass).

    `outcome` is the response, or the resolver/materialization error the resolve raised;
    `discovery_reads` are the store reads a case without materializations needed (it must
    need none).
    """
    expected = case["expectedResult"]["general"]
    if isinstance(outcome, Exception):
        if expected.get("expectError") is not None:
            return []
        return [f"unexpected error: {outcome}"]
    if expected.get("expectError") is not None:
        return [f"expected an error ({expected['expectError']!r}), got a response"]
    problems: list[str] = []
    if discovery_reads:
        problems.append(f"discovery-mode case needed reads: {list(discovery_reads)}")
    want = {f["flag"]: f for f in expected.get("resolvedFlags", [])}
    got = {f.flag: f for f in outcome.flags}
    if set(want) != set(got):
        problems.append(f"flags: expected {sorted(want)}, got {sorted(got)}")
    for name in sorted(set(want) & set(got)):
        problems.extend(f"{name}: {p}" for p in _compare_flag(want[name], got[name]))
    return problems
