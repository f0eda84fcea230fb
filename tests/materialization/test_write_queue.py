"""The materialization write queue: off the latency path, thread-safe, lossless, bounded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import anyio
import anyio.to_thread
import pytest

from confidence._materialization_writes import MaterializationWriteQueue
from confidence.materialization import (
    InMemoryMaterializationStore,
    MaterializationNotSupportedError,
    UnsupportedMaterializationStore,
    VariantWriteOp,
)

pytestmark = pytest.mark.anyio

MAT = "materializations/sticky"
RULE = "flags/f/rules/r1"


def _op(i: int, variant: str = "on", prefix: str = "u") -> VariantWriteOp:
    return VariantWriteOp(f"{prefix}{i}", MAT, RULE, variant)


class FlakyStore(InMemoryMaterializationStore):
    """A sync store that fails its first `failures` writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures_left = failures
        self.calls = 0

    def write(self, ops: Sequence[VariantWriteOp]) -> None:
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError("store is down")
        super().write(ops)


class AsyncFlakyStore:
    """An async store that fails while `down` is set."""

    def __init__(self) -> None:
        self.inner = InMemoryMaterializationStore()
        self.down = True
        self.calls = 0

    async def read(self, ops: list[object]) -> list[object]:  # pragma: no cover - unused
        return []

    async def write(self, ops: list[VariantWriteOp]) -> None:
        self.calls += 1
        await anyio.sleep(0)
        if self.down:
            raise OSError("connection refused")
        self.inner.write(ops)


def _variants(store: InMemoryMaterializationStore) -> dict[str, str]:
    return {unit: rules[RULE] for (unit, _), rules in store.snapshot().items()}


async def _eventually(predicate: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def test_run_writes_without_flush_and_wakes_on_enqueue() -> None:
    store = InMemoryMaterializationStore()
    queue = MaterializationWriteQueue(store)
    queue.enqueue([_op(0)])  # before run(): kept until it starts
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        await _eventually(lambda: "u0" in _variants(store))
        queue.enqueue([_op(1)])  # from the loop thread
        await _eventually(lambda: "u1" in _variants(store))
        # ...and from a foreign thread
        await anyio.to_thread.run_sync(queue.enqueue, [_op(2)])
        await _eventually(lambda: "u2" in _variants(store))
        # The store sees a batch (in a worker thread) a moment before the queue counts it.
        await _eventually(lambda: queue.stats.written == 3)
        tg.cancel_scope.cancel()
    assert queue.stats.written == 3
    assert queue.stats.pending == 0


async def test_many_threads_and_tasks_lose_nothing() -> None:
    store = InMemoryMaterializationStore()
    queue = MaterializationWriteQueue(store, batch_size=64)
    threads, per_thread, tasks, per_task = 8, 500, 20, 100

    def thread_producer(t: int) -> None:
        for i in range(per_thread):
            queue.enqueue([_op(i, f"t{t}", prefix=f"thread{t}-")])

    async def task_producer(t: int) -> None:
        for i in range(per_task):
            queue.enqueue([_op(i, f"k{t}", prefix=f"task{t}-")])
            if i % 10 == 0:
                await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        workers = [threading.Thread(target=thread_producer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        async with anyio.create_task_group() as producers:
            for t in range(tasks):
                producers.start_soon(task_producer, t)
        for w in workers:
            await anyio.to_thread.run_sync(w.join)
        assert await queue.flush(anyio.current_time() + 30)
        tg.cancel_scope.cancel()

    got = _variants(store)
    expected = {f"thread{t}-{i}": f"t{t}" for t in range(threads) for i in range(per_thread)}
    expected |= {f"task{t}-{i}": f"k{t}" for t in range(tasks) for i in range(per_task)}
    assert got == expected
    assert queue.stats.written == len(expected)
    assert queue.stats.dropped == 0


async def test_failing_store_is_retried_until_it_recovers(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(failures=3)
    queue = MaterializationWriteQueue(store, retry_initial=0.01, retry_max=0.05)
    caplog.set_level(logging.INFO, logger="confidence.materialization")
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        queue.enqueue([_op(i) for i in range(10)])
        await _eventually(lambda: queue.stats.written == 10)
        tg.cancel_scope.cancel()
    assert _variants(store) == {f"u{i}": "on" for i in range(10)}
    stats = queue.stats
    assert (stats.failures, stats.consecutive_failures, stats.dropped) == (3, 0, 0)
    assert stats.last_error == "ConnectionError: store is down"
    messages = [r.getMessage() for r in caplog.records]
    assert any("will retry" in m and "store is down" in m for m in messages)
    assert any("recovered after 3 failed write(s)" in m for m in messages)
    assert store.calls == 4


async def test_async_store_outage_then_recovery_keeps_everything() -> None:
    store = AsyncFlakyStore()
    queue = MaterializationWriteQueue(store, retry_initial=0.01, retry_max=0.02, batch_size=7)
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        queue.enqueue([_op(i) for i in range(50)])
        await _eventually(lambda: queue.stats.failures >= 3)
        queue.enqueue([_op(i) for i in range(50, 60)])  # more arrive while it is down
        store.down = False
        assert await queue.flush(anyio.current_time() + 10)
        tg.cancel_scope.cancel()
    assert _variants(store.inner) == {f"u{i}": "on" for i in range(60)}


async def test_newer_write_for_the_same_key_wins() -> None:
    store = FlakyStore(failures=1)
    queue = MaterializationWriteQueue(store, retry_initial=0.01)
    queue.enqueue([_op(1, "old")])
    queue.enqueue([_op(1, "new"), _op(2, "x")])  # coalesced in the queue
    assert queue.stats.coalesced == 1
    assert await queue.flush(anyio.current_time() + 10)
    assert _variants(store) == {"u1": "new", "u2": "x"}
    # A newer value queued while an older one is in flight is written after it.
    queue.enqueue([_op(3, "first")])
    store.failures_left = 1
    assert not await queue.flush(anyio.current_time() + 0.001)  # in flight, failed once
    queue.enqueue([_op(3, "second")])
    assert await queue.flush(anyio.current_time() + 10)
    assert _variants(store)["u3"] == "second"


async def test_bounded_when_the_store_is_dead(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(failures=10**9)
    queue = MaterializationWriteQueue(store, max_pending=10, retry_initial=0.01, retry_max=0.02)
    caplog.set_level(logging.WARNING, logger="confidence.materialization")
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        queue.enqueue([_op(i) for i in range(4)])
        await _eventually(lambda: queue.stats.failures >= 2)
        queue.enqueue([_op(i) for i in range(4, 25)])
        # Newer values for keys already held still fit: u5 is queued, u0 is in flight.
        queue.enqueue([_op(5, "updated"), _op(0, "updated")])
        tg.cancel_scope.cancel()
    stats = queue.stats
    assert (stats.pending, stats.dropped, stats.coalesced) == (11, 15, 1)
    drops = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(drops) == 1  # rate-limited
    assert "dropped 15 write(s)" in drops[0] and "store is down" in drops[0]
    # The store comes back: the ten kept writes all land.
    store.failures_left = 0
    assert await queue.flush(anyio.current_time() + 10)
    assert _variants(store) == {
        **{f"u{i}": "on" for i in range(1, 10)},
        "u0": "updated",
        "u5": "updated",
    }


async def test_flush_gives_up_at_the_deadline_and_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    class HangingStore(InMemoryMaterializationStore):
        def write(self, ops: Sequence[VariantWriteOp]) -> None:
            release.wait(30)
            raise ConnectionError("too late")

    queue = MaterializationWriteQueue(HangingStore())
    queue.enqueue([_op(i) for i in range(3)])
    caplog.set_level(logging.WARNING, logger="confidence.materialization")
    try:
        started = anyio.current_time()
        assert not await queue.flush(anyio.current_time() + 0.2)
        assert anyio.current_time() - started < 5.0  # returned at the deadline, not at 30 s
    finally:
        release.set()
    assert queue.pending == 3
    assert any("3 materialization write(s) not written" in r.getMessage() for r in caplog.records)


async def test_flush_with_nothing_pending_and_without_run() -> None:
    store = InMemoryMaterializationStore()
    queue = MaterializationWriteQueue(store)
    assert await queue.flush(anyio.current_time() + 1)
    queue.enqueue([_op(1)])
    assert await queue.flush(anyio.current_time() + 5)  # no run(): flush drains by itself
    assert _variants(store) == {"u1": "on"}


async def test_store_without_write_support_drops_instead_of_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = MaterializationWriteQueue(UnsupportedMaterializationStore())
    caplog.set_level(logging.WARNING, logger="confidence.materialization")
    queue.enqueue([_op(1), _op(2)])
    assert await queue.flush(anyio.current_time() + 5)
    assert (queue.stats.dropped, queue.stats.failures, queue.pending) == (2, 0, 0)
    assert any("does not support writes" in r.getMessage() for r in caplog.records)
    assert isinstance(MaterializationNotSupportedError(), Exception)


async def test_run_twice_is_refused() -> None:
    queue = MaterializationWriteQueue(InMemoryMaterializationStore())
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        with pytest.raises(RuntimeError, match="already running"):
            await queue.run()
        tg.cancel_scope.cancel()
    # After run() ends it may be started again (e.g. a restarted runtime).
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        tg.cancel_scope.cancel()


def test_enqueue_without_a_loop_and_validation() -> None:
    queue = MaterializationWriteQueue(InMemoryMaterializationStore())
    queue(iter([_op(1)]))  # the queue is itself a write sink; any iterable works
    assert queue.pending == 1
    with pytest.raises(ValueError):
        MaterializationWriteQueue(InMemoryMaterializationStore(), max_pending=0)
    with pytest.raises(ValueError):
        MaterializationWriteQueue(InMemoryMaterializationStore(), retry_initial=0)
