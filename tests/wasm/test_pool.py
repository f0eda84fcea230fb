"""The wasm instance pool: real resolver.wasm, real threads."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._wasm.abi import ResolveReason, ResolveRequest, ResolverError, WasmTrap
from confidence._wasm.pool import ResolverPool
from confidence._wasm.resolve import FlagResolver
from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

SECRET = "pool-test-secret"


def _state(color: str) -> bytes:
    return (
        StateBuilder(account="pool-test")
        .client(SECRET)
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            "flags/color",
            variants={color: {"color": color}},
            rules=[rollout("segments/everyone", {color: 100})],
        )
        .flag(
            "flags/swedish",
            variants={"yes": {"enabled": True}},
            rules=[rollout("segments/sweden", {"yes": 100})],
        )
        .build()
    )


def _request(
    flag: str = "flags/color", ctx: dict[str, object] | None = None, apply: bool = True
) -> ResolveRequest:
    return ResolveRequest(
        flags=(flag,),
        context_json=json.dumps(ctx or {"targeting_key": "u1"}).encode(),
        client_secret=SECRET,
        apply=apply,
    )


@pytest.fixture
def pool() -> ResolverPool:
    p = ResolverPool(size=3)
    p.set_state(_state("red"), "pool-test")
    return p


def test_resolves_and_targets(pool: ResolverPool) -> None:
    resolver = FlagResolver(pool)
    flag = resolver.resolve(_request()).flags[0]
    assert (flag.variant, flag.value, flag.reason) == ("red", {"color": "red"}, ResolveReason.MATCH)
    no = resolver.resolve(_request("flags/swedish", {"targeting_key": "u", "country": "NO"})).flags[
        0
    ]
    assert no.reason == ResolveReason.NO_SEGMENT_MATCH and no.value is None
    se = resolver.resolve(_request("flags/swedish", {"targeting_key": "u", "country": "SE"})).flags[
        0
    ]
    assert se.value == {"enabled": True}


def test_unknown_secret_is_an_error_without_the_secret(pool: ResolverPool) -> None:
    request = ResolveRequest(
        flags=(), context_json=b"{}", client_secret="sk-very-secret-value", apply=False
    )
    with pytest.raises(ResolverError) as info:
        FlagResolver(pool).resolve(request)
    assert "sk-very-secret-value" not in str(info.value)


def test_bad_state_keeps_the_last_good_one(pool: ResolverPool) -> None:
    good = _state("blue")
    for bad in (b"\xff\x00garbage" * 10, good[: len(good) // 2]):
        with pytest.raises(ResolverError):
            pool.set_state(bad, "pool-test")
        assert FlagResolver(pool).resolve(_request()).flags[0].variant == "red"


def test_state_swap_while_threads_resolve(pool: ResolverPool) -> None:
    resolver = FlagResolver(pool)
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        try:
            while not stop.is_set():
                variant = resolver.resolve(_request(apply=False)).flags[0].variant
                with lock:
                    seen[variant] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for color in ("blue", "green", "red", "blue"):
            pool.set_state(_state(color), "pool-test")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert set(seen) <= {"red", "blue", "green"}
    # After the last swap every instance serves the new state.
    assert {resolver.resolve(_request()).flags[0].variant for _ in range(20)} == {"blue"}
    assert pool.stats().instances <= pool.size


def _resolve_count(batches: list[bytes]) -> int:
    total = 0
    for batch in batches:
        req = api_pb2.WriteFlagLogsRequest.FromString(batch)
        for info in req.flag_resolve_info:
            total += sum(v.count for v in info.variant_resolve_info)
    return total


def test_no_resolve_is_lost_across_swaps_and_threads(pool: ResolverPool) -> None:
    """Logs of instances retired by a state swap are drained, not dropped."""
    resolver = FlagResolver(pool)
    per_thread = 200
    barrier = threading.Barrier(3)

    def worker() -> None:
        barrier.wait()
        for _ in range(per_thread):
            resolver.resolve(_request())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    pool.set_state(_state("blue"), "pool-test")
    for t in threads:
        t.join()
    assert _resolve_count(pool.flush_logs(wait=True)) == 3 * per_thread
    assert _resolve_count(pool.flush_logs(wait=True)) == 0


def test_a_trapped_instance_is_replaced() -> None:
    """Guest memory is capped; blowing the cap traps that instance, and the next resolve works."""
    pool = ResolverPool(size=1, memory_limit=24 * 1024 * 1024)
    pool.set_state(_state("red"), "pool-test")
    resolver = FlagResolver(pool)
    huge = {"targeting_key": "u1", "blob": "x" * (40 * 1024 * 1024)}
    with pytest.raises(WasmTrap):
        resolver.resolve(_request(ctx=huge))
    assert pool.stats().traps >= 1
    assert resolver.resolve(_request()).flags[0].variant == "red"
