"""Materializations end to end: FlagResolver on the real resolver.wasm with every store kind.

- Every materialization case of the conformance suite passes with each store (in-memory,
  Redis sync, Redis async, remote via the emulator), preloaded from the case exactly as the
  conformance runner preloads its in-memory store; writes the resolver asks for persist.
- Sticky assignments: a unit keeps its variant after its attributes stop matching the
  targeting and after the rollout weights change, with writes going through the write queue.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from materialization_support import (
    STORE_KINDS,
    SUITE,
    StoreHandle,
    open_store,
    redis_server,  # noqa: F401 - the fixture, used through request.getfixturevalue
    requires_suite,
    requires_wasm,
)

from confidence._materialization_writes import MaterializationWriteQueue
from confidence._wasm.abi import Resolved, ResolveReason, ResolveRequest, ResolverError
from confidence._wasm.pool import ResolverPool
from confidence._wasm.resolve import FlagResolver, MaterializationError
from confidence.conformance.cases import (
    case_request,
    case_writes,
    check_outcome,
    is_materialization_case,
)
from confidence.materialization import (
    InclusionReadOp,
    InclusionReadResult,
    InMemoryMaterializationStore,
    ReadOp,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)
from confidence.testing.state_builder import (
    StateBuilder,
    attribute_eq,
    rollout,
    state_from_suite_json,
    with_materialization,
)

pytestmark = [pytest.mark.anyio, requires_wasm]


class _RecordingStore:
    """Passes through to a sync store, recording the reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[ReadOp] = []

    def read(self, ops: list[ReadOp]) -> Any:
        self.reads.extend(ops)
        return self.inner.read(ops)

    def write(self, ops: list[VariantWriteOp]) -> None:
        self.inner.write(ops)


class _AsyncRecordingStore:
    """Passes through to an async store, recording the reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[ReadOp] = []

    async def read(self, ops: list[ReadOp]) -> Any:
        self.reads.extend(ops)
        return await self.inner.read(ops)

    async def write(self, ops: list[VariantWriteOp]) -> None:
        await self.inner.write(ops)


def _recording(handle: StoreHandle) -> _RecordingStore | _AsyncRecordingStore:
    return _AsyncRecordingStore(handle.store) if handle.is_async else _RecordingStore(handle.store)


# -- the conformance suite's materialization cases -------------------------------------------


def _suite_cases() -> list[dict[str, Any]]:
    if not (SUITE / "cases.json").is_file():
        return []
    cases: list[dict[str, Any]] = json.loads((SUITE / "cases.json").read_text())
    return [c for c in cases if is_materialization_case(c)]


@pytest.fixture(scope="module")
def suite_pool() -> Iterator[ResolverPool]:
    state, account_id = state_from_suite_json(json.loads((SUITE / "state.json").read_text()))
    pool = ResolverPool(size=2)
    pool.set_state(state, account_id)
    try:
        yield pool
    finally:
        pool.close()


async def _run_case(
    pool: ResolverPool, case: dict[str, Any], handle: StoreHandle, api: str
) -> list[str]:
    materializations = case.get("materializations")
    if materializations is not None:
        await handle.write(case_writes(materializations))
    store = _recording(handle)
    resolver = FlagResolver(pool, store)
    outcome: Resolved | Exception
    try:
        if api == "sync":
            # The sync API runs on the caller's thread (never the loop's).
            outcome = await anyio.to_thread.run_sync(resolver.resolve, case_request(case))
        else:
            outcome = await resolver.resolve_async(case_request(case))
    except (ResolverError, MaterializationError) as exc:
        outcome = exc
    reads = store.reads if materializations is None else ()
    problems = check_outcome(case, outcome, discovery_reads=reads)
    if isinstance(outcome, Resolved) and outcome.writes:
        # What the resolver asked to write must now be in the store.
        ops: list[ReadOp] = []
        for w in outcome.writes:
            ops.append(VariantReadOp(w.unit, w.materialization, w.rule))
            ops.append(InclusionReadOp(w.unit, w.materialization))
        got = await handle.read(ops)
        variants = {
            (r.unit, r.materialization, r.rule): r.variant
            for r in got
            if isinstance(r, VariantReadResult)
        }
        included = {
            (r.unit, r.materialization): r.included
            for r in got
            if isinstance(r, InclusionReadResult)
        }
        for w in outcome.writes:
            if variants.get((w.unit, w.materialization, w.rule)) != (
                w.variant or None
            ) or not included.get((w.unit, w.materialization)):
                problems.append(f"write not persisted: {w}; store answered {got}")
    return problems


_APIS = {
    "memory": ("sync", "async"),
    "redis": ("sync", "async"),
    "redis-async": ("async",),
    "remote": ("async",),
}


@requires_suite
@pytest.mark.parametrize(
    ("kind", "api"), [(kind, api) for kind in STORE_KINDS for api in _APIS[kind]]
)
async def test_conformance_materialization_cases(
    kind: str, api: str, suite_pool: ResolverPool, request: pytest.FixtureRequest
) -> None:
    cases = _suite_cases()
    assert len(cases) >= 20, "the suite's materialization cases went missing"
    failures: dict[str, list[str]] = {}
    for case in cases:
        async with open_store(kind, request) as handle:  # a fresh, empty store per case
            problems = await _run_case(suite_pool, case, handle, api)
        if problems:
            failures[case["name"]] = problems
    assert not failures, "\n".join(f"{name}: {'; '.join(p)}" for name, p in failures.items())


@requires_suite
async def test_mat_write_case_writes_the_assignment(
    suite_pool: ResolverPool, anyio_backend: str
) -> None:
    # The suite states no writes; this one is plain from the state: rule1 writes "on".
    case = next(c for c in _suite_cases() if c["name"] == "mat_write")
    store = InMemoryMaterializationStore()
    resolved = FlagResolver(suite_pool, store).resolve(case_request(case))
    assert resolved.flags[0].variant == "on"
    assert store.snapshot() == {
        ("user1", "materializations/mat-write"): {"flags/mat-write-flag/rules/rule1": "on"}
    }


# -- sticky assignments ----------------------------------------------------------------------

SECRET = "sticky-secret"
ACCOUNT = "sticky-account"
FLAG = "flags/sticky"
RULE = "flags/sticky/rules/experiment"
MAT = "materializations/sticky-experiment"
A, B, C = (f"{FLAG}/variants/{v}" for v in ("a", "b", "c"))


def _sticky_state(weights: dict[str, int]) -> bytes:
    experiment = with_materialization(
        rollout("segments/sweden", weights, name=RULE),
        write=MAT,
        read=MAT,
        segment_targeting_can_be_ignored=True,
    )
    return (
        StateBuilder(account=ACCOUNT)
        .client(SECRET)
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            FLAG,
            variants={A: {"v": "a"}, B: {"v": "b"}, C: {"v": "c"}},
            # Everyone else falls through to "c": a unit that lost its stickiness would show.
            rules=[experiment, rollout("segments/everyone", {C: 100}, name=f"{FLAG}/rules/rest")],
        )
        .build()
    )


def _request(unit: str, country: str) -> ResolveRequest:
    return ResolveRequest(
        flags=(FLAG,),
        context_json=json.dumps({"targeting_key": unit, "country": country}).encode(),
        client_secret=SECRET,
        apply=False,
    )


@pytest.fixture
def sticky_pool() -> Iterator[ResolverPool]:
    pool = ResolverPool(size=2)
    pool.set_state(_sticky_state({A: 50, B: 50}), ACCOUNT)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=STORE_KINDS)
async def sticky_store(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[StoreHandle]:
    async with open_store(request.param, request) as handle:
        yield handle


async def test_sticky_assignment_survives_targeting_and_rollout_changes(
    sticky_pool: ResolverPool, sticky_store: StoreHandle
) -> None:
    queue = MaterializationWriteQueue(sticky_store.store)
    resolver = FlagResolver(sticky_pool, sticky_store.store, write_sink=queue.enqueue)

    async def resolve(unit: str, country: str) -> Any:
        if inspect.iscoroutinefunction(getattr(sticky_store.store, "read", None)):
            result = await resolver.resolve_async(_request(unit, country))
        else:  # the sync API, from a worker thread: the queue is fed from a foreign thread
            result = await anyio.to_thread.run_sync(resolver.resolve, _request(unit, country))
        (flag,) = result.flags
        return flag

    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)

        first = await resolve("user-1", "SE")
        assert first.reason == ResolveReason.MATCH and first.variant in (A, B)
        assert first.assignment_origin == RULE
        assert await queue.flush(anyio.current_time() + 10)
        stored = await sticky_store.read([VariantReadOp("user-1", MAT, RULE)])
        assert stored[0].variant == first.variant  # type: ignore[union-attr]

        # Targeting no longer matches: the recorded variant still wins.
        moved = await resolve("user-1", "NO")
        assert (moved.reason, moved.variant, moved.value) == (
            ResolveReason.MATCH,
            first.variant,
            first.value,
        )
        # Control: a unit without a record, in the same situation, gets the fallback.
        stranger = await resolve("user-2", "NO")
        assert stranger.variant == C

        # The rollout now buckets everyone into the other variant (the recorded one keeps
        # an empty range: a record only counts for a variant the rule can still give).
        other = B if first.variant == A else A
        sticky_pool.set_state(_sticky_state({first.variant: 0, other: 100}), ACCOUNT)
        again = await resolve("user-1", "SE")
        assert again.variant == first.variant
        newcomer = await resolve("user-3", "SE")
        assert newcomer.variant == other
        assert await queue.flush(anyio.current_time() + 10)
        tg.cancel_scope.cancel()

    assert queue.stats.dropped == 0
    records = await sticky_store.read(
        [VariantReadOp("user-1", MAT, RULE), VariantReadOp("user-3", MAT, RULE)]
    )
    assert [r.variant for r in records] == [first.variant, other]  # type: ignore[union-attr]
