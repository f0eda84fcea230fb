"""What differs between the supported OpenFeature SDKs (openfeature-sdk 0.8.0 to 0.10.x).

* ``FlagValueType`` exists from 0.8.2 on; before that the object resolvers are annotated
  with the same recursive union, defined here.
* ``Reason.STALE`` exists from 0.8.2 on; before that the same string is the reason.
* ``api.set_provider_and_wait`` exists from 0.10 on; before it ``api.set_provider`` itself
  runs ``initialize()`` to the end (`set_provider_and_wait` here picks the right one).
* Event handlers: up to 0.9 the SDK runs every handler inline, on the thread that emits
  the event (so one event's handlers have all returned before the next event is emitted).
  From 0.10 on it submits each handler to its own thread pool, where handlers of two
  events emitted back to back (recovery READY, then CONFIGURATION_CHANGED) can run in
  either order. `wait_for_event_handlers` restores the inline guarantee: the provider calls
  it before each event it emits, so on every SDK a handler of one event sees the handlers
  of the previous event finished (see docs/errors.md, "Event order").
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Union

from openfeature import api
from openfeature.flag_evaluation import Reason
from openfeature.provider import FeatureProvider

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagValueType
else:
    try:
        from openfeature.flag_evaluation import FlagValueType
    except ImportError:  # openfeature-sdk < 0.8.2: the same union, spelled out
        FlagValueType = Union[  # noqa: UP007 (evaluated at run time on 3.10)
            bool, int, float, str, Sequence["FlagValueType"], Mapping[str, "FlagValueType"]
        ]

__all__ = [
    "HANDLER_WAIT_SECONDS",
    "REASON_STALE",
    "FlagValueType",
    "set_provider_and_wait",
    "wait_for_event_handlers",
]

#: The evaluation reason for a state no sync has confirmed (a plain string before 0.8.2).
REASON_STALE: Final[Reason | str] = getattr(Reason, "STALE", "STALE")


def set_provider_and_wait(provider: FeatureProvider) -> None:
    """Register `provider` and return once its initialize() has (0.10's contract)."""
    wait = getattr(api, "set_provider_and_wait", None)
    if wait is not None:
        wait(provider)
    else:  # before 0.10, set_provider blocks until initialize() returns or raises
        api.set_provider(provider)


#: Longest a new event waits for the previous event's handlers. A handler that hangs
#: delays the provider's events (never its evaluations) by at most this, once per event.
HANDLER_WAIT_SECONDS: Final = 2.0


def _handler_executor() -> ThreadPoolExecutor | None:
    """The SDK's event-handler pool (0.10+), or None where handlers run inline."""
    try:
        from openfeature import _event_support
    except ImportError:
        return None
    executor = getattr(_event_support, "_event_executor", None)
    return executor if isinstance(executor, ThreadPoolExecutor) else None


def wait_for_event_handlers(timeout: float = HANDLER_WAIT_SECONDS) -> None:
    """Return once every handler the SDK's pool had been given has returned (or on timeout).

    One blocker per pool worker, behind everything already queued: the pool is FIFO, so once
    all workers hold a blocker, every earlier handler has finished. A no-op on SDKs that run
    handlers inline, on a pool worker itself (a handler that triggers an event), and after
    the SDK's pool has shut down (interpreter exit).
    """
    executor = _handler_executor()
    if executor is None:
        return
    workers = getattr(executor, "_max_workers", None)
    threads = getattr(executor, "_threads", ())
    if not isinstance(workers, int) or workers < 1 or threading.current_thread() in threads:
        return
    barrier = threading.Barrier(workers + 1)

    def hold() -> None:
        # Broken: this wait timed out, or a blocker started after it did; either way done.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout)

    try:
        for _ in range(workers):
            executor.submit(hold)
    except RuntimeError:  # the pool is shut down
        barrier.abort()
        return
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout)


def reset_handler_pool_after_fork() -> None:
    """In a forked child: make the SDK's inherited handler pool usable again.

    The pool object is the parent's: its worker threads do not exist here, its idle count
    still says they do (a submit would queue work no thread runs), its queue holds the
    parent's pending handlers (they would run twice), and its lock may have been taken by a
    parent thread in the middle of a submit at the moment of the fork: every later submit,
    ours or the SDK's, would then block forever (seen: a grandchild's shutdown hanging in
    `ThreadPoolExecutor.submit`). The child gets a fresh lock, queue and idle count, so its
    first submit starts its own worker. Only if the SDK is already imported (an at-fork hook
    must not import), and only where the pool has the fields CPython 3.10-3.14 give it.
    """
    module = sys.modules.get("openfeature._event_support")
    executor = getattr(module, "_event_executor", None)
    if not isinstance(executor, ThreadPoolExecutor):
        return
    fields = ("_shutdown_lock", "_idle_semaphore", "_threads", "_work_queue")
    if not all(hasattr(executor, name) for name in fields):
        return
    # setattr: these are CPython internals, not typed API.
    setattr(executor, "_shutdown_lock", threading.Lock())  # noqa: B010
    setattr(executor, "_idle_semaphore", threading.Semaphore(0))  # noqa: B010
    setattr(executor, "_threads", set())  # noqa: B010
    setattr(executor, "_work_queue", queue.SimpleQueue())  # noqa: B010
