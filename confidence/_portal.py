"""The portal host: runs a `Runtime` for sync callers in one shared background event-loop
thread (an anyio blocking portal), and flushes those runtimes at interpreter exit.

Invariants:
- one loop thread serves every sync-hosted runtime of the process, and exists only while at
  least one runs (`BlockingPortalProvider` counts the leases);
- `PortalHost.start()` never waits for I/O (a thread and a task), so it is safe on a thread
  that runs another event loop; `stop()` is bounded by its timeout;
- in a forked child (`reset_after_fork`, called by `_fork`) the parent's portal provider and
  live hosts are forgotten without taking a lock, and never touched again;
- the exit hook is registered once per process and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from anyio.from_thread import BlockingPortal, BlockingPortalProvider

if TYPE_CHECKING:
    from confidence._runtime import Runtime

__all__ = ["PortalHost", "on_event_loop", "reset_after_fork"]

logger = logging.getLogger("confidence.runtime")


def on_event_loop() -> bool:
    """True when the calling thread is running an asyncio event loop right now (where a
    sync caller must not block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: One background event-loop thread shared by every runtime that sync code starts; it exists
#: only while at least one such runtime runs.
_PORTALS = BlockingPortalProvider()


#: Sync-hosted runtimes of this process that are still running, flushed at interpreter exit.
#: Plain dict operations only (atomic under the GIL): the fork hook must not take a lock.
_LIVE_HOSTS: dict[int, PortalHost] = {}
_EXIT_HOOK_PID: int | None = None


def reset_after_fork() -> BlockingPortalProvider:
    """In a forked child (see _fork): the loop thread is gone, but its lease count is not.

    Returns the inherited provider, which the caller must keep alive: finalizing it would
    close its portal, i.e. wait forever for the parent's loop thread. The parent's live hosts
    are forgotten: the child's exit flush must never touch them (the parent flushes its own).
    """
    global _PORTALS
    inherited, _PORTALS = _PORTALS, BlockingPortalProvider()
    _LIVE_HOSTS.clear()
    return inherited


def _flush_at_exit() -> None:
    """Interpreter exit without `shutdown()`: stop every sync-hosted runtime this process
    started, all at once, each bounded by its own `shutdown_timeout` (+0.5 s).

    Registered with `threading._register_atexit` where it exists: those hooks run before
    non-daemon threads are joined and, registered after `concurrent.futures.thread`, before
    the default executor refuses new work (asyncio's getaddrinfo needs it). Never raises.
    """
    hosts = [h for h in list(_LIVE_HOSTS.values()) if h.pid == os.getpid()]
    if not hosts:
        return
    try:
        for host in hosts:
            host.runtime.stop()
        for host in hosts:
            host.stop(host.runtime.shutdown_timeout + 0.5)
    except BaseException:  # an exit path must never print a traceback
        logger.debug("Confidence exit flush failed", exc_info=True)


def _ensure_exit_hook() -> None:
    """Register `_flush_at_exit` once per process (a forked child registers its own)."""
    global _EXIT_HOOK_PID
    pid = os.getpid()
    if pid == _EXIT_HOOK_PID:
        return
    _EXIT_HOOK_PID = pid
    import concurrent.futures.thread  # noqa: F401 - its exit hook must run after ours

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(_flush_at_exit)
            return
    except RuntimeError:  # already shutting down: nothing to register for
        return
    import atexit

    atexit.register(_flush_at_exit)


class PortalHost:
    """Runs a Runtime in the shared background loop thread (for sync callers)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pid = os.getpid()
        self._portal: BlockingPortal | None = None
        self._future: Future[None] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the runtime; returns once its task is running (never waits for I/O).

        Safe to call on a thread that runs another event loop: it only starts a thread and
        schedules a task.
        """
        with self._lock:
            portal = _PORTALS.__enter__()
            try:
                self._future = portal.start_task_soon(self.runtime.run)
            except BaseException:
                _PORTALS.__exit__(None, None, None)
                raise
            self._portal = portal
            self.pid = os.getpid()
            _LIVE_HOSTS[id(self)] = self
        _ensure_exit_hook()

    def stop(self, timeout: float) -> None:
        """Stop the runtime (final flush included) and release the loop thread. Bounded."""
        with self._lock:
            portal, future = self._portal, self._future
            self._portal = self._future = None
            _LIVE_HOSTS.pop(id(self), None)
        if portal is None or future is None:
            return
        try:
            self.runtime.stop()
            if not self.runtime.wait_finished(timeout):
                # Past the deadline: cancel the task; its finally-blocks still run.
                future.cancel()
                self.runtime.wait_finished(1.0)
        finally:
            _PORTALS.__exit__(None, None, None)
