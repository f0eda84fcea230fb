"""The pool of resolver instances.

A wasmtime Store must never be used by two threads at once, and a resolve must never wait
for a state swap. So: an instance belongs to one borrower at a time; a resolve takes any idle
instance (creating one, up to `size`, when none is idle); a state swap builds a *fresh*
instance with the new state off to the side, then retires old instances as they become
idle, after draining their logs (nothing is lost, and the old heap is freed instead of
growing). A trapped instance is dropped and replaced on demand.

Hot path (bench/README.md): borrowing is `list.pop()` from the idle list and returning is
`list.append()`, both atomic under the GIL, with no lock, semaphore or context manager on
the way; the lock and a condition are only taken when no instance is idle (create one or
wait), for stale instances after a swap, and by flushes. Instances are created lazily: one
at the first state, more only when resolves actually overlap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from confidence import _lazy
from confidence._version import __version__
from confidence._wasm.abi import (
    FlushedLogs,
    ResolveDoc,
    ResolverError,
    ResolverErrorKind,
    ResolverInstance,
    StateSummary,
    WasmTrap,
)
from confidence._wasm.engine_types import Tier
from confidence.errors import ConfidenceError

if TYPE_CHECKING:
    # (Imported by compile(), in its worker thread: loading wasmtime overlaps the start.)
    from confidence._wasm.engine import CompiledResolver

__all__ = ["NoStateError", "PoolStats", "ResolverPool"]

logger = logging.getLogger("confidence.pool")


class NoStateError(ConfidenceError):
    """No resolver state has been loaded yet."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    instances: int
    generation: int
    traps: int
    retired: int


class _Slot:
    """One instance of the pool; also the context manager of its borrowing.

    `with pool.acquire() as instance:` gives the slot back on the way out. When the body
    raised WasmTrap the slot is dropped instead and the trap swallowed: `trapped` says
    so, and the caller retries on a fresh instance. Any other exception gives it back
    and propagates.

    The slot itself is the context manager (no object per borrow) and `__exit__` inlines
    `release()`'s common case. Measured per borrow (100k, best of 9, 13:35): acquire +
    try/except + release by hand 0.27-0.28 µs; this 0.45 µs; a separate class with an
    object per borrow 0.76-1.08 µs; `@contextmanager` 1.8-2.4 µs. The 0.18 µs is below
    what an evaluation's figure resolves (~15 µs, noise of several µs here); the sync hot
    path (`resolve_doc`) inlines the borrow anyway.
    """

    __slots__ = ("flush_wanted", "generation", "instance", "pool", "trapped")

    def __init__(self, instance: ResolverInstance, generation: int, pool: ResolverPool) -> None:
        self.instance = instance
        self.generation = generation
        self.pool = pool
        # A waiting log flush wants this (borrowed) instance: release() hands it over
        # instead of making it idle, where another borrower could always take it first.
        self.flush_wanted = False
        self.trapped = False

    def __enter__(self) -> ResolverInstance:
        return self.instance

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> bool:
        pool = self.pool
        if exc_type is not None and issubclass(exc_type, WasmTrap):
            self.trapped = True
            pool.drop(self)
            return True
        if self.generation == pool._generation and not pool._closed and not self.flush_wanted:
            pool._idle.append(self)  # release(), inlined
            if pool._waiting:
                with pool._lock:
                    pool._released.notify()
        else:
            pool.release(self)
        return False


def default_pool_size() -> int:
    # Parallel wasm needs one Store per thread; more than the cores buys nothing.
    return max(2, min(8, os.cpu_count() or 2))


class ResolverPool:
    def __init__(
        self,
        size: int | None = None,
        *,
        sdk_version: str = __version__,
        enable_apply_dedup: bool = True,
        disable_exposure_collection: bool = False,
        cache_dir: Path | None = None,
        compiled: CompiledResolver | None = None,
        memory_limit: int | None = None,
        max_pending_exposure_bytes: int = 0,
        quick_start: bool = False,
        defer_compile: bool = False,
    ) -> None:
        """`quick_start`: when the compiled-module cache is cold, start on QUICK code
        (`_engine.Tier`) and let the owner call `tier_up()` in the background.

        `defer_compile`: return at once and let the owner call `compile()` (in a worker
        thread, e.g. while the first state downloads); `set_state` waits for it.
        """
        self.size = default_pool_size() if size is None else max(1, size)
        self._cache_dir = cache_dir
        self._quick_start = quick_start
        self._compiled: CompiledResolver | None = compiled
        self._compile_error: Exception | None = None
        self._compiled_ready = threading.Event()
        if compiled is None and not defer_compile:
            self.compile()
        elif compiled is not None:
            self._compiled_ready.set()
        self._instance_kwargs = {
            "sdk_version": sdk_version,
            "enable_apply_dedup": enable_apply_dedup,
            "disable_exposure_collection": disable_exposure_collection,
            "memory_limit": memory_limit,
            "max_pending_exposure_bytes": max_pending_exposure_bytes,
        }
        self._lock = threading.Lock()  # guards the slot list, counters and the state
        self._released = threading.Condition(self._lock)  # an instance came back
        self._waiting = 0  # borrowers (and waiting flushes) parked on _released
        self._slots: list[_Slot] = []  # every live instance, idle or borrowed
        self._idle: list[_Slot] = []  # pop/append without the lock (atomic under the GIL)
        self._creating = 0  # instances being created for borrowers (count towards size)
        self._state: tuple[bytes, str] | None = None
        self._generation = 0
        self._swap_lock = threading.Lock()  # one swap at a time
        self._retired_logs: list[bytes] = []  # drained from retired/trapped instances
        # Exposures instances dropped (pending queue full): FlagAssigned events, applied
        # flags; taken by the log flush, which reports them.
        self._dropped_exposures = (0, 0)
        self._traps = 0
        self._retired = 0
        self._closed = False

    # -- state -----------------------------------------------------------------------------

    @property
    def has_state(self) -> bool:
        return self._state is not None

    @property
    def generation(self) -> int:
        return self._generation

    def _new_instance(self) -> ResolverInstance:
        compiled = self._compiled or self._wait_compiled()
        return ResolverInstance(compiled, **self._instance_kwargs)  # type: ignore[arg-type]

    def compile(self) -> None:
        """Compile (or load from the module cache) the resolver; raises what that raised."""
        try:
            _lazy.load("confidence._wasm.engine")  # wasmtime, in the compile thread (see _lazy)
            from confidence._wasm.engine import CompiledResolver

            self._compiled = CompiledResolver.load(
                cache_dir=self._cache_dir, quick_if_cold=self._quick_start
            )
        except Exception as exc:
            self._compile_error = exc
            raise
        finally:
            self._compiled_ready.set()

    def _wait_compiled(self) -> CompiledResolver:
        self._compiled_ready.wait()
        if self._compiled is None:
            raise ResolverError(
                ResolverErrorKind.RESOLVER_UNAVAILABLE,
                f"the resolver could not be compiled: {self._compile_error}",
            )
        return self._compiled

    @property
    def tier(self) -> Tier | None:
        """The code serving resolves; None until `compile()` has finished."""
        return None if self._compiled is None else self._compiled.tier

    def set_state(self, state: bytes, account_id: str) -> StateSummary:
        """Validate `state` on a fresh instance, then make it the pool's state.

        Raises ResolverError for a bad state; the previous state keeps serving. Blocking
        (a few ms per instance): call it off the event loop.
        """
        with self._swap_lock:
            return self._install_locked(state, account_id)

    def tier_up(self) -> bool:
        """Compile the OPTIMIZED tier and move the pool onto it; False when nothing changed.

        Blocking for as long as a full compile (~0.3-0.7 s; wasmtime releases the GIL), so
        the owner runs it in a worker thread. The swap itself is a state swap with the
        current state: fresh instances, old ones drained and retired, no resolve waits.
        """
        if self._wait_compiled().tier is Tier.OPTIMIZED or self._closed:
            return False
        from confidence._wasm.engine import CompiledResolver

        compiled = CompiledResolver.load(cache_dir=self._cache_dir)
        with self._swap_lock:
            if self._closed:
                return False
            self._compiled = compiled
            if self._state is not None:
                self._install_locked(*self._state)
        return True

    def _install_locked(self, state: bytes, account_id: str) -> StateSummary:
        fresh = self._new_instance()
        summary = fresh.set_state(state, account_id)  # raises: old state untouched
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._state = (state, account_id)
            previous = len(self._slots)
            stale = self._take_idle_stale_locked()
            slot = _Slot(fresh, generation, self)
            self._slots.append(slot)
            self._idle.append(slot)
            self._released.notify_all()
        self._retire(stale)
        # Rebuild the rest off the hot path so resolves never pay instance creation.
        for _ in range(max(0, previous - 1)):
            instance = self._new_instance()
            instance.set_state(state, account_id)
            with self._lock:
                if self._generation != generation or self._current_locked() >= self.size:
                    break
                stale = self._take_idle_stale_locked(limit=1)
                slot = _Slot(instance, generation, self)
                self._slots.append(slot)
                self._idle.append(slot)
                self._released.notify()
            self._retire(stale)
        with self._lock:
            instances = sum(1 for slot in self._slots if slot.generation == generation)
        logger.debug(
            "Resolver pool changed: state generation %d on %s code, %d of %d instance(s) ready, "
            "%d flag(s)",
            generation,
            tier.name if (tier := self.tier) is not None else "no",
            instances,
            self.size,
            len(summary.flag_digests),
        )
        return summary

    def _current_locked(self) -> int:
        generation = self._generation
        return self._creating + sum(1 for slot in self._slots if slot.generation == generation)

    def _take_idle_stale_locked(self, limit: int | None = None) -> list[_Slot]:
        taken: list[_Slot] = []
        for slot in list(self._idle):
            if limit is not None and len(taken) >= limit:
                break
            if slot.generation != self._generation:
                try:
                    self._idle.remove(slot)
                except ValueError:  # a borrower popped it meanwhile; it retires on release
                    continue
                if slot in self._slots:
                    self._slots.remove(slot)
                taken.append(slot)
        return taken

    def _retire(self, slots: list[_Slot]) -> None:
        # Drain before dropping: an instance's logs are exposures we must not lose.
        for slot in slots:
            self._drain_into_retired(slot.instance)
            self._retired += 1

    def _drain_into_retired(self, instance: ResolverInstance) -> None:
        try:
            while True:
                flushed = instance.flush_logs()
                self._count_dropped(flushed)
                if flushed.write_flag_logs_request:
                    with self._lock:
                        self._retired_logs.append(flushed.write_flag_logs_request)
                if not flushed.more_pending:
                    break
        except (WasmTrap, ResolverError):
            pass  # a trapped instance's memory is not trustworthy

    # -- borrowing -------------------------------------------------------------------------

    @contextmanager
    def borrow(self, *, timeout: float | None = None) -> Iterator[ResolverInstance]:
        """Lend one instance holding the current state to the calling thread."""
        slot = self.acquire(timeout=timeout)
        try:
            yield slot.instance
        except WasmTrap:
            self.drop(slot)
            slot = None  # type: ignore[assignment]
            raise
        finally:
            if slot is not None:
                self.release(slot)

    def try_acquire(self) -> _Slot | None:
        """An instance without waiting for another borrower, or None (for the event loop).

        May create an instance (a few ms, once) when none is idle and the pool has room.
        """
        return self._acquire(blocking=False, timeout=None)

    def acquire(self, *, timeout: float | None = None) -> _Slot:
        # The common case (an idle instance of the current state) without a further call.
        idle = self._idle
        if idle:
            try:
                slot = idle.pop()
            except IndexError:
                pass
            else:
                if slot.generation == self._generation:
                    return slot
                self._retire_stale(slot)
        found = self._acquire(blocking=True, timeout=timeout)
        assert found is not None
        return found

    def _acquire(self, *, blocking: bool, timeout: float | None) -> _Slot | None:
        idle = self._idle
        while idle:
            try:
                slot = idle.pop()
            except IndexError:
                break
            if slot.generation == self._generation:
                return slot
            self._retire_stale(slot)
        return self._acquire_slow(blocking, timeout)

    def _retire_stale(self, slot: _Slot) -> None:
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
        self._retire([slot])

    def _acquire_slow(self, blocking: bool, timeout: float | None) -> _Slot | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        stale: list[_Slot] = []
        try:
            with self._lock:
                while True:
                    if self._state is None:
                        raise NoStateError("no resolver state loaded yet")
                    while self._idle:
                        try:
                            slot = self._idle.pop()
                        except IndexError:
                            break
                        if slot.generation == self._generation:
                            return slot
                        if slot in self._slots:
                            self._slots.remove(slot)
                        stale.append(slot)
                    if self._current_locked() < self.size:
                        self._creating += 1
                        state, account_id = self._state
                        generation = self._generation
                        break
                    if not blocking:
                        return None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("no resolver instance became free in time")
                    self._waiting += 1
                    try:
                        self._released.wait(remaining)
                    finally:
                        self._waiting -= 1
        finally:
            if stale:
                self._retire(stale)
        try:
            instance = self._new_instance()
            instance.set_state(state, account_id)
        except BaseException:
            with self._lock:
                self._creating -= 1
                self._released.notify()
            raise
        slot = _Slot(instance, generation, self)
        with self._lock:
            self._creating -= 1
            self._slots.append(slot)
        return slot

    def resolve_doc(self, prefix: bytes, context_json: bytes) -> ResolveDoc | None:
        """`ResolverInstance.resolve_doc` on a borrowed instance, borrowing and returning it
        in this one frame (the provider's hot path); None when the instance trapped (it is
        dropped, and the caller retries on a fresh one). The common cases of `acquire()` and
        `release()` inlined; everything else goes through them."""
        idle = self._idle
        try:
            slot = idle.pop()
        except IndexError:
            slot = self.acquire()
        else:
            if slot.generation != self._generation:
                self._retire_stale(slot)
                slot = self.acquire()
        try:
            doc = slot.instance.resolve_doc(prefix, context_json)
        except WasmTrap:
            self.drop(slot)
            return None
        except BaseException:
            self.release(slot)
            raise
        if slot.generation == self._generation and not self._closed and not slot.flush_wanted:
            idle.append(slot)
            if self._waiting:
                with self._lock:
                    self._released.notify()
        else:
            self.release(slot)
        return doc

    def release(self, slot: _Slot) -> None:
        if slot.generation == self._generation and not self._closed:
            if slot.flush_wanted:
                with self._lock:
                    if slot.flush_wanted:
                        slot.flush_wanted = False  # now the flush's; it releases it after
                        self._released.notify_all()
                        return
            self._idle.append(slot)
            if self._waiting:
                with self._lock:
                    self._released.notify()
            return
        # An instance of an old state (or a closed pool): retire it.
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
            self._released.notify()
        self._retire([slot])

    def drop(self, slot: _Slot) -> None:
        """Discard a trapped instance (try to rescue its logs first)."""
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
            self._traps += 1
            self._released.notify()
        self._drain_into_retired(slot.instance)

    # -- logs ------------------------------------------------------------------------------

    def _take_for_flush(self, slot: _Slot, wait: bool) -> bool:
        """Take `slot` out of the idle list, or with `wait` have its borrower hand it over.

        Waiting for it to become idle is not enough: with more borrowers than instances, a
        borrower takes an idle instance before the flush wakes up, every time.
        """
        with self._lock:
            if slot not in self._slots:
                return False  # retired or dropped: its logs went to _retired_logs
            try:
                self._idle.remove(slot)
                return True
            except ValueError:
                pass
            if not wait:
                return False
            slot.flush_wanted = True
            self._waiting += 1
            try:
                while slot.flush_wanted:  # release() clears it when it hands the slot over
                    self._released.wait(0.05)
                    if slot not in self._slots:
                        slot.flush_wanted = False
                        return False
                    if slot.flush_wanted:
                        try:
                            self._idle.remove(slot)  # released before the flag was set
                        except ValueError:
                            continue
                        slot.flush_wanted = False
                return True
            finally:
                self._waiting -= 1

    def flush_logs(self, *, wait: bool = False, max_assigned_bytes: int = 0) -> list[bytes]:
        """Drain every instance's accumulated logs as serialized WriteFlagLogsRequests.

        Busy instances are skipped unless `wait` (then each is waited for in turn). An idle
        instance is taken out of the idle list while it is drained, so a resolver never
        waits for a flush: it takes another instance (or creates one, up to `size`).
        """
        with self._lock:
            batches, self._retired_logs = self._retired_logs, []
            slots = list(self._slots)
        for slot in slots:
            if not self._take_for_flush(slot, wait):
                continue
            try:
                while True:
                    flushed: FlushedLogs = slot.instance.flush_logs(
                        max_assigned_bytes=max_assigned_bytes
                    )
                    self._count_dropped(flushed)
                    if flushed.write_flag_logs_request:
                        batches.append(flushed.write_flag_logs_request)
                    if not flushed.more_pending:
                        break
            except WasmTrap:
                with self._lock:
                    if slot in self._slots:
                        self._slots.remove(slot)
                    self._traps += 1
                continue
            self.release(slot)
        with self._lock:
            batches.extend(self._retired_logs)
            self._retired_logs = []
        return batches

    def _count_dropped(self, flushed: FlushedLogs) -> None:
        if flushed.dropped_flag_assigned or flushed.dropped_applied_flags:
            with self._lock:
                events, flags = self._dropped_exposures
                self._dropped_exposures = (
                    events + flushed.dropped_flag_assigned,
                    flags + flushed.dropped_applied_flags,
                )

    def take_dropped_exposures(self) -> tuple[int, int]:
        """(FlagAssigned events, applied flags) that instances dropped because their pending
        queue was full, since the previous call."""
        with self._lock:
            dropped, self._dropped_exposures = self._dropped_exposures, (0, 0)
        return dropped

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                size=self.size,
                instances=len(self._slots),
                generation=self._generation,
                traps=self._traps,
                retired=self._retired,
            )

    def close(self) -> None:
        with self._lock:
            self._slots.clear()
            self._idle.clear()
            self._state = None
            self._closed = True
            self._released.notify_all()
