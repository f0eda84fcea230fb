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
- sync: in one background loop thread run by an anyio blocking portal
  (`_portal.PortalHost`), for WSGI apps, scripts and the OpenFeature SDK's init thread.

Stopping: `stop()` ends the loops, then a final flush of logs and queued materialization
writes runs shielded from cancellation but bounded by `shutdown_timeout`, so shutdown is
both lossless in the normal case and never hangs.

Status reporting: the rules live in `_status.StatusMachine` (pure, unit tested without a
loop); the runtime feeds it typed events (`_feed`) and calls `listener(Transition)` on its
loop thread for every transition it returns. It does not know about OpenFeature; the provider
decides what to emit. Settings and defaults: `_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
import anyio.to_thread

from confidence import _lazy
from confidence._config import AnyMaterializationStore, BootstrapState, RuntimeSettings
from confidence._logs.flag_logs import FlagLogPipeline, FlagLogStats
from confidence._status import (
    CacheServed,
    Event,
    Fatal,
    StateApplied,
    Status,
    StatusMachine,
    Stopped,
    SyncFailed,
    SyncRecovered,
    SyncStale,
    SyncSucceeded,
    Transition,
    TransitionKind,
)
from confidence._version import __version__
from confidence._wasm.engine_types import Tier

if TYPE_CHECKING:
    # For the types of the runtime's parts only: each is imported where the runtime builds
    # it (most are loaded with the provider anyway; aiohttp is not, see _open_session).
    import aiohttp

    from confidence._http import Transport
    from confidence._logs.sender import LogSender
    from confidence._logs.tracking import EventPublisher
    from confidence._materialization_writes import MaterializationWriteQueue
    from confidence._state.cache import StateCache
    from confidence._state.sync import FetchedState, StateSyncer
    from confidence._wasm.abi import StateSummary
    from confidence._wasm.pool import ResolverPool
    from confidence._wasm.resolve import FlagResolver

__all__ = ["Runtime", "StoreCloser"]

logger = logging.getLogger("confidence.runtime")

#: How long flag-log delivery waits for the first state before opening its session anyway.
_DELIVERY_GRACE: Final = 1.0


def _import_aiohttp() -> None:
    _lazy.load("aiohttp")  # (fork-safe: see _lazy)


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


class Runtime:
    """One run of the background machinery. Not restartable: make a new one."""

    def __init__(self, settings: RuntimeSettings, listener: Callable[[Transition], None]) -> None:
        self._settings = settings
        self._listener = listener
        self.resolver: FlagResolver | None = None  # once the pool exists; read lock-free
        self._pool: ResolverPool | None = None
        self._sender: LogSender | None = None
        # The status, as a pure state machine fed typed events (_feed).
        self._status = StatusMachine(settings.stale_after_failures)
        self._syncer: StateSyncer | None = None
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
        # Serving a state_cache_dir state that no sync has confirmed yet (reason STALE): the
        # machine's flag, mirrored in a plain attribute for the evaluation hot path.
        self.serving_cached_state = False
        # Set at the CDN's first answer (a state, a failure) or a fatal error: what a cold
        # start from the state cache waits for (_start_from_cache). Loop-bound, made in run().
        self._first_answer: anyio.Event | None = None
        self.state_loaded_at: float | None = None  # wall clock; for stats
        self.events: EventPublisher | None = None  # while running
        # Once delivery (or a store) needs it.
        self._session: aiohttp.ClientSession | None = None

    # -- read-only view (any thread) ---------------------------------------------------------

    @property
    def has_state(self) -> bool:
        return self._status.has_state

    @property
    def is_stale(self) -> bool:
        return self._status.is_stale

    @property
    def refusing_bad_state(self) -> bool:
        """The CDN serves a state we refused; the last good one keeps serving."""
        return self._status.refusing_bad_state

    @property
    def status(self) -> Status:
        return self._status.status

    @property
    def fatal_error(self) -> str | None:
        return self._status.fatal_error

    @property
    def last_error(self) -> str | None:
        return self._status.last_error

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
        self._first_answer = anyio.Event()
        if self._stop_requested.is_set():
            self._stop_event.set()
        task_status.started()
        try:
            await self._serve()
        finally:
            self.resolver = None
            self._feed(Stopped())
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
        """Open the resources, run the loops until `stop()`, then flush (bounded).

        Opening: the pool (its compile runs while the rest opens and the first state
        downloads; applying that state waits for it, `ResolverPool.set_state`), the store and
        the resolver, the bootstrap state, the syncer. Any failure there is fatal.
        """
        pool = self._open_pool()
        if pool is None:
            return
        async with anyio.create_task_group() as compiling, AsyncExitStack() as stack:
            compiling.start_soon(self._compile, pool)
            stack.callback(compiling.cancel_scope.cancel)  # a stop before it finished
            writes = await self._open_resolver(stack, pool)
            if not await self._load_bootstrap():
                return
            syncer = self._open_syncer()
            try:
                await self._run_loops(stack, syncer, writes)
            finally:
                # Also when the owner was cancelled.
                await self._final_flush(stack, writes)
            self._logs.finish()  # reports what could not be delivered

    # -- opening ---------------------------------------------------------------------------------

    def _open_pool(self) -> ResolverPool | None:
        try:
            pool = self._pool = self._build_pool()  # compiles nothing yet: see _compile
        except Exception as exc:
            self._fatal(f"could not load the resolver: {type(exc).__name__}: {exc}")
            return None
        self._logs.pool = pool
        return pool

    async def _open_resolver(
        self, stack: AsyncExitStack, pool: ResolverPool
    ) -> MaterializationWriteQueue | None:
        """The store (and its write queue) and the resolver evaluations use."""
        session = None
        if self._settings.use_remote_materialization_store:
            # Resolves may need the store before READY: the session cannot wait.
            session = await self._open_session(stack)
        store = self._make_store(session)
        writes = None
        if store is not None:
            from confidence._materialization_writes import MaterializationWriteQueue

            # Writes leave the evaluation's latency path: queued, written by a task.
            writes = MaterializationWriteQueue(store)
        from confidence._wasm.resolve import FlagResolver

        sync_face = self._sync_face(store)
        self.resolver = FlagResolver(
            pool,
            sync_face,
            write_sink=writes.enqueue if writes is not None else None,
            native_store=sync_face if sync_face is not store else None,
        )
        return writes

    async def _load_bootstrap(self) -> bool:
        """Apply the state_file (or a forked parent's) state, if any; False: fatal."""
        bootstrap = self._settings.bootstrap
        if bootstrap is not None:
            try:
                boot = await anyio.to_thread.run_sync(bootstrap)
                await self._apply(boot.state, boot.account_id, boot.log_destinations)
            except Exception as exc:
                self._fatal(f"could not load state_file: {exc}")
                return False
        return True

    def _open_syncer(self) -> StateSyncer | None:
        if not self._settings.sync_state:
            return None
        from confidence._http_light import LightSession

        # The state fetch needs no aiohttp (see _http): READY does not wait for it.
        syncer = self._syncer = self._make_syncer(LightSession())
        return syncer

    # -- running -----------------------------------------------------------------------------

    async def _run_loops(
        self,
        stack: AsyncExitStack,
        syncer: StateSyncer | None,
        writes: MaterializationWriteQueue | None,
    ) -> None:
        """The state sync, the cache fallback, the tier-up, log delivery and the write
        drain, until `stop()`; then the drain that starts shutdown."""
        settings = self._settings
        async with anyio.create_task_group() as tg:
            if syncer is not None:
                await tg.start(syncer.run)
                if settings.state_cache is not None and not self._status.settled:
                    tg.start_soon(self._start_from_cache, settings.state_cache)
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
                # (Also when the owner is cancelled.) One budget for all of shutdown: the
                # log deliveries in flight, shielded from the loops' cancellation, and the
                # final flush.
                self._shutdown_deadline = anyio.current_time() + settings.shutdown_timeout
                self._logs.begin_shutdown(self._shutdown_deadline)
                # Empty the resolvers now, while the deliveries in flight finish.
                with anyio.CancelScope(shield=True):
                    await self._logs.final_drain()
            tg.cancel_scope.cancel()

    async def _final_flush(
        self, stack: AsyncExitStack, writes: MaterializationWriteQueue | None
    ) -> None:
        """Shielded so it still delivers, bounded so a dead endpoint cannot hang shutdown."""
        settings = self._settings
        deadline = self._shutdown_deadline
        if deadline is None:  # failed before waiting for stop
            deadline = anyio.current_time() + settings.shutdown_timeout
        # What the resolvers got while the deliveries in flight finished: drained before
        # (and outside) the bounded send, so it is at least counted.
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

    async def _open_session(self, stack: AsyncExitStack) -> aiohttp.ClientSession:
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
        from confidence._logs import flag_logs as _flag_logs
        from confidence._logs.sender import DEFAULT_CLOUDFLARE_BASE_URL, LogSender

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
            from confidence._logs.tracking import EventPublisher

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

    def _build_pool(self) -> ResolverPool:
        from confidence._wasm.pool import ResolverPool

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

    async def _compile(self, pool: ResolverPool) -> None:
        try:
            # Abandoned on a stop: the pool is closed by then and never used again.
            await anyio.to_thread.run_sync(pool.compile, abandon_on_cancel=True)
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
        if pool is None or self.fatal_error is not None or pool.tier is not Tier.QUICK:
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

    def _make_store(
        self, session: aiohttp.ClientSession | None
    ) -> AnyMaterializationStore | None:
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

    def _make_syncer(self, session: Transport) -> StateSyncer:
        from confidence._state.sync import StateSyncer

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

    async def _apply_fetched(self, fetched: FetchedState) -> bool:
        changed = await self._apply(fetched.state, fetched.account_id, fetched.log_destinations)
        cache = self._settings.state_cache
        if cache is not None and fetched.body:
            await anyio.to_thread.run_sync(cache.save, fetched.body)
        return changed

    async def _start_from_cache(self, cache: StateCache) -> None:
        """Cold start with state_cache_dir: if the CDN fails (or is silent for the grace
        period) before any state is loaded, serve the cached state as STALE."""
        assert self._first_answer is not None
        with anyio.move_on_after(cache.grace):
            await self._first_answer.wait()
        if self._status.settled:
            return  # the CDN answered, or credentials are wrong: not a case for the cache
        cached = await anyio.to_thread.run_sync(cache.load)
        if cached is None or self._status.has_state:
            return
        from confidence._state.cache import age_text

        boot = cached.state
        # Marked before the swap: an evaluation racing it already reports STALE.
        self.serving_cached_state = True
        try:
            summary = await self._set_state(boot)
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
        self._feed(CacheServed(summary.flag_digests))

    async def _set_state(self, boot: BootstrapState) -> StateSummary:
        pool = self._pool
        assert pool is not None
        # ~10 ms per instance: off the loop. The pool drains the logs of the instances it
        # retires, so no exposure is lost across the swap.
        summary = await anyio.to_thread.run_sync(pool.set_state, boot.state, boot.account_id)
        self.last_state = boot
        self.state_loaded_at = time.time()
        if self._sender is not None:
            self._sender.set_routing(boot.account_id, boot.log_destinations)
        logger.debug(
            "Resolver state applied: %d bytes, %d flag(s), %d segment(s)",
            len(boot.state),
            len(summary.flag_digests),
            summary.segment_count,
        )
        return summary

    async def _apply(self, state: bytes, account_id: str, destinations: tuple[int, ...]) -> bool:
        summary = await self._set_state(BootstrapState(state, account_id, destinations))
        transitions = self._feed(StateApplied(summary.flag_digests))
        return any(
            t.kind is TransitionKind.CONFIGURATION_CHANGED or t.first for t in transitions
        )

    def _on_sync_ready(self) -> None:
        self._feed(SyncRecovered())

    def _on_sync_stale(self) -> None:
        self._feed(SyncStale())

    def _on_sync_error(self, message: str) -> None:
        syncer = self._syncer
        self._feed(
            SyncFailed(
                kind=syncer.last_error_kind if syncer is not None else None,
                message=message,
                consecutive_failures=syncer.consecutive_failures if syncer is not None else 0,
            )
        )

    def _on_sync_success(self) -> None:
        self._feed(SyncSucceeded())

    def _fatal(self, message: str) -> None:
        self._feed(Fatal(message))

    def _feed(self, event: Event) -> tuple[Transition, ...]:
        """Feed the status machine; settle, log and report what it says, in its order."""
        status = self._status
        transitions = status.feed(event)
        self.serving_cached_state = status.serving_cached_state
        if status.settled and not isinstance(event, Stopped):
            self._settle()
        if self._first_answer is not None and not isinstance(event, (SyncSucceeded, Stopped)):
            self._first_answer.set()
        for transition in transitions:
            if transition.kind is TransitionKind.ERROR:
                if transition.fatal:
                    logger.error("Confidence provider cannot become ready: %s", transition.message)
                elif isinstance(event, SyncFailed):
                    logger.error(
                        "Refused a bad resolver state; still serving the last good one: %s",
                        event.message,
                    )
            self._notify(transition)
        return transitions

    def _notify(self, transition: Transition) -> None:
        try:
            self._listener(transition)
        except Exception:
            logger.exception("Confidence status listener raised")
