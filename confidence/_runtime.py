"""The provider's background runtime: one owner for everything that runs in the background.

`Runtime.run()` is a single task that owns, for its whole life, in this order:

1. the resolver pool, whose compile runs in a worker thread (never on the loop) while the
   next steps proceed, so the first state downloads during the compile; applying a state
   waits for it. A cold module cache compiles QUICK code and a later task moves the pool to
   OPTIMIZED code (`_engine.Tier`),
2. one `aiohttp.ClientSession` (created inside the loop, closed last),
3. an anyio task group running the state-sync loop, the log-flush loop, the
   materialization-write drain and that tier-up.

`run()` reports `started()` at once (before the pool exists) so that whoever starts it never
blocks on I/O; readiness is a separate "settled" signal: the first state was applied, or a
failure that will not heal by waiting (bad credentials, no resolver.wasm) was seen.

Where `run()` runs is the caller's choice, and the only difference between the async and
the sync API:
- async: in the application's own event loop, in a task group the provider enters in
  `start()`/`__aenter__` (the FastAPI/Starlette lifespan pattern);
- sync: in one background loop thread run by an anyio blocking portal (`PortalHost`), for
  WSGI apps, scripts and the OpenFeature SDK's init thread.

Stopping: `stop()` ends the loops, then a final flush of logs and queued materialization
writes runs shielded from cancellation but bounded by `shutdown_timeout`, so shutdown is
both lossless in the normal case and never hangs.

Status reporting: the runtime calls `listener(Transition)` on its loop thread for every real
change (first state, STALE, recovery, fatal error, configuration change). It does not know
about OpenFeature; the provider decides what to emit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.abc
import anyio.to_thread
from anyio.from_thread import BlockingPortal, BlockingPortalProvider

from confidence import _lazy
from confidence._config import BootstrapState, RuntimeSettings
from confidence._engine_types import Tier
from confidence._flag_logs import FlagLogPipeline, FlagLogStats
from confidence._http import FailureKind
from confidence._version import __version__

__all__ = [
    "BootstrapState",
    "PortalHost",
    "Runtime",
    "RuntimeSettings",
    "Transition",
    "TransitionKind",
]

logger = logging.getLogger("confidence.runtime")

# What a failed fetch means (typed by the syncer, never parsed from its message): before any
# state, these will not heal by waiting (FATAL); a 404 is not among them, because a new
# credential's first state may appear later (it is retried with backoff, status ERROR).
_FATAL_KINDS: Final = frozenset({FailureKind.AUTH, FailureKind.UNDECRYPTABLE})
# ... and these ones mean the CDN served a state we cannot use (not a network problem): with
# a state loaded, that is an ERROR (the last good state keeps serving) until a fetch succeeds.
_BAD_STATE_KINDS: Final = frozenset({FailureKind.UNDECRYPTABLE, FailureKind.INVALID_STATE})


#: How long flag-log delivery waits for the first state before opening its session anyway.
_DELIVERY_GRACE: Final = 1.0


def _import_aiohttp() -> None:
    _lazy.load("aiohttp")  # (fork-safe: see _lazy)


def _flag_key(name: str) -> str:
    # The resolver names flags "flags/<key>"; OpenFeature users know them by key.
    return name[6:] if name.startswith("flags/") else name


class StoreCloser:
    """Calls a user store's `close()` (or `aclose()`) exactly once, whichever runtime of the
    provider stops first (the reference closes it at shutdown and never reopens it)."""

    def __init__(self, store: object) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    async def close(self) -> None:
        """Close the store (bounded by the caller's scope); failures are logged."""
        import inspect

        if not self.claim():
            return
        store = self.store
        try:
            aclose = getattr(store, "aclose", None)
            close = getattr(store, "close", None)
            if aclose is not None and inspect.iscoroutinefunction(aclose):
                await aclose()
            elif close is not None and inspect.iscoroutinefunction(close):
                await close()
            elif callable(close):
                # A sync close may block (a socket, a pool): keep it off the loop.
                await anyio.to_thread.run_sync(close, abandon_on_cancel=True)
        except Exception:
            logger.exception("The materialization store's close() raised")


class TransitionKind(enum.Enum):
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"
    CONFIGURATION_CHANGED = "CONFIGURATION_CHANGED"


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    message: str | None = None
    fatal: bool = False
    flags_changed: tuple[str, ...] = ()
    first: bool = False  # READY: the very first state of this runtime


class _Status(enum.Enum):
    STARTING = "STARTING"  # no state yet
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"  # the CDN served a state we refused; the last good one keeps serving
    STOPPED = "STOPPED"


class Runtime:
    """One run of the background machinery. Not restartable: make a new one."""

    def __init__(self, settings: RuntimeSettings, listener: Callable[[Transition], None]) -> None:
        self._settings = settings
        self._listener = listener
        self.resolver: Any = None  # FlagResolver once the pool exists; read lock-free
        self._pool: Any = None
        self._sender: Any = None
        self._status = _Status.STARTING
        self._digests: Mapping[str, int] | None = None
        self.fatal_error: str | None = None
        self._syncer: Any = None
        self.last_error: str | None = None
        # Thread-safe signals, so the sync facade can wait without touching the loop.
        self._settled = threading.Event()
        self._finished = threading.Event()
        self._stop_requested = threading.Event()
        # Loop-bound, created in run().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_event: anyio.Event | None = None
        self._settled_event: anyio.Event | None = None
        # Flag logs (exposures, resolve info, telemetry): drained, de-duplicated, kept, sent.
        self._logs = FlagLogPipeline(
            interval=settings.log_poll_interval,
            dedup=settings.enable_apply_dedup,
            state_updated_at=lambda: self.state_loaded_at,
            analytics=settings.analytics,
            init_labels={"encryption": "true" if settings.encryption_key else "false"},
            spool=settings.log_spool,
        )
        # Delivery opens after the first state (_start_delivery): drains before that keep.
        self._logs.awaiting_sender = settings.send_logs
        self._backlog = self._logs.backlog  # read by stats()
        self._shutdown_deadline: float | None = None  # anyio clock, set when stopping
        # The last state applied: a forked child starts from it (see _fork).
        self.last_state: BootstrapState | None = None
        # Serving a state_cache_dir state that no sync has confirmed yet (reason STALE).
        self.serving_cached_state = False
        self.state_loaded_at: float | None = None  # wall clock; for stats
        self.events: Any = None  # _tracking.EventPublisher while running
        self._session: Any = None  # aiohttp.ClientSession, once delivery (or a store) needs it

    # -- read-only view (any thread) ---------------------------------------------------------

    @property
    def has_state(self) -> bool:
        return self._digests is not None and self._status is not _Status.STOPPED

    @property
    def is_stale(self) -> bool:
        return self._status is _Status.STALE

    @property
    def refusing_bad_state(self) -> bool:
        """The CDN serves a state we refused; the last good one keeps serving."""
        return self._status is _Status.ERROR

    @property
    def settled(self) -> bool:
        return self._settled.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def on_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def wait_settled(self, timeout: float | None) -> bool:
        """Block the calling (non-loop) thread until settled; True if settled in time."""
        return self._settled.wait(timeout)

    async def wait_settled_async(self) -> None:
        """Wait on the runtime's own loop until settled."""
        if self._settled.is_set():
            return
        assert self._settled_event is not None, "run() has not started"
        await self._settled_event.wait()

    def wait_finished(self, timeout: float | None) -> bool:
        return self._finished.wait(timeout)

    @property
    def dropped_log_batches(self) -> int:
        return self._logs.stats().dropped_batches

    @property
    def delivered_log_batches(self) -> int:
        return self._logs.stats().delivered_batches

    @property
    def shutdown_timeout(self) -> float:
        return self._settings.shutdown_timeout

    def log_stats(self) -> FlagLogStats:
        """Flag-log counters: delivered, dropped (exposures and resolve counts), dedup."""
        return self._logs.stats()

    # -- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask run() to wind down. Safe from any thread, before or after run() started."""
        self._stop_requested.set()
        loop = self._loop
        if loop is None or self._stop_event is None:
            return  # run() checks the flag when it starts
        if self.on_loop_thread():
            self._stop_event.set()
            return
        # RuntimeError: the loop is already closed, so run() is over.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._stop_event.set)

    # -- the task ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop_event = anyio.Event()
        self._settled_event = anyio.Event()
        if self._stop_requested.is_set():
            self._stop_event.set()
        task_status.started()
        try:
            await self._serve()
        finally:
            self.resolver = None
            self._status = _Status.STOPPED
            pool, self._pool = self._pool, None
            if pool is not None:
                # An evaluation that raced the shutdown: its exposures are counted (as lost)
                # rather than closed away with the pool.
                with contextlib.suppress(Exception):
                    self._logs.drain_now()
                pool.close()
            self._settle()
            self._finished.set()

    def _settle(self) -> None:
        self._settled.set()
        if self._settled_event is not None:
            self._settled_event.set()

    async def _serve(self) -> None:
        settings = self._settings
        try:
            self._pool = self._build_pool()  # compiles nothing yet: see _compile
        except Exception as exc:
            self._fatal(f"could not load the resolver: {type(exc).__name__}: {exc}")
            return
        self._logs.pool = self._pool

        # The compile runs while the session opens and the first state downloads; applying
        # that state waits for it (ResolverPool.set_state).
        async with anyio.create_task_group() as compiling, AsyncExitStack() as stack:
            compiling.start_soon(self._compile)
            stack.callback(compiling.cancel_scope.cancel)  # a stop before it finished
            session = None
            if settings.use_remote_materialization_store:
                # Resolves may need the store before READY: the session cannot wait.
                session = await self._open_session(stack)
            store = self._make_store(session)
            writes = None
            if store is not None:
                from confidence._materialization_writes import MaterializationWriteQueue

                # Writes leave the evaluation's latency path: queued, written by a task.
                writes = MaterializationWriteQueue(store)
            from confidence._resolve import FlagResolver

            sync_face = self._sync_face(store)
            self.resolver = FlagResolver(
                self._pool,
                sync_face,
                write_sink=writes.enqueue if writes is not None else None,
                native_store=sync_face if sync_face is not store else None,
            )

            if settings.bootstrap is not None:
                try:
                    boot = await anyio.to_thread.run_sync(settings.bootstrap)
                    await self._apply(boot.state, boot.account_id, boot.log_destinations)
                except Exception as exc:
                    self._fatal(f"could not load state_file: {exc}")
                    return

            syncer = None
            if settings.sync_state:
                from confidence._http_light import LightSession

                # The state fetch needs no aiohttp (see _http): READY does not wait for it.
                syncer = self._syncer = self._make_syncer(LightSession())

            try:
                async with anyio.create_task_group() as tg:
                    if syncer is not None:
                        await tg.start(syncer.run)
                        if settings.state_cache is not None and self._digests is None:
                            tg.start_soon(self._start_from_cache, syncer)
                    if settings.quick_start:
                        tg.start_soon(self._tier_up)
                    if not self._settled.is_set() and syncer is None:
                        # Nothing will ever bring a state: settle so waiters get an answer.
                        self._fatal("no state source: no state_file and state sync disabled")
                    if settings.send_logs:
                        tg.start_soon(self._start_delivery, stack, tg)
                    else:
                        await tg.start(self._logs.run)  # drains and discards
                    if writes is not None:
                        await tg.start(writes.run)
                    assert self._stop_event is not None
                    try:
                        await self._stop_event.wait()
                    finally:
                        # (Also when the owner is cancelled.) One budget for all of shutdown:
                        # the log deliveries in flight, shielded from the loops' cancellation,
                        # and the final flush below.
                        self._shutdown_deadline = anyio.current_time() + settings.shutdown_timeout
                        self._logs.begin_shutdown(self._shutdown_deadline)
                        # Empty the resolvers now, while the deliveries in flight finish.
                        with anyio.CancelScope(shield=True):
                            await self._logs.final_drain()
                    tg.cancel_scope.cancel()
            finally:
                # Final flush, also when the owner was cancelled: shielded so it still
                # delivers, bounded so a dead endpoint cannot hang shutdown.
                deadline = self._shutdown_deadline
                if deadline is None:  # failed before waiting for stop
                    deadline = anyio.current_time() + settings.shutdown_timeout
                # What the resolvers got while the deliveries in flight finished: drained
                # before (and outside) the bounded send, so it is at least counted.
                with anyio.CancelScope(shield=True):
                    await self._logs.final_drain(skip_empty=True)
                with anyio.CancelScope(deadline=deadline, shield=True) as scope:
                    queue = settings.event_queue
                    if (
                        settings.send_logs
                        and self._sender is None
                        and (self.last_state is not None or (queue is not None and len(queue)))
                    ):
                        # Stopped before delivery was set up: exposures or events may wait.
                        with contextlib.suppress(Exception):
                            await self._open_delivery(stack)
                    if writes is not None:
                        await writes.flush(scope.deadline)
                    if settings.store_closer is not None:
                        await settings.store_closer.close()  # after its last write
                    await self._logs.final_flush()
                    if self.events is not None:
                        await self.events.flush(final=True)
            self._logs.finish()  # reports what could not be delivered

    async def _open_session(self, stack: AsyncExitStack) -> Any:
        """The runtime's aiohttp session (opened once; closed when `stack` closes)."""
        if self._session is None:
            # ~50 ms of imports, in a worker thread so the loop stays responsive.
            await anyio.to_thread.run_sync(_import_aiohttp)
            if self._session is None:  # (another caller may have opened it meanwhile)
                import aiohttp

                # Created here because aiohttp binds it to this loop.
                self._session = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
                )
        return self._session

    async def _open_delivery(self, stack: AsyncExitStack) -> None:
        """Set up flag-log and event delivery (the log sender, the event publisher)."""
        session = await self._open_session(stack)
        if self._sender is not None:
            return
        settings = self._settings
        from confidence import _flag_logs
        from confidence._log_sender import DEFAULT_CLOUDFLARE_BASE_URL, LogSender

        # No await from here on: a state applied meanwhile sees the sender (set_routing).
        sender = LogSender(
            client_secret=settings.client_secret,
            session=session,
            api_base_url=settings.api_base_url,
            cloudflare_base_url=settings.cloudflare_base_url or DEFAULT_CLOUDFLARE_BASE_URL,
            retry=_flag_logs.RETRY_POLICY,
        )
        if self.last_state is not None:
            sender.set_routing(self.last_state.account_id, self.last_state.log_destinations)
        self._sender = self._logs.sender = sender
        if settings.event_queue is not None:
            from confidence._tracking import EventPublisher

            self.events = EventPublisher(
                settings.event_queue,
                client_secret=settings.client_secret,
                session=session,
                events_base_url=settings.events_base_url,
                interval=settings.log_poll_interval,
                sdk_version=__version__,
            )

    async def _start_delivery(self, stack: AsyncExitStack, tg: anyio.abc.TaskGroup) -> None:
        """Open delivery once the first state is in (or soon anyway), then run it.

        Deferred so that READY never waits for aiohttp's import; before the first state no
        resolve can leave an exposure, and tracked events wait in their queue.
        """
        assert self._settled_event is not None
        with anyio.move_on_after(_DELIVERY_GRACE):
            await self._settled_event.wait()
        await self._open_delivery(stack)
        if self.events is not None:
            tg.start_soon(self.events.run)
        await tg.start(self._logs.run)

    def _build_pool(self) -> Any:
        from confidence._pool import ResolverPool

        settings = self._settings
        return ResolverPool(
            settings.pool_size,
            sdk_version=__version__,
            cache_dir=settings.cache_dir,
            memory_limit=settings.memory_limit,
            enable_apply_dedup=settings.enable_apply_dedup,
            max_pending_exposure_bytes=settings.max_pending_exposure_bytes,
            quick_start=settings.quick_start,
            defer_compile=True,
        )

    async def _compile(self) -> None:
        try:
            # Abandoned on a stop: the pool is closed by then and never used again.
            await anyio.to_thread.run_sync(self._pool.compile, abandon_on_cancel=True)
        except Exception as exc:
            self._fatal(f"could not load the resolver: {type(exc).__name__}: {exc}")
            assert self._stop_event is not None
            self._stop_event.set()  # nothing can ever resolve: end the runtime

    async def _tier_up(self) -> None:
        """After a cold start on QUICK code, compile the OPTIMIZED tier and move onto it.

        Waits for the first state so the compile never delays READY. Abandoned (not
        awaited) on shutdown: the pool is closed by then and `tier_up` returns without
        touching it, so stopping never waits for a compile.
        """
        assert self._settled_event is not None
        await self._settled_event.wait()
        pool = self._pool
        if self.fatal_error is not None or pool.tier is not Tier.QUICK:
            return
        started = time.perf_counter()
        try:
            upgraded = await anyio.to_thread.run_sync(pool.tier_up, abandon_on_cancel=True)
        except Exception as exc:  # e.g. out of memory: the QUICK code keeps serving
            logger.warning("Could not compile the optimized resolver: %s", exc)
            return
        if upgraded:
            logger.debug(
                "Resolver moved to optimized code after %.0f ms",
                1e3 * (time.perf_counter() - started),
            )

    def _make_store(self, session: Any) -> object | None:
        settings = self._settings
        if settings.materialization_store is not None:
            return settings.materialization_store
        if settings.use_remote_materialization_store and session is not None:
            from confidence._remote_materialization import RemoteMaterializationStore

            return RemoteMaterializationStore(
                settings.client_secret, api_base_url=settings.api_base_url, session=session
            )
        return None

    def _sync_face(self, store: object | None) -> object | None:
        """What FlagResolver reads from: async stores get a sync face bound to this loop,
        so the sync evaluation path can use them too."""
        import inspect

        if store is None or not inspect.iscoroutinefunction(getattr(store, "read", None)):
            return store
        from confidence._store_bridge import LoopBoundStore

        assert self._loop is not None
        return LoopBoundStore(store, self._loop)

    def _make_syncer(self, session: Any) -> Any:
        from confidence._state_sync import StateSyncer

        settings = self._settings
        return StateSyncer(
            client_secret=settings.client_secret,
            session=session,
            apply=self._apply_fetched,
            encryption_key=settings.encryption_key,
            cdn_base_url=settings.cdn_base_url,
            poll_interval=settings.state_poll_interval,
            request_timeout=settings.state_request_timeout,
            max_state_bytes=settings.max_state_bytes,
            stale_after_failures=settings.stale_after_failures,
            on_ready=self._on_sync_ready,
            on_success=self._on_sync_success,
            on_stale=self._on_sync_stale,
            on_error=self._on_sync_error,
        )

    # -- state ---------------------------------------------------------------------------------

    async def _apply_fetched(self, fetched: Any) -> bool:
        changed = await self._apply(fetched.state, fetched.account_id, fetched.log_destinations)
        self.serving_cached_state = False
        cache = self._settings.state_cache
        if cache is not None and fetched.body:
            await anyio.to_thread.run_sync(cache.save, fetched.body)
        return changed

    async def _start_from_cache(self, syncer: Any) -> None:
        """Cold start with state_cache_dir: if the CDN fails (or is silent for the grace
        period) before any state is loaded, serve the cached state as STALE."""
        cache = self._settings.state_cache
        assert cache is not None
        with anyio.move_on_after(cache.grace):
            while (
                self._digests is None
                and syncer.consecutive_failures == 0
                and self.fatal_error is None
            ):
                await anyio.sleep(0.02)
        if self._digests is not None or self.fatal_error is not None:
            return  # the CDN answered, or credentials are wrong: not a case for the cache
        cached = await anyio.to_thread.run_sync(cache.load)
        if cached is None or self._digests is not None:
            return
        from confidence._state_cache import age_text

        boot = cached.state
        self.serving_cached_state = True  # before _apply: it settles as STALE, not READY
        try:
            await self._apply(boot.state, boot.account_id, boot.log_destinations)
        except Exception as exc:
            self.serving_cached_state = False
            logger.warning("Ignoring the cached resolver state: %s", exc)
            return
        self.state_loaded_at = cached.saved_at
        logger.warning(
            "Confidence is unreachable (%s): serving the cached resolver state from %s ago "
            "as STALE until the first successful sync",
            self.last_error or "no answer yet",
            age_text(cached.saved_at),
        )
        self._notify(Transition(TransitionKind.STALE, message=self._cached_message()))

    def _cached_message(self) -> str:
        return f"serving a cached resolver state; Confidence unreachable: {self.last_error}"

    async def _apply(self, state: bytes, account_id: str, destinations: tuple[int, ...]) -> bool:
        pool = self._pool
        # ~10 ms per instance: off the loop. The pool drains the logs of the instances it
        # retires, so no exposure is lost across the swap.
        summary = await anyio.to_thread.run_sync(pool.set_state, state, account_id)
        self.last_state = BootstrapState(state, account_id, destinations)
        self.state_loaded_at = time.time()
        if self._sender is not None:
            self._sender.set_routing(account_id, destinations)
        previous, self._digests = self._digests, summary.flag_digests
        logger.debug(
            "Resolver state applied: %d bytes, %d flag(s), %d segment(s)",
            len(state),
            len(summary.flag_digests),
            summary.segment_count,
        )
        if previous is None:
            self._status = _Status.STALE if self.serving_cached_state else _Status.READY
            self.fatal_error = None
            self.last_error = None
            self._settle()
            self._notify(Transition(TransitionKind.READY, first=True))
            return True
        current = summary.flag_digests
        changed = tuple(
            sorted(
                _flag_key(name)
                for name in previous.keys() | current.keys()
                if previous.get(name) != current.get(name)
            )
        )
        if self._status in (_Status.STALE, _Status.ERROR):
            self._status = _Status.READY
            self._notify(Transition(TransitionKind.READY))
        if changed:
            self._notify(Transition(TransitionKind.CONFIGURATION_CHANGED, flags_changed=changed))
        return bool(changed)

    def _on_sync_ready(self) -> None:
        self.last_error = None
        if self._status is _Status.STALE:
            self._status = _Status.READY
            self._notify(Transition(TransitionKind.READY, message="state sync recovered"))

    def _on_sync_stale(self) -> None:
        if self._status is _Status.READY:
            self._status = _Status.STALE
            self._notify(
                Transition(
                    TransitionKind.STALE,
                    message=f"resolver state could not be refreshed: {self.last_error}",
                )
            )

    def _on_sync_error(self, message: str) -> None:
        self.last_error = message
        if self.serving_cached_state:
            # Announced again on every failure (the provider drops repeats): the SDK only
            # believes STALE once it has processed initialize()'s READY.
            self._notify(Transition(TransitionKind.STALE, message=self._cached_message()))
        syncer = self._syncer
        failures = syncer.consecutive_failures if syncer is not None else 0
        if self._digests is not None and failures >= self._settings.stale_after_failures:
            # The syncer only goes STALE from its own READY; a state that came from a
            # state_file and was never refreshed is just as stale.
            self._on_sync_stale()
        kind = syncer.last_error_kind if syncer is not None else None
        if self._digests is not None and kind in _BAD_STATE_KINDS:
            self._on_bad_state(message)
        if self._digests is None and kind in _FATAL_KINDS:
            # Wrong secret or key: say so now instead of letting initialize() time out.
            self._fatal(message)

    def _on_bad_state(self, message: str) -> None:
        # Undecryptable, undecodable, refused by the resolver or too large: the last good
        # state keeps serving. Said once per episode (the syncer logs every attempt).
        if self._status in (_Status.READY, _Status.STALE):
            self._status = _Status.ERROR
            logger.error(
                "Refused a bad resolver state; still serving the last good one: %s", message
            )
            self._notify(
                Transition(
                    TransitionKind.ERROR,
                    message=f"refused a bad resolver state (serving the last good one): {message}",
                )
            )

    def _on_sync_success(self) -> None:
        # Any successful fetch ends a bad-state episode: a new good state (which _apply
        # already announced), or a 304 / the same content, i.e. the last good state again.
        if self._status is _Status.ERROR:
            self._status = _Status.READY
            self._notify(Transition(TransitionKind.READY, message="resolver state sync recovered"))

    def _fatal(self, message: str) -> None:
        first = self.fatal_error is None
        self.fatal_error = message
        self.last_error = message
        self._settle()
        if first:
            logger.error("Confidence provider cannot become ready: %s", message)
            self._notify(Transition(TransitionKind.ERROR, message=message, fatal=True))

    def _notify(self, transition: Transition) -> None:
        try:
            self._listener(transition)
        except Exception:
            logger.exception("Confidence status listener raised")


# -- the sync host -----------------------------------------------------------------------------

#: One background event-loop thread shared by every runtime that sync code starts; it exists
#: only while at least one such runtime runs.
_PORTALS = BlockingPortalProvider()


#: Sync-hosted runtimes of this process that are still running, flushed at interpreter exit.
#: Plain dict operations only (atomic under the GIL): the fork hook must not take a lock.
_LIVE_HOSTS: dict[int, PortalHost] = {}
_EXIT_HOOK_PID: int | None = None


def _reset_after_fork() -> BlockingPortalProvider:
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
