"""The pool of resolver instances.

A wasmtime Store must never be used by two threads at once, and a resolve must never wait
for a state swap. So: each instance has its own lock; a resolve takes any free instance
(creating one, up to `size`, when all are busy); a state swap builds a *fresh* instance
with the new state off to the side, then retires old instances as they become idle, after
draining their logs (nothing is lost, and the old heap is freed instead of growing).
A trapped instance is dropped and replaced on demand.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confidence._abi import (
    FlushedLogs,
    ResolverError,
    ResolverInstance,
    StateSummary,
    WasmTrap,
)
from confidence._engine import CompiledResolver
from confidence._version import __version__

__all__ = ["NoStateError", "PoolStats", "ResolverPool"]


class NoStateError(Exception):
    """No resolver state has been loaded yet."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    instances: int
    generation: int
    traps: int
    retired: int


class _Slot:
    __slots__ = ("generation", "instance", "lock")

    def __init__(self, instance: ResolverInstance, generation: int) -> None:
        self.instance = instance
        self.generation = generation
        self.lock = threading.Lock()


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
    ) -> None:
        self.size = default_pool_size() if size is None else max(1, size)
        self._compiled = (
            compiled if compiled is not None else CompiledResolver.load(cache_dir=cache_dir)
        )
        self._instance_kwargs = {
            "sdk_version": sdk_version,
            "enable_apply_dedup": enable_apply_dedup,
            "disable_exposure_collection": disable_exposure_collection,
            "memory_limit": memory_limit,
        }
        self._lock = threading.Lock()  # guards the slot list and the state
        self._slots: list[_Slot] = []
        self._available = threading.Semaphore(self.size)
        self._state: tuple[bytes, str] | None = None
        self._generation = 0
        self._swap_lock = threading.Lock()  # one swap at a time
        self._retired_logs: list[bytes] = []  # drained from retired/trapped instances
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
        return ResolverInstance(self._compiled, **self._instance_kwargs)  # type: ignore[arg-type]

    def set_state(self, state: bytes, account_id: str) -> StateSummary:
        """Validate `state` on a fresh instance, then make it the pool's state.

        Raises ResolverError for a bad state; the previous state keeps serving. Blocking
        (a few ms per instance): call it off the event loop.
        """
        with self._swap_lock:
            fresh = self._new_instance()
            summary = fresh.set_state(state, account_id)  # raises: old state untouched
            with self._lock:
                self._generation += 1
                generation = self._generation
                self._state = (state, account_id)
                previous = len(self._slots)
                stale = self._take_idle_stale_locked()
                self._slots.append(_Slot(fresh, generation))
            self._retire(stale)
            # Rebuild the rest off the hot path so resolves never pay instance creation.
            for _ in range(max(0, previous - 1)):
                instance = self._new_instance()
                instance.set_state(state, account_id)
                with self._lock:
                    if self._generation != generation or self._current_locked() >= self.size:
                        break
                    stale = self._take_idle_stale_locked(limit=1)
                    self._slots.append(_Slot(instance, generation))
                self._retire(stale)
            return summary

    def _current_locked(self) -> int:
        return sum(1 for slot in self._slots if slot.generation == self._generation)

    def _take_idle_stale_locked(self, limit: int | None = None) -> list[_Slot]:
        taken: list[_Slot] = []
        for slot in list(self._slots):
            if limit is not None and len(taken) >= limit:
                break
            if slot.generation != self._generation and slot.lock.acquire(blocking=False):
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
        """A free instance without waiting, or None (the event loop must never block)."""
        if not self._available.acquire(blocking=False):
            return None
        return self._claim()

    def acquire(self, *, timeout: float | None = None) -> _Slot:
        if not self._available.acquire(timeout=timeout):
            raise TimeoutError("no resolver instance became free in time")
        return self._claim()

    def _claim(self) -> _Slot:
        # The semaphore guarantees a free slot exists or may be created.
        try:
            with self._lock:
                if self._state is None:
                    raise NoStateError("no resolver state loaded yet")
                for slot in self._slots:
                    if slot.generation == self._generation and slot.lock.acquire(blocking=False):
                        return slot
                state, account_id = self._state
                generation = self._generation
            instance = self._new_instance()
            instance.set_state(state, account_id)
            slot = _Slot(instance, generation)
            slot.lock.acquire()
            with self._lock:
                self._slots.append(slot)
            return slot
        except BaseException:
            self._available.release()
            raise

    def release(self, slot: _Slot) -> None:
        retire = False
        with self._lock:
            # Retire instances of an old state, and extras beyond `size` (a swap and a
            # burst of borrowers may both have created one).
            stale = slot.generation != self._generation
            if slot in self._slots and (stale or self._current_locked() > self.size):
                self._slots.remove(slot)
                retire = True
        if retire:
            self._retire([slot])
        else:
            slot.lock.release()
        self._available.release()

    def drop(self, slot: _Slot) -> None:
        """Discard a trapped instance (try to rescue its logs first)."""
        self._drop(slot)
        self._available.release()

    def _drop(self, slot: _Slot) -> None:
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
            self._traps += 1
        self._drain_into_retired(slot.instance)
        if slot.lock.locked():
            slot.lock.release()  # so a waiting flush does not block on a dead slot

    # -- logs ------------------------------------------------------------------------------

    def flush_logs(self, *, wait: bool = False, max_assigned_bytes: int = 0) -> list[bytes]:
        """Drain every instance's accumulated logs as serialized WriteFlagLogsRequests.

        Busy instances are skipped unless `wait` (then each is waited for in turn).
        """
        with self._lock:
            batches, self._retired_logs = self._retired_logs, []
            slots = list(self._slots)
        for slot in slots:
            if not slot.lock.acquire(blocking=wait):
                continue
            try:
                if slot not in self._slots:
                    continue  # retired meanwhile; its logs went to _retired_logs
                while True:
                    flushed: FlushedLogs = slot.instance.flush_logs(
                        max_assigned_bytes=max_assigned_bytes
                    )
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
            finally:
                if slot.lock.locked():
                    slot.lock.release()
        with self._lock:
            batches.extend(self._retired_logs)
            self._retired_logs = []
        return batches

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
            self._state = None
            self._closed = True
