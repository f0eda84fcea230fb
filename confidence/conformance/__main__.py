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

from confidence._wasm.abi import Resolved, ResolverError
from confidence._wasm.pool import ResolverPool
from confidence._wasm.resolve import FlagResolver, MaterializationError
from confidence.conformance.cases import case_request, case_writes, check_outcome
from confidence.materialization import InMemoryMaterializationStore
from confidence.testing.state_builder import state_from_suite_json

__all__ = ["main", "run_suite"]


def _store_for(materializations: Mapping[str, Any]) -> InMemoryMaterializationStore:
    store = InMemoryMaterializationStore()
    store.write(case_writes(materializations))
    return store


def check_case(pool: ResolverPool, case: Mapping[str, Any]) -> list[str]:
    """The problems with one case (empty = pass)."""
    materializations = case.get("materializations")
    store = _store_for(materializations) if materializations is not None else None
    # Without materializations the case runs in discovery mode and must not need reads:
    # an empty store answers "nothing recorded" to any read it would need.
    resolver = FlagResolver(pool, store if store is not None else _NoReadsStore())
    try:
        result: Resolved = resolver.resolve(case_request(case))
    except (ResolverError, MaterializationError) as exc:
        return check_outcome(case, exc)
    reads = resolver.store.reads if isinstance(resolver.store, _NoReadsStore) else ()
    return check_outcome(case, result, discovery_reads=reads)


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
