"""Hosting: where a provider's runtime runs, what the OpenFeature SDK has been told, and how
a forked child resumes. `HostedProvider` is `ConfidenceProvider`'s base class; the provider
itself keeps the OpenFeature mapping and the evaluation hot path (which reads `_runtime`,
`_fork_resume` and the SDK view below as plain attributes: no indirection).

Lifecycle, one runtime (`_runtime.Runtime`) at a time, hosted in one of two places:

- **async** (`async with provider:` / `await provider.start()` ... `await provider.aclose()`):
  the runtime runs in the caller's event loop, in a task group entered by `start()` — the
  FastAPI/Starlette lifespan pattern. `start()` returns once the first state is loaded (or
  raises after `init_timeout`). `start()` and `aclose()` must run in the same task, as with
  any `async with` (a lifespan does this naturally).
- **sync** (`initialize()`, which the OpenFeature SDK calls from `set_provider`'s init thread
  or `set_provider_and_wait`'s caller): when no runtime is running, one is started in a
  background event-loop thread (an anyio blocking portal) and `initialize()` blocks until
  the first state or `init_timeout`. When the async runtime is already up, `initialize()`
  only attaches to it and returns at once.

`initialize()` on an event-loop thread (e.g. `set_provider_and_wait` inside `async def
lifespan` without `async with provider` first) must not block that loop: it starts the
runtime in the background thread and raises `ProviderNotReadyError` at once, explaining how
to start the provider in the loop instead; the provider then emits PROVIDER_READY when its
first state arrives.

`shutdown()` is idempotent and bounded. Called on the loop thread of an async-hosted runtime
(e.g. `api.shutdown()` inside a lifespan) it does nothing: blocking there would stall the
loop, and the `async with` exit closes the runtime properly right after.

Events (see `_on_transition`): the SDK emits its own PROVIDER_READY/ERROR when `initialize()`
returns/raises, so the provider never emits READY for its first state; afterwards it emits
STALE, READY (recovery), ERROR and CONFIGURATION_CHANGED (with `flags_changed`, only when flag
content changed) for real transitions only.

Invariants: at most one live runtime per provider (`_lifecycle_lock`, never held while waiting
for I/O); every SDK event is decided under `_event_lock`, so a state landing while
`initialize()` decides is either seen there or reported afterwards, never lost or doubled.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.to_thread
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import (
    ErrorCode,
    OpenFeatureError,
    ProviderFatalError,
    ProviderNotReadyError,
)
from openfeature.provider import AbstractProvider

from confidence import _fork
from confidence._config import ProviderConfig
from confidence._portal import PortalHost, on_event_loop
from confidence._runtime import Runtime
from confidence._sdk_compat import wait_for_event_handlers
from confidence._status import Transition, TransitionKind

__all__ = ["HostedProvider"]

logger = logging.getLogger("confidence.provider")

_P = TypeVar("_P", bound="HostedProvider")


class HostedProvider(AbstractProvider):
    """The lifecycle half of `ConfidenceProvider` (see the module docstring)."""

    def __init__(self, config: ProviderConfig, client_secret: str) -> None:
        super().__init__()
        self._settings = config.runtime
        self._client_secret = client_secret
        self._init_timeout = config.init_timeout
        self._shutdown_timeout = config.shutdown_timeout
        self._otel_metrics = config.otel_metrics
        self._otel_instrumented = False

        # Lifecycle: at most one live runtime; guarded by _lifecycle_lock (never held while
        # waiting for I/O).
        self._lifecycle_lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._last_runtime: Runtime | None = None  # for stats() once it has stopped
        self._host: PortalHost | None = None  # sync-hosted runtime
        # The async-hosted runtime and the task group (entered in start()) that owns it.
        self._owner: tuple[AsyncExitStack, Runtime] | None = None
        # What the OpenFeature SDK currently believes, to emit only real transitions.
        self._event_lock = threading.Lock()
        self._initialized = False  # initialize() has returned or raised
        self._reported: TransitionKind | None = None
        # The thread whose initialize() started from the state cache (see get_metadata).
        self._stale_after_sdk_ready: int | None = None
        # Set in a forked child whose parent was running this provider (see _fork).
        self._fork_resume: _fork.Resume | None = None
        _fork.track(self)

    def _after_sdk_ready(self) -> None:
        # The SDK calls get_metadata() on the initializing thread right after it recorded
        # READY for a successful initialize() (to name the provider in the READY event): the
        # first moment a STALE event can stick. A start from the state cache announces it
        # then, so the SDK's status is STALE from the start instead of READY until the next
        # failed sync re-announces it. (Any other SDK still gets that re-announcement.)
        if self._stale_after_sdk_ready == threading.get_ident():
            self._stale_after_sdk_ready = None
            threading.Thread(
                target=self._announce_cached_stale, name="confidence-stale", daemon=True
            ).start()

    def _announce_cached_stale(self) -> None:
        runtime = self._runtime
        with self._event_lock:
            # Under the lock, like _on_transition: a runtime READY (the CDN answered
            # meanwhile) either already cleared is_stale, or is reported after this STALE.
            if (
                runtime is None
                or not runtime.is_stale
                or self._reported is not TransitionKind.READY
            ):
                return
            self._reported = TransitionKind.STALE
            logger.debug("Emitting PROVIDER_STALE (started from the state cache)")
            self.emit_provider_stale(
                ProviderEventDetails(message="serving a cached resolver state")
            )

    def _instrument_otel(self) -> None:
        """Called once a start is under way (overridden: the provider's OpenTelemetry)."""

    # -- lifecycle: async ------------------------------------------------------------------------

    async def __aenter__(self: _P) -> _P:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self: _P) -> _P:
        """Run the provider in the current event loop; return once the first state is loaded.

        Raises `ProviderFatalError` (bad credentials, unusable state file) or
        `ProviderNotReadyError` (no state within `init_timeout`); nothing is left running then.
        """
        self._instrument_otel()
        with self._lifecycle_lock:
            if self._owner is not None:
                raise RuntimeError("ConfidenceProvider is already started")
            existing = self._live_runtime()
            if existing is None:
                runtime = self._new_runtime()
                self._runtime = runtime
            elif self._host is None or self._host.runtime is not existing:
                raise RuntimeError("ConfidenceProvider is already starting")
        if existing is not None:
            # Started earlier by the sync initialize() in its background thread: use it.
            await anyio.to_thread.run_sync(
                existing.wait_settled, self._init_timeout, abandon_on_cancel=True
            )
            if not existing.has_state:
                raise self._not_ready_error(existing)
            return self

        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        try:
            await task_group.start(runtime.run)
            with anyio.move_on_after(self._init_timeout):
                await runtime.wait_settled_async()
        except BaseException:
            # (No shield here: the task group's scope must be exited as the innermost one.
            # The runtime shields its own final flush.)
            runtime.stop()
            await stack.aclose()
            self._forget(runtime)
            raise
        with self._lifecycle_lock:
            self._owner = (stack, runtime)
        if not runtime.has_state:
            error = self._not_ready_error(runtime)
            await self.aclose()
            raise error
        return self

    async def aclose(self) -> None:
        """Stop the provider: cancel its loops and flush logs (bounded). Idempotent.

        Must run in the task that called `start()` when the runtime is async-hosted.
        """
        self._fork_resume = None
        with self._lifecycle_lock:
            owner, self._owner = self._owner, None
            host, self._host = self._host, None
            runtime = self._runtime
        self._reset_event_state()
        try:
            if host is not None:
                await anyio.to_thread.run_sync(host.stop, self._shutdown_timeout + 1.0)
            if owner is not None:
                stack, owned = owner
                owned.stop()
                await stack.aclose()  # waits for run(): loops cancelled, final flush done
        finally:
            if runtime is not None:
                self._forget(runtime)

    # -- lifecycle: sync (the OpenFeature SDK's entry points) ------------------------------------

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start (or attach to) the runtime and wait for the first state, bounded.

        Raises `ProviderNotReadyError` / `ProviderFatalError`; the runtime keeps running in
        the background then, and the provider emits PROVIDER_READY once a state arrives.
        """
        on_loop = on_event_loop()
        with self._lifecycle_lock:
            runtime = self._live_runtime()
            if runtime is None:
                runtime = self._new_runtime()
                host = PortalHost(runtime)
                host.start()  # starts a thread and schedules a task; never waits for I/O
                self._runtime, self._host = runtime, host
        # After the start: importing OpenTelemetry (~20 ms) overlaps the compile and fetch.
        self._instrument_otel()
        if not runtime.has_state:
            if on_loop:
                # Blocking here would stall (or deadlock) the caller's event loop.
                self._record_initialized(runtime)
                raise ProviderNotReadyError(
                    "ConfidenceProvider.initialize() was called on a running event loop, "
                    "where it must not block: the provider is loading its state in the "
                    "background and will emit PROVIDER_READY when it is ready. To be ready "
                    "before serving, use `async with ConfidenceProvider(...) as provider:` "
                    "(or `await provider.start()`) before registering it with OpenFeature."
                )
            runtime.wait_settled(self._init_timeout)
        self._finish_initialize(runtime)

    def shutdown(self) -> None:
        """Stop the runtime, flushing logs within `shutdown_timeout`. Idempotent."""
        self._fork_resume = None
        with self._lifecycle_lock:
            runtime, host = self._runtime, self._host
            if host is not None:
                self._host = None
                if runtime is host.runtime:
                    self._runtime = None
            elif runtime is None or runtime.on_loop_thread():
                # Nothing running; or async-hosted and we are on its loop, where blocking
                # would stall the loop: the owner's aclose() (the `async with` exit) closes
                # it right after.
                self._reset_event_state()
                return
        self._reset_event_state()
        if host is not None:
            host.stop(self._shutdown_timeout + 1.0)
        elif runtime is not None:
            # Async-hosted, called from another thread (e.g. the SDK replacing the
            # provider): stop it here; the owner's aclose() then finds it finished.
            runtime.stop()
            runtime.wait_finished(self._shutdown_timeout + 1.0)

    # -- lifecycle helpers ----------------------------------------------------------------------

    def _live_runtime(self) -> Runtime | None:
        """The running runtime, if any (call with `_lifecycle_lock` held)."""
        runtime = self._runtime
        if runtime is None or not runtime.finished:
            return runtime
        # It ended on its own (e.g. resolver.wasm missing, or stopped from another thread):
        # a new start begins afresh. An async owner keeps its task group until aclose().
        self._runtime = None
        host = self._host
        if host is not None and host.runtime is runtime:
            self._host = None
            host.stop(0.0)  # run() is over: this only releases the loop thread
        return None

    def _new_runtime(self) -> Runtime:
        self._reset_event_state()
        self._fork_resume = None  # started afresh: nothing inherited to resume
        runtime = Runtime(self._settings, self._on_transition)
        self._last_runtime = runtime
        return runtime

    def _forget(self, runtime: Runtime) -> None:
        with self._lifecycle_lock:
            if self._runtime is runtime:
                self._runtime = None

    def _not_ready_error(self, runtime: Runtime) -> OpenFeatureError:
        if runtime.fatal_error is not None:
            return ProviderFatalError(self._redact(runtime.fatal_error))
        detail = runtime.last_error or "no response yet"
        return ProviderNotReadyError(
            f"no resolver state within {self._init_timeout:g}s ({self._redact(detail)})"
        )

    def _finish_initialize(self, runtime: Runtime) -> None:
        if not self._record_initialized(runtime):
            raise self._not_ready_error(runtime)

    def _record_initialized(self, runtime: Runtime) -> bool:
        """Record what the SDK will believe once initialize() returns (True) or raises."""
        with self._event_lock:
            # Decided under the lock, so a state landing right now is either seen here or
            # reported by _on_transition afterwards: never lost, never doubled.
            self._initialized = True
            if runtime.has_state:
                # The SDK emits READY itself when we return; we must not add a second one.
                self._reported = TransitionKind.READY
                if runtime.is_stale:
                    # Served from the state cache: STALE once the SDK has recorded READY.
                    self._stale_after_sdk_ready = threading.get_ident()
                return True
            self._reported = TransitionKind.ERROR
            return False

    def _reset_event_state(self) -> None:
        with self._event_lock:
            self._initialized = False
            self._reported = None
            self._stale_after_sdk_ready = None

    def _on_transition(self, transition: Transition) -> None:
        """Runtime status change (on the runtime's loop thread) -> OpenFeature event.

        Events reach handlers in the order the runtime reports them, on every SDK: the
        previous event's handlers have returned before the next event is emitted (see
        `wait_for_event_handlers`). Outside the lock: a handler may call the provider.
        """
        if self._initialized:
            wait_for_event_handlers()
        with self._event_lock:
            if not self._initialized:
                return  # initialize() is still deciding; its outcome is the SDK's event
            kind = transition.kind
            if kind is TransitionKind.CONFIGURATION_CHANGED:
                if self._reported in (TransitionKind.READY, TransitionKind.STALE):
                    logger.debug(
                        "Emitting PROVIDER_CONFIGURATION_CHANGED (%d flag(s) changed)",
                        len(transition.flags_changed),
                    )
                    self.emit_provider_configuration_changed(
                        ProviderEventDetails(
                            flags_changed=list(transition.flags_changed),
                            message="resolver state updated",
                        )
                    )
                return
            if kind is self._reported:
                return
            self._reported = kind
            logger.debug("Emitting PROVIDER_%s", kind.name)
            if kind is TransitionKind.READY:
                self.emit_provider_ready(ProviderEventDetails(message=transition.message))
            elif kind is TransitionKind.STALE:
                self.emit_provider_stale(ProviderEventDetails(message=transition.message))
            else:
                self.emit_provider_error(
                    ProviderEventDetails(
                        message=self._redact(transition.message or "provider error"),
                        error_code=ErrorCode.PROVIDER_FATAL
                        if transition.fatal
                        else ErrorCode.GENERAL,
                    )
                )

    def _redact(self, text: str) -> str:
        return text.replace(self._client_secret, "***")

    # -- fork safety (see _fork) -----------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Right after os.fork(), in the child: forget (never use) the parent's runtime."""
        runtime, host, owner = self._runtime, self._host, self._owner
        # New locks, not acquired: a parent thread may have held the old ones at the fork.
        self._lifecycle_lock = threading.Lock()
        self._event_lock = threading.Lock()
        self._runtime, self._host, self._owner = None, None, None
        self._last_runtime = None  # the parent's counters are not this process's
        # The SDK's view (_initialized, _reported) is inherited as is: it still holds.
        self._fork_resume = _fork.inherit(runtime, host, owner)

    def _resume_after_fork(self, resume: _fork.Resume) -> _fork.AwaitingResolver:
        """First evaluation in a forked child: start this process's own runtime from the
        inherited state; return a resolver that waits (bounded) for it."""
        with self._lifecycle_lock:
            runtime = resume.runtime
            if runtime is None:
                runtime = self._live_runtime()
                if runtime is None:
                    runtime = _fork.child_runtime(self._settings, resume, self._on_transition)
                    self._last_runtime = runtime
                    host = PortalHost(runtime)
                    host.start()  # a thread and a task; never waits for I/O
                    self._runtime, self._host = runtime, host
                resume.runtime = runtime
            elif runtime.settled and self._fork_resume is resume:
                self._fork_resume = None  # resumed: from now on, the usual path
        return _fork.AwaitingResolver(runtime, self._init_timeout)
