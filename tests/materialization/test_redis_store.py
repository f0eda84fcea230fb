"""Redis materialization stores against a real redis-server (skipped without one)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from materialization_support import RedisServer, redis_server, unique_prefix  # noqa: F401

redis = pytest.importorskip("redis", reason="redis-py is not installed (the `redis` extra)")

from confidence.materialization import (  # noqa: E402
    InclusionReadOp,
    InclusionReadResult,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)
from confidence.redis_store import (  # noqa: E402
    DEFAULT_TTL,
    AsyncRedisMaterializationStore,
    RedisMaterializationStore,
)

MAT = "materializations/sticky"
RULE = "flags/f/rules/r1"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Any]:  # noqa: F811
    c = redis.Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        c.close()


class CountingRedis(redis.Redis):  # type: ignore[misc]
    """Counts round trips: pipelines executed, and commands sent outside a pipeline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipelines = 0
        self.direct_commands = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.direct_commands += 1
        return super().execute_command(*args, **kwargs)


def test_one_round_trip_per_batch(redis_server: RedisServer) -> None:  # noqa: F811
    client = CountingRedis(host=redis_server.host, port=redis_server.port)
    store = RedisMaterializationStore(client, prefix=unique_prefix())
    try:
        store.write([VariantWriteOp(f"u{i}", MAT, RULE, "on") for i in range(50)])
        assert (client.pipelines, client.direct_commands) == (1, 0)
        ops: list[Any] = [VariantReadOp(f"u{i}", MAT, RULE) for i in range(60)]
        ops += [InclusionReadOp(f"u{i}", MAT) for i in range(60)]
        results = store.read(ops)
        assert (client.pipelines, client.direct_commands) == (2, 0)
        assert len(results) == 120
    finally:
        client.close()


def test_layout_one_hash_per_unit_and_materialization(client: Any) -> None:
    prefix = unique_prefix()
    store = RedisMaterializationStore(client, prefix=prefix, ttl=None)
    store.write(
        [
            VariantWriteOp("user:1", "materializations/a:b", RULE, "on"),
            VariantWriteOp("user:1", "materializations/a:b", "flags/f/rules/r2", "off"),
            VariantWriteOp("user:1", "materializations/seg", "", ""),
        ]
    )
    keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
    assert keys == [
        prefix + "materializations/a%3Ab:user:1",
        prefix + "materializations/seg:user:1",
    ]
    assert client.hgetall(keys[0]) == {RULE.encode(): b"on", b"flags/f/rules/r2": b"off"}
    assert client.hgetall(keys[1]) == {b"": b""}


def test_prefixes_isolate_stores(client: Any) -> None:
    a = RedisMaterializationStore(client, prefix=unique_prefix())
    b = RedisMaterializationStore(client, prefix=unique_prefix())
    a.write([VariantWriteOp("u", MAT, RULE, "on")])
    assert b.read([InclusionReadOp("u", MAT)]) == [InclusionReadResult("u", MAT, False)]
    assert a.read([InclusionReadOp("u", MAT)]) == [InclusionReadResult("u", MAT, True)]


def test_ttl_set_on_write_and_renewed_on_read(client: Any) -> None:
    prefix = unique_prefix()
    store = RedisMaterializationStore(client, prefix=prefix, ttl=timedelta(hours=1))
    store.write([VariantWriteOp("u", MAT, RULE, "on")])
    key = prefix + "materializations/sticky:u"
    assert 3590 <= client.ttl(key) <= 3600
    client.expire(key, 10)
    assert store.read([VariantReadOp("u", MAT, RULE)]) == [VariantReadResult("u", MAT, RULE, "on")]
    assert client.ttl(key) > 3500  # the read renewed it
    # A read of a missing key creates nothing.
    store.read([InclusionReadOp("nobody", MAT)])
    assert client.exists(prefix + "materializations/sticky:nobody") == 0


def test_default_ttl_is_ninety_days_and_none_disables(client: Any) -> None:
    assert timedelta(days=90) == DEFAULT_TTL
    prefix = unique_prefix()
    RedisMaterializationStore(client, prefix=prefix).write([VariantWriteOp("u", MAT, RULE, "on")])
    assert client.ttl(prefix + "materializations/sticky:u") > 89 * 86400
    prefix = unique_prefix()
    store = RedisMaterializationStore(client, prefix=prefix, ttl=None)
    store.write([VariantWriteOp("u", MAT, RULE, "on")])
    store.read([InclusionReadOp("u", MAT)])
    assert client.ttl(prefix + "materializations/sticky:u") == -1  # no expiry


def test_decode_responses_client_works(redis_server: RedisServer) -> None:  # noqa: F811
    decoding = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        store = RedisMaterializationStore(decoding, prefix=unique_prefix())
        store.write([VariantWriteOp("u", MAT, RULE, "ön")])
        assert store.read([VariantReadOp("u", MAT, RULE), InclusionReadOp("u", MAT)]) == [
            VariantReadResult("u", MAT, RULE, "ön"),
            InclusionReadResult("u", MAT, True),
        ]
    finally:
        decoding.close()


def test_constructor_validation(redis_server: RedisServer, client: Any) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="exactly one"):
        RedisMaterializationStore()
    with pytest.raises(ValueError, match="exactly one"):
        RedisMaterializationStore(client, url=redis_server.url)
    with pytest.raises(ValueError, match="ttl"):
        RedisMaterializationStore(client, ttl=0.5)
    owned = RedisMaterializationStore(url=redis_server.url, prefix=unique_prefix())
    owned.write([VariantWriteOp("u", MAT, RULE, "on")])
    owned.close()
    shared = RedisMaterializationStore(client, prefix=unique_prefix())
    shared.close()  # not ours: the client stays usable
    assert client.ping()
    assert "prefix=" in repr(owned) and "redis://" not in repr(owned)


def test_many_threads_share_one_sync_store(redis_server: RedisServer) -> None:  # noqa: F811
    store = RedisMaterializationStore(url=redis_server.url, prefix=unique_prefix())
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(100):
                unit = f"u{i % 10}"  # ten hashes shared by every thread
                store.write([VariantWriteOp(unit, MAT, f"rule-{t}-{i}", f"v{t}")])
                assert store.read([InclusionReadOp(unit, MAT)])[0] == InclusionReadResult(
                    unit, MAT, True
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    ops = [VariantReadOp(f"u{i % 10}", MAT, f"rule-{t}-{i}") for t in range(8) for i in range(100)]
    assert [r.variant for r in store.read(ops)] == [f"v{t}" for t in range(8) for i in range(100)]
    store.close()


# -- several processes writing at once ---------------------------------------------------------

PROCESSES = 4
WRITES_PER_PROCESS = 400


def _process_writer(url: str, prefix: str, index: int, start: Any) -> None:
    store = RedisMaterializationStore(url=url, prefix=prefix)
    start.wait(30)
    try:
        for i in range(0, WRITES_PER_PROCESS, 8):
            # Every process writes into the same 20 hashes (one per unit), 8 ops a batch.
            store.write(
                [
                    VariantWriteOp(f"u{j % 20}", MAT, f"rule-p{index}-{j}", f"p{index}")
                    for j in range(i, i + 8)
                ]
            )
    finally:
        store.close()


def test_concurrent_writers_in_several_processes_lose_nothing(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    prefix = unique_prefix()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited sockets
    start = ctx.Event()
    procs = [
        ctx.Process(target=_process_writer, args=(redis_server.url, prefix, p, start))
        for p in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    store = RedisMaterializationStore(url=redis_server.url, prefix=prefix)
    ops = [
        VariantReadOp(f"u{j % 20}", MAT, f"rule-p{p}-{j}")
        for p in range(PROCESSES)
        for j in range(WRITES_PER_PROCESS)
    ]
    variants = [r.variant for r in store.read(ops)]
    store.close()
    assert variants == [f"p{p}" for p in range(PROCESSES) for _ in range(WRITES_PER_PROCESS)]


# -- the asyncio store ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_store_concurrent_tasks(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = unique_prefix()
    store = AsyncRedisMaterializationStore(url=redis_server.url, prefix=prefix, ttl=60)
    try:

        async def writer(t: int) -> None:
            for i in range(50):
                await store.write([VariantWriteOp(f"u{i % 5}", MAT, f"rule-{t}-{i}", f"v{t}")])

        async with anyio.create_task_group() as tg:
            for t in range(10):
                tg.start_soon(writer, t)
        ops = [
            VariantReadOp(f"u{i % 5}", MAT, f"rule-{t}-{i}") for t in range(10) for i in range(50)
        ]
        results = await store.read(ops)
        assert [r.variant for r in results] == [f"v{t}" for t in range(10) for _ in range(50)]
        check = redis.Redis.from_url(redis_server.url)
        try:
            assert 0 < check.ttl(prefix + "materializations/sticky:u0") <= 60
        finally:
            check.close()
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_async_store_with_shared_client(redis_server: RedisServer) -> None:  # noqa: F811
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        store = AsyncRedisMaterializationStore(client, prefix=unique_prefix())
        await store.write([VariantWriteOp("u", MAT, "", "")])
        assert await store.read([InclusionReadOp("u", MAT), VariantReadOp("u", MAT, RULE)]) == [
            InclusionReadResult("u", MAT, True),
            VariantReadResult("u", MAT, RULE, None),
        ]
        await store.aclose()  # not ours: the client stays usable
        assert await client.ping()
    finally:
        await client.aclose()
