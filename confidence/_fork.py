"""Fork safety: a forked child never touches what it inherited, and restarts lazily.

Pre-fork servers (gunicorn `--preload`, uWSGI, Celery's prefork pool, `multiprocessing` with
the fork start method) often start the provider in the parent and fork workers afterwards.
What the child inherits cannot be used:

- threads do not survive a fork: the sync facade's event-loop thread, anyio's worker threads
  and wasmtime's compile threads are gone, while the objects that wait for them remain;
- the aiohttp session's sockets are still the parent's: closing them from the child could
  send a TLS close_notify into the parent's connection;
- the wasmtime Stores hold the parent's not-yet-flushed exposure logs: flushed from both
  processes, every one of them would be counted twice;
- a lock that another parent thread held at the moment of the fork stays locked forever.

So, in the child, right after the fork (`os.register_at_fork`; nothing here may block or take
a lock another thread could have held):

- every provider (found through a weak reference, so tracking keeps none alive) replaces its
  locks without acquiring them and forgets its runtime. The runtime, its loop thread's portal
  and its resolver pool are parked in `_INHERITED`: kept alive but never called again, so no
  destructor closes a parent's socket or drains a parent's logs;
- the shared portal provider of the sync facade is replaced (its lease count is the
  parent's); `_wasm.engine` resets the wasmtime engine itself (a child compiles serially).

The first evaluation in the child then starts a fresh runtime (its own loop thread, session
and pool) that begins with the last state the parent had applied, so it answers at once, and
fetches the current state from the CDN right away. The parent is not affected at all.

Not supported: forking from the thread that runs the event loop of an async-hosted provider
(`async with provider:`). The child then keeps running that loop, and with it the inherited
background tasks; start the provider after the fork instead (e.g. in the worker's lifespan).
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio.to_thread

from confidence import _portal, _sdk_compat
from confidence._config import BootstrapState, RuntimeSettings
from confidence._runtime import Runtime
from confidence._status import Transition
from confidence._wasm.pool import NoStateError

if TYPE_CHECKING:
    from confidence._wasm.abi import Resolved, ResolveRequest
    from confidence._wasm.resolve import FlagResolver

__all__ = ["AwaitingResolver", "ForkAware", "Resume", "child_runtime", "inherit", "track"]

logger = logging.getLogger("confidence.fork")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


@dataclass(eq=False)
class Resume:
    """What a child needs to restart a provider that was running in its parent."""

    bootstrap: BootstrapState | None = field(repr=False)
    runtime: Runtime | None = None  # the child's own runtime, once started


_TRACKED: Final[weakref.WeakSet[ForkAware]] = weakref.WeakSet()
#: Objects inherited from the parent: referenced so that they are never finalized here.
_INHERITED: Final[list[object]] = []


def _immortal(obj: object) -> None:
    """Give `obj` one reference nobody owns, so it outlives interpreter teardown.

    Teardown clears module globals, which would finalize what `_INHERITED` holds: the
    parent's suspended `start_blocking_portal` generator then runs its `finally` against
    half-torn-down modules and prints "Exception ignored in: <generator object
    start_blocking_portal ...> TypeError" in every forked child; an inherited aiohttp session
    would warn "Unclosed client session". Never finalizing them is the only correct choice:
    they belong to the parent.
    """
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except Exception:  # not CPython: the objects are finalized at teardown, as before
        pass


_immortal(_INHERITED)


def track(provider: ForkAware) -> None:
    """Call `provider._after_fork_in_child()` in every child forked while it is alive."""
    _TRACKED.add(provider)


def inherit(runtime: Runtime | None, *others: object) -> Resume | None:
    """Park what a provider inherited; return how to resume it (None: nothing was running).

    Only reads plain attributes: in the child, locks may be held by threads that are gone.
    """
    _INHERITED.extend(obj for obj in (runtime, *others) if obj is not None)
    if runtime is None or runtime.finished:
        return None
    return Resume(bootstrap=runtime.last_state)


def child_runtime(
    settings: RuntimeSettings, resume: Resume, listener: Callable[[Transition], None]
) -> Runtime:
    """A fresh runtime for the child that begins with the state the parent had applied."""
    inherited = resume.bootstrap
    if inherited is not None:
        settings = replace(settings, bootstrap=lambda: inherited)
    logger.info(
        "Forked child (pid %d): starting the Confidence provider's own runtime", os.getpid()
    )
    return Runtime(settings, listener)


class AwaitingResolver:
    """Stands in for the resolver while a child's runtime starts: waits for its first state
    (bounded; never on an event loop thread, where the async path waits in a worker thread
    instead), then resolves with it. Without a state, NoStateError (PROVIDER_NOT_READY)."""

    def __init__(self, runtime: Runtime, timeout: float) -> None:
        self._runtime = runtime
        self._timeout = timeout

    def _resolver(self) -> FlagResolver:
        resolver = self._runtime.resolver
        if resolver is None or not self._runtime.has_state:
            raise NoStateError("the forked child's runtime has no resolver state yet")
        return resolver

    def resolve(self, request: ResolveRequest) -> Resolved:
        if not self._runtime.settled and not _portal.on_event_loop():
            self._runtime.wait_settled(self._timeout)
        return self._resolver().resolve(request)

    def explain(self, request: ResolveRequest) -> dict[str, Any]:  # (a JSON document)
        if not self._runtime.settled and not _portal.on_event_loop():
            self._runtime.wait_settled(self._timeout)
        return self._resolver().explain(request)

    async def resolve_async(self, request: ResolveRequest) -> Resolved:
        if not self._runtime.settled:
            await anyio.to_thread.run_sync(
                self._runtime.wait_settled, self._timeout, abandon_on_cancel=True
            )
        return await self._resolver().resolve_async(request)


def _after_fork_in_child() -> None:
    _INHERITED.append(_portal.reset_after_fork())
    with contextlib.suppress(Exception):  # (a hook must never break the fork itself)
        _sdk_compat.reset_handler_pool_after_fork()
    for provider in list(_TRACKED):
        # A hook must never break the fork itself.
        with contextlib.suppress(Exception):
            provider._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX: where there is no fork, there is nothing to do
    os.register_at_fork(after_in_child=_after_fork_in_child)
