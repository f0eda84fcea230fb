"""Materialization writes off the evaluation's latency path.

`FlagResolver(write_sink=queue.enqueue)` hands each resolve's writes to the queue, from any
thread, without blocking. `run()` (a task in the runtime's task group) writes them to the
store in batches: one batch at a time, in enqueue order, sync stores in a worker thread,
async stores awaited on the loop. A failed batch is retried with exponential backoff until
it lands. `flush(deadline)` at shutdown writes everything still pending.

Pending writes are keyed by (unit, materialization, rule): a newer write for the same key
replaces the older one in place (the store would keep only the last value anyway), so a
backlog grows with distinct assignments, not with evaluations. It is bounded by
`max_pending`; beyond it new writes are dropped, counted and logged, which only happens
when the store has been failing (or is far too slow) for a long time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.abc
import anyio.to_thread

from confidence.materialization import MaterializationNotSupportedError, VariantWriteOp

__all__ = ["MaterializationWriteQueue", "WriteQueueStats"]

logger = logging.getLogger("confidence.materialization")

_Key = tuple[str, str, str]  # (unit, materialization, rule)

#: How often repeated failure / drop warnings may be logged.
_WARN_INTERVAL: Final = 30.0
#: Without a way to wake the loop from other threads (an unknown async backend), the drain
#: loop also looks for work this often.
_POLL_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True)
class WriteQueueStats:
    pending: int  # waiting, including a batch being (re)tried
    written: int  # ops the store accepted
    dropped: int  # ops given up: queue full, or the store refuses writes altogether
    coalesced: int  # ops replaced by a newer write for the same (unit, materialization, rule)
    failures: int  # failed store calls, all time
    consecutive_failures: int  # failed store calls since the last success
    last_error: str | None


class MaterializationWriteQueue:
    """A bounded, thread-safe queue of materialization writes with a drain loop.

    Wiring (the runtime)::

        queue = MaterializationWriteQueue(store)
        resolver = FlagResolver(pool, store, write_sink=queue.enqueue)
        await task_group.start(queue.run)
        ...
        await queue.flush(anyio.current_time() + shutdown_timeout)  # before cancelling run
    """

    def __init__(
        self,
        store: Any,
        *,
        max_pending: int = 100_000,
        batch_size: int = 500,
        retry_initial: float = 0.2,
        retry_max: float = 30.0,
    ) -> None:
        if max_pending < 1 or batch_size < 1:
            raise ValueError("max_pending and batch_size must be >= 1")
        if not 0 < retry_initial <= retry_max:
            raise ValueError("need 0 < retry_initial <= retry_max")
        self._store = store
        self._async_store = inspect.iscoroutinefunction(getattr(store, "write", None))
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.retry_initial = retry_initial
        self.retry_max = retry_max

        self._lock = threading.Lock()  # guards everything below, from any thread
        self._pending: dict[_Key, str] = {}  # insertion-ordered: oldest first
        self._inflight: list[VariantWriteOp] = []  # the batch being written / retried
        self._inflight_keys: frozenset[_Key] = frozenset()
        self._written = 0
        self._dropped = 0
        self._coalesced = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._last_failure_warning = -_WARN_INTERVAL
        self._last_drop_warning = -_WARN_INTERVAL
        self._dropped_since_warning = 0

        # Set while run() is active: how other threads wake it, and what they wake.
        self._waker: Callable[[], None] | None = None
        self._wake_scheduled = False
        self._wake_event: anyio.Event | None = None
        self._drain_lock: anyio.Lock | None = None

    # -- producers (any thread) --------------------------------------------------------------

    def enqueue(self, ops: Iterable[VariantWriteOp]) -> None:
        """Queue writes. Never blocks on I/O and never raises for a full queue."""
        dropped = 0
        wake = False
        with self._lock:
            for op in ops:
                key = (op.unit, op.materialization, op.rule)
                if key in self._pending:
                    self._pending[key] = op.variant
                    self._coalesced += 1
                elif (
                    len(self._pending) + len(self._inflight) < self.max_pending
                    or key in self._inflight_keys
                ):
                    # (A newer value for a key being written is no new assignment: it fits.)
                    self._pending[key] = op.variant
                else:
                    dropped += 1
            if dropped:
                self._dropped += dropped
                self._dropped_since_warning += dropped
            if self._waker is not None and not self._wake_scheduled and self._pending:
                self._wake_scheduled = True
                wake = True
            waker = self._waker
        if dropped:
            self._warn_dropped()
        if wake and waker is not None:
            waker()

    __call__ = enqueue  # a queue is itself a valid `write_sink`

    # -- stats -------------------------------------------------------------------------------

    @property
    def stats(self) -> WriteQueueStats:
        with self._lock:
            return WriteQueueStats(
                pending=len(self._pending) + len(self._inflight),
                written=self._written,
                dropped=self._dropped,
                coalesced=self._coalesced,
                failures=self._failures,
                consecutive_failures=self._consecutive_failures,
                last_error=self._last_error,
            )

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._inflight)

    # -- the drain loop ----------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued ops until cancelled. Start it in the runtime's task group."""
        if self._waker is not None:
            raise RuntimeError("MaterializationWriteQueue.run() is already running")
        self._waker = self._make_waker()
        self._wake_event = anyio.Event()
        try:
            task_status.started()
            while True:
                await self._wait_for_work()
                if not await self._drain_once():
                    await anyio.sleep(self._retry_delay())
        finally:
            with self._lock:
                self._waker = None
                self._wake_scheduled = False

    async def flush(self, deadline: float) -> bool:
        """Write everything pending, retrying failures, until done or `deadline`.

        `deadline` is absolute, on anyio's clock (`anyio.current_time() + seconds`).
        Returns True when nothing is left. Works whether or not `run()` is running.
        """
        delay = min(0.05, self.retry_initial)
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while self.pending:
                if not await self._drain_once():
                    # Shorter waits than the background backoff: shutdown is waiting on us.
                    await anyio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, 1.0)
        left = self.pending
        if left:
            logger.warning(
                "Shutdown: %d materialization write(s) not written by the deadline "
                "(last error: %s)",
                left,
                self._last_error,
            )
        return left == 0

    async def _wait_for_work(self) -> None:
        with self._lock:
            if self._pending or self._inflight:
                return
            self._wake_event = anyio.Event()
            event = self._wake_event
        with anyio.move_on_after(_POLL_INTERVAL if self._waker is _poll_only else None):
            await event.wait()

    def _on_wake(self) -> None:
        # Runs on the loop thread.
        with self._lock:
            self._wake_scheduled = False
            event = self._wake_event
        if event is not None:
            event.set()

    def _make_waker(self) -> Callable[[], None]:
        """A thread-safe way to run `_on_wake` on this task's event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Not asyncio (the provider is asyncio-only through aiohttp, but the queue
            # itself is backend-neutral): fall back to polling.
            return _poll_only

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
                loop.call_soon_threadsafe(self._on_wake)

        return wake

    async def _drain_once(self) -> bool:
        """Write one batch. False when the store failed (the batch stays for a retry)."""
        if self._drain_lock is None:
            self._drain_lock = anyio.Lock()
        async with self._drain_lock:
            batch = self._take_batch()
            if not batch:
                return True
            try:
                if self._async_store:
                    await self._store.write(batch)
                else:
                    # Abandoned on cancellation (shutdown past its deadline) rather than
                    # blocking it; the batch stays in flight and HSET-style writes are
                    # idempotent, so a later retry is safe.
                    await anyio.to_thread.run_sync(self._store.write, batch, abandon_on_cancel=True)
            except MaterializationNotSupportedError as exc:
                # Retrying cannot help: this store never accepts writes.
                self._give_up(batch, exc)
                return True
            except Exception as exc:
                self._record_failure(batch, exc)
                return False
            self._record_success(batch)
            return True

    def _take_batch(self) -> list[VariantWriteOp]:
        with self._lock:
            if not self._inflight and self._pending:
                keys = []
                for key in self._pending:
                    keys.append(key)
                    if len(keys) >= self.batch_size:
                        break
                self._inflight = [VariantWriteOp(*key, self._pending.pop(key)) for key in keys]
                self._inflight_keys = frozenset(keys)
            return list(self._inflight)

    def _record_success(self, batch: list[VariantWriteOp]) -> None:
        with self._lock:
            self._inflight = []
            self._inflight_keys = frozenset()
            self._written += len(batch)
            recovered = self._consecutive_failures
            since = self._failing_since
            self._consecutive_failures = 0
            self._failing_since = None
        if recovered:
            logger.info(
                "Materialization store recovered after %d failed write(s) over %.1fs",
                recovered,
                time.monotonic() - since if since is not None else 0.0,
            )

    def _record_failure(self, batch: list[VariantWriteOp], exc: Exception) -> None:
        now = time.monotonic()
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._failures += 1
            self._consecutive_failures += 1
            if self._failing_since is None:
                self._failing_since = now
            self._last_error = message
            pending = len(self._pending) + len(self._inflight)
            failing_for = now - self._failing_since
            warn = (
                self._consecutive_failures == 1
                or now - self._last_failure_warning >= _WARN_INTERVAL
            )
            if warn:
                self._last_failure_warning = now
        if warn:
            logger.warning(
                "Materialization write of %d op(s) failed (%d pending, failing for %.1fs); "
                "will retry: %s",
                len(batch),
                pending,
                failing_for,
                message,
            )

    def _give_up(self, batch: list[VariantWriteOp], exc: Exception) -> None:
        with self._lock:
            self._inflight = []
            self._inflight_keys = frozenset()
            self._dropped += len(batch)
            self._last_error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "Materialization store does not support writes; dropped %d op(s): %s",
            len(batch),
            exc,
        )

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_drop_warning < _WARN_INTERVAL:
                return
            self._last_drop_warning = now
            count, self._dropped_since_warning = self._dropped_since_warning, 0
            total = self._dropped
            failing_for = now - self._failing_since if self._failing_since is not None else 0.0
            error = self._last_error
        logger.warning(
            "Materialization write queue full (%d pending): dropped %d write(s) (%d in total); "
            "the store has been failing for %.1fs (last error: %s)",
            self.max_pending,
            count,
            total,
            failing_for,
            error,
        )

    def _retry_delay(self) -> float:
        with self._lock:
            failures = self._consecutive_failures
        delay: float = min(self.retry_max, self.retry_initial * 2.0 ** max(0, failures - 1))
        return delay * random.uniform(0.8, 1.2)


def _poll_only() -> None:
    """The waker for a backend we cannot signal across threads: run() polls instead."""
