"""Run a resolver conformance suite.

    python -m confidence.conformance STATE_JSON CASES_JSON

Every case goes through the provider's own path: the state is loaded into a ResolverPool the
way a synced state is, requests resolve through FlagResolver on the wasm engine, and cases
with materializations are served by an InMemoryMaterializationStore preloaded from the case
(discovery → store read → complete). Prints one line per failing case and ends with
`N passed, M failed`; exits 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from confidence._abi import ResolverError, ResolveReason, ResolveRequest, Resolved
from confidence._pool import ResolverPool
from confidence._resolve import FlagResolver, MaterializationError
from confidence.materialization import InMemoryMaterializationStore
from confidence.testing.state_builder import state_from_suite_json

__all__ = ["main", "run_suite"]


def _store_for(materializations: Mapping[str, Any]) -> InMemoryMaterializationStore:
    store = InMemoryMaterializationStore()
    for unit, per_unit in materializations.items():
        for materialization, info in per_unit.items():
            if not info.get("isUnitInMaterialization"):
                continue
            rule_to_variant = info.get("ruleToVariant")
            if rule_to_variant:
                for rule, variant in rule_to_variant.items():
                    store.set_variant(unit, materialization, rule, variant)
            else:
                store.include(unit, materialization)
    return store


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


def check_case(pool: ResolverPool, case: Mapping[str, Any]) -> list[str]:
    """The problems with one case (empty = pass)."""
    req = case["resolveRequest"]
    expected = case["expectedResult"]["general"]
    materializations = case.get("materializations")
    store = _store_for(materializations) if materializations is not None else None
    # Without materializations the case runs in discovery mode and must not need reads:
    # an empty store answers "nothing recorded" to any read it would need.
    resolver = FlagResolver(pool, store if store is not None else _NoReadsStore())
    request = ResolveRequest(
        flags=tuple(req.get("flags", ())),
        context_json=json.dumps(req.get("evaluationContext") or {}).encode(),
        client_secret=req["clientSecret"],
        apply=bool(req.get("apply", False)),
    )
    try:
        result: Resolved = resolver.resolve(request)
    except (ResolverError, MaterializationError) as exc:
        if expected.get("expectError") is not None:
            return []
        return [f"unexpected error: {exc}"]
    if expected.get("expectError") is not None:
        return [f"expected an error ({expected['expectError']!r}), got a response"]
    problems: list[str] = []
    if isinstance(resolver.store, _NoReadsStore) and resolver.store.reads:
        problems.append(f"discovery-mode case needed reads: {resolver.store.reads}")
    want = {f["flag"]: f for f in expected.get("resolvedFlags", [])}
    got = {f.flag: f for f in result.flags}
    if set(want) != set(got):
        problems.append(f"flags: expected {sorted(want)}, got {sorted(got)}")
    for name in sorted(set(want) & set(got)):
        problems.extend(f"{name}: {p}" for p in _compare_flag(want[name], got[name]))
    return problems


class _NoReadsStore(InMemoryMaterializationStore):
    """Discovery-mode store for cases without materializations: records any read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[Any] = []

    def read(self, ops: Sequence[Any]) -> list[Any]:
        self.reads.extend(ops)
        return super().read(ops)


def run_suite(state_path: Path, cases_path: Path, out: Any = sys.stdout) -> tuple[int, int]:
    state_bytes, account_id = state_from_suite_json(json.loads(state_path.read_text()))
    cases = json.loads(cases_path.read_text())
    pool = ResolverPool(size=1)
    pool.set_state(state_bytes, account_id)
    passed = failed = 0
    for case in cases:
        problems = check_case(pool, case)
        if problems:
            failed += 1
            print(f"FAIL {case['name']}: " + "; ".join(problems), file=out)
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed", file=out)
    return passed, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confidence.conformance", description="Run a resolver conformance suite."
    )
    parser.add_argument("state", type=Path, help="the suite's state.json")
    parser.add_argument("cases", type=Path, help="the suite's cases.json")
    args = parser.parse_args(argv)
    _, failed = run_suite(args.state, args.cases)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
