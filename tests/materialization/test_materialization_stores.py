"""Every materialization store keeps the same semantics (the in-memory store's).

A unit is "in" a materialization when it has any record there (a bare inclusion record, or a
variant for some rule); a variant read answers the variant recorded for exactly that rule.
Run against: the in-memory store, both Redis stores on a real redis-server, and the remote
store against the Confidence emulator's materialization routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from materialization_support import (
    STORE_KINDS,
    StoreHandle,
    open_store,
    redis_server,  # noqa: F401 - the fixture, used through request.getfixturevalue
)

from confidence.materialization import (
    InclusionReadOp,
    InclusionReadResult,
    InMemoryMaterializationStore,
    MaterializationNotSupportedError,
    UnsupportedMaterializationStore,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)

pytestmark = pytest.mark.anyio

MAT = "materializations/sticky"
OTHER = "materializations/other"
RULE = "flags/f/rules/r1"
RULE2 = "flags/f/rules/r2"


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[StoreHandle]:
    async with open_store(request.param, request) as handle:
        yield handle


def _by_key(results: list[object]) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    for r in results:
        if isinstance(r, VariantReadResult):
            out[("variant", r.unit, r.materialization, r.rule)] = r.variant
        elif isinstance(r, InclusionReadResult):
            out[("inclusion", r.unit, r.materialization)] = r.included
    return out


async def test_empty_store_has_no_records(store: StoreHandle) -> None:
    results = await store.read([VariantReadOp("u1", MAT, RULE), InclusionReadOp("u1", MAT)])
    assert _by_key(results) == {
        ("variant", "u1", MAT, RULE): None,
        ("inclusion", "u1", MAT): False,
    }


async def test_empty_batches_short_circuit(store: StoreHandle) -> None:
    assert await store.read([]) == []
    await store.write([])
    if store.kind == "remote":
        assert store.emulator.requests == []  # type: ignore[attr-defined]


async def test_variant_record_answers_its_rule_and_makes_the_unit_included(
    store: StoreHandle,
) -> None:
    await store.write([VariantWriteOp("u1", MAT, RULE, "treatment")])
    results = await store.read(
        [
            VariantReadOp("u1", MAT, RULE),
            VariantReadOp("u1", MAT, RULE2),  # same materialization, other rule: no variant
            InclusionReadOp("u1", MAT),  # ... but the unit is in the materialization
            InclusionReadOp("u1", OTHER),
            InclusionReadOp("u2", MAT),
            VariantReadOp("u2", MAT, RULE),
        ]
    )
    assert _by_key(results) == {
        ("variant", "u1", MAT, RULE): "treatment",
        ("variant", "u1", MAT, RULE2): None,
        ("inclusion", "u1", MAT): True,
        ("inclusion", "u1", OTHER): False,
        ("inclusion", "u2", MAT): False,
        ("variant", "u2", MAT, RULE): None,
    }


async def test_bare_inclusion_record(store: StoreHandle) -> None:
    # How a materialized segment's membership is recorded: empty rule and variant.
    await store.write([VariantWriteOp("u1", MAT, "", "")])
    results = await store.read([InclusionReadOp("u1", MAT), VariantReadOp("u1", MAT, RULE)])
    assert _by_key(results) == {
        ("inclusion", "u1", MAT): True,
        ("variant", "u1", MAT, RULE): None,
    }


async def test_empty_variant_is_no_assignment_but_inclusion(store: StoreHandle) -> None:
    await store.write([VariantWriteOp("u1", MAT, RULE, "")])
    results = await store.read([VariantReadOp("u1", MAT, RULE), InclusionReadOp("u1", MAT)])
    assert _by_key(results) == {
        ("variant", "u1", MAT, RULE): None,
        ("inclusion", "u1", MAT): True,
    }


async def test_last_write_wins_and_rules_accumulate(store: StoreHandle) -> None:
    await store.write([VariantWriteOp("u1", MAT, RULE, "a")])
    await store.write([VariantWriteOp("u1", MAT, RULE2, "x")])
    await store.write([VariantWriteOp("u1", MAT, RULE, "b")])
    results = await store.read([VariantReadOp("u1", MAT, RULE), VariantReadOp("u1", MAT, RULE2)])
    assert _by_key(results) == {
        ("variant", "u1", MAT, RULE): "b",
        ("variant", "u1", MAT, RULE2): "x",
    }


async def test_large_batch_round_trip(store: StoreHandle) -> None:
    writes = [VariantWriteOp(f"unit-{i}", MAT, RULE, f"v{i % 3}") for i in range(300)]
    await store.write(writes)
    reads: list[VariantReadOp | InclusionReadOp] = []
    for i in range(310):  # ten units that were never written
        reads += [VariantReadOp(f"unit-{i}", MAT, RULE), InclusionReadOp(f"unit-{i}", MAT)]
    got = _by_key(await store.read(reads))
    assert len(got) == 620
    for i in range(310):
        written = i < 300
        assert got[("variant", f"unit-{i}", MAT, RULE)] == (f"v{i % 3}" if written else None)
        assert got[("inclusion", f"unit-{i}", MAT)] is written


async def test_awkward_names_do_not_collide(store: StoreHandle) -> None:
    # Separators and escapes in units and materialization names must not alias keys.
    pairs = [
        ("a:b", "materializations/m"),
        ("b", "materializations/m:a"),
        ("b", "materializations/m%3Aa"),
        ("", "materializations/m"),
        ("ünït 🎲 with spaces", "materializations/m"),
        ("100%", "materializations/m"),
    ]
    await store.write(
        [VariantWriteOp(unit, mat, RULE, f"v{i}") for i, (unit, mat) in enumerate(pairs)]
    )
    got = _by_key(await store.read([VariantReadOp(unit, mat, RULE) for unit, mat in pairs]))
    assert got == {("variant", unit, mat, RULE): f"v{i}" for i, (unit, mat) in enumerate(pairs)}
    missing = await store.read([InclusionReadOp("a", "materializations/m:b")])
    assert _by_key(missing) == {("inclusion", "a", "materializations/m:b"): False}


# -- the in-memory and unsupported stores ----------------------------------------------------


def test_in_memory_helpers_match_writes() -> None:
    store = InMemoryMaterializationStore()
    store.include("u1", MAT)
    store.set_variant("u2", MAT, RULE, "on")
    assert store.snapshot() == {("u1", MAT): {"": ""}, ("u2", MAT): {RULE: "on"}}
    other = InMemoryMaterializationStore()
    other.write([VariantWriteOp("u1", MAT, "", ""), VariantWriteOp("u2", MAT, RULE, "on")])
    assert other.snapshot() == store.snapshot()


def test_unsupported_store_refuses_everything() -> None:
    store = UnsupportedMaterializationStore()
    with pytest.raises(MaterializationNotSupportedError, match="read not supported"):
        store.read([InclusionReadOp("u", MAT)])
    with pytest.raises(MaterializationNotSupportedError, match="write not supported"):
        store.write([VariantWriteOp("u", MAT, RULE, "v")])
    assert MaterializationNotSupportedError().message == "materialization operation not supported"
