"""The flag-log pipeline: drain the resolvers, prepare, keep a bounded backlog, deliver.

Two loops run in the runtime's task group (protocol.md §3):

- the **drain loop** wakes every `log_poll_interval` (every `BUSY_DRAIN_INTERVAL` while logs
  arrive at `BUSY_DRAIN_BYTES` per interval or faster) and, in a worker thread, drains every pool
  instance (each instance is taken out of service only for its drain call), de-duplicates
  exposures across instances and splits the result into requests below 4 MiB
  (`_exposures.LogPreparer`), then appends them to the backlog;
- the **send loop** delivers the backlog oldest first, pipelined: up to `MAX_IN_FLIGHT`
  deliveries at once through `LogSender` (which retries with backoff and jitter). A batch
  leaves the backlog only once delivered; after a failed delivery every sender pauses
  (exponential, at most `log_poll_interval`) and the batch goes back to the queue.

Draining never waits for sending, so a slow or dead endpoint cannot make the resolvers' own
queues fill up: logs move into the backlog, which is bounded (256 batches, 64 MiB).

Accounting (the `_Ledger`): for exposures and for resolve counts, at every moment
`produced = delivered + in_flight + queued + dropped + spooled`, read atomically under one
lock by `stats()`. "Produced" is what left the resolvers (after host de-duplication) plus what a
resolver refused because its own queue was full. Every drop is counted and reported in one
WARNING with exact numbers: batches the full backlog pushes out, exposures a resolver refused,
batches still undelivered when shutdown's deadline passes.

Shutdown (`_runtime`): `begin_shutdown()` bounds the deliveries in flight (shielded from
the loops' cancellation, so a batch the server may already have stored is not sent again);
`final_drain()` empties the resolver instances *before* the bounded final send, so nothing
stays inside them uncounted; `final_flush()` delivers what it can before the deadline;
`finish()` counts and reports what is left.

Delivery is at-least-once: a request that times out after the server stored it is sent again.

The host adds what the guest cannot know to each request's `telemetry_data` by appending a
small serialized `WriteFlagLogsRequest` (protobuf merges concatenated messages): the counts
of earlier deliveries that succeeded or failed (`flush`, always present), when the state was
last updated, the resolve analytics of the evaluations since the last delivery
(`resolve_rate` and the `resolve_latency` histogram, from `_stats.StatsRecorder`; the guest's
own per-instance `resolve_rate` is removed in `_exposures.LogPreparer`), and, until one
delivery has succeeded, `provider_init_rate` (count 1, label `encryption`). Whatever a failed
delivery carried rides on the next one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import anyio.to_thread

from confidence import _lazy
from confidence._logs.exposures import Deduplicator, DedupStats, LogBatch, LogPreparer
from confidence._logs.sender import LogSender, RetryPolicy
from confidence._logs.spool import LogSpool
from confidence._stats import LN_RATIO, HostTelemetry, StatsRecorder
from confidence._wasm.abi import now_millis

if TYPE_CHECKING:
    from confidence._wasm.pool import ResolverPool

__all__ = [
    "DRAIN_ASSIGNED_BYTES",
    "MAX_BACKLOG_BATCHES",
    "MAX_BACKLOG_BYTES",
    "MAX_IN_FLIGHT",
    "RETRY_POLICY",
    "DrainCadence",
    "FlagLogPipeline",
    "FlagLogStats",
    "next_drain_delay",
]

logger = logging.getLogger("confidence.flag_logs")

#: Delivery batches kept for retry. Beyond either bound the oldest batch is dropped (and
#: counted): memory must stay bounded when the ingest endpoint is down for a long time.
MAX_BACKLOG_BATCHES: Final = 256
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: Exposure bytes per drain call: keeps each drained request (plus its resolve info) below
#: the request limit, so splitting is the exception.
DRAIN_ASSIGNED_BYTES: Final = 3 * 1024 * 1024
#: While logs arrive fast enough to fill this much per `log_poll_interval`, the drain loop
#: wakes every BUSY_DRAIN_INTERVAL instead: under sustained traffic (e.g. a new user per
#: evaluation, every one an exposure) a resolver queues several MB of exposures per second,
#: which over a 10 s interval would approach its pending cap (64 MiB) and drop exposures.
#: Draining sooner keeps each instance's queue, and so its memory, at about that interval
#: of traffic.
BUSY_DRAIN_BYTES: Final = 4 * 1024 * 1024
BUSY_DRAIN_INTERVAL: Final = 0.5
#: Deliveries on the wire at once: one slow request must not hold the whole backlog back,
#: and a sustained exposure rate needs more than one round trip per batch to keep up.
MAX_IN_FLIGHT: Final = 4
#: How LogSender retries one delivery (module-level so tests can shorten the timeouts).
RETRY_POLICY: RetryPolicy = RetryPolicy()
_UINT32_MAX: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class FlagLogStats:
    """Counters of the flag-log pipeline since the provider started, read atomically.

    For exposures and for resolve counts alike:
    ``produced == delivered + in_flight + queued + dropped + spooled``; batches read back
    from the spool count as produced again (and as unspooled).
    """

    delivered_batches: int = 0
    delivered_exposures: int = 0
    delivered_resolves: int = 0
    failed_deliveries: int = 0
    backlog_batches: int = 0  # queued plus in flight
    backlog_bytes: int = 0
    #: Lost, for any reason: full backlog, full resolver queue, shutdown deadline.
    dropped_batches: int = 0
    dropped_exposures: int = 0
    dropped_resolves: int = 0
    #: Host-side (cross-instance) apply de-duplication; None when it is switched off.
    dedup: DedupStats | None = None
    produced_exposures: int = 0
    produced_resolves: int = 0
    in_flight_batches: int = 0
    in_flight_exposures: int = 0
    in_flight_resolves: int = 0
    queued_exposures: int = 0
    queued_resolves: int = 0
    #: Written to the spool directory (left this ledger) / read back from it (produced).
    spooled_exposures: int = 0
    spooled_resolves: int = 0
    unspooled_exposures: int = 0
    unspooled_resolves: int = 0


def _remove(items: deque[LogBatch], batch: LogBatch) -> None:
    # By identity: two batches can have equal bodies (deque.remove compares with ==).
    for index, item in enumerate(items):
        if item is batch:
            del items[index]
            return


def next_drain_delay(drained_bytes: int, elapsed: float, interval: float) -> float:
    """Seconds until the next drain, after one that brought `drained_bytes` accumulated over
    `elapsed` seconds: BUSY_DRAIN_INTERVAL (at most `interval`) when that rate would fill
    BUSY_DRAIN_BYTES or more per `interval`, else `interval`."""
    if drained_bytes * interval >= BUSY_DRAIN_BYTES * max(elapsed, 1e-3):
        return min(interval, BUSY_DRAIN_INTERVAL)
    return interval


class DrainCadence:
    """When the drain loop wakes next: `next_drain_delay`, with a memory of `interval`.

    Invariant: the delay is BUSY_DRAIN_INTERVAL (capped at `interval`) from a drain that
    brought logs at the busy rate until `interval` seconds have passed without another one;
    otherwise `interval`. Without that memory, traffic that comes in bursts with short pauses
    (a batch job, a benchmark alternating with other work, a request spike) fell back to the
    full interval at the first quiet half second, so the next drain found a whole interval of
    bursts queued in the resolvers: each instance's linear memory, which never shrinks, took
    that larger high-water mark, and the drain's transient buffers (bodies, parsed requests)
    grew with it. The cost is at most interval / BUSY_DRAIN_INTERVAL extra drains after the
    last burst, each a few microseconds and one small request per idle instance carrying only
    its telemetry (~33 bytes, as every interval's drain already sends).
    """

    __slots__ = ("_busy_at", "_interval", "_last")

    def __init__(self, interval: float, now: float) -> None:
        self._interval = interval
        self._last = now
        self._busy_at: float | None = None

    def next_delay(self, drained_bytes: int, now: float) -> float:
        """After a drain that brought `drained_bytes` at `now` (same clock as the start)."""
        interval = self._interval
        if next_drain_delay(drained_bytes, now - self._last, interval) < interval:
            self._busy_at = now
        self._last = now
        if self._busy_at is not None and now - self._busy_at < interval:
            return min(interval, BUSY_DRAIN_INTERVAL)
        return interval


class _Backlog:
    """Bounded FIFO of prepared batches, and the ledger of every exposure and resolve count
    that went through it. Thread-safe (filled from the drain's worker thread).

    A batch in flight is never the one pushed out, so a delivery that succeeds is never also
    counted as dropped. Every method moves counts between the ledger's columns under one
    lock, so `produced = delivered + in_flight + queued + dropped` holds at every moment.
    """

    def __init__(self) -> None:
        self._items: deque[LogBatch] = deque()  # queued and in flight, oldest first
        self._inflight: set[int] = set()  # id() of the batches being delivered
        self._bytes = 0
        self._lock = threading.Lock()
        # [batches, exposures, resolves] per column.
        self._produced = [0, 0, 0]
        self._delivered = [0, 0, 0]
        self._dropped = [0, 0, 0]
        self._in_flight = [0, 0, 0]
        self._spooled = [0, 0, 0]
        self._unspooled = [0, 0, 0]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    @staticmethod
    def _add(column: list[int], batch: LogBatch, sign: int = 1) -> None:
        column[0] += sign
        column[1] += sign * batch.exposures
        column[2] += sign * batch.resolves

    def extend(self, batches: list[LogBatch], *, unspooled: bool = False) -> list[LogBatch]:
        """Append; returns the batches pushed out to respect the bounds (oldest first),
        already counted as dropped. `unspooled`: read back from the spool (counted too)."""
        dropped: list[LogBatch] = []
        with self._lock:
            items = self._items
            for batch in batches:
                items.append(batch)
                self._bytes += len(batch.body)
                self._add(self._produced, batch)
                if unspooled:
                    self._add(self._unspooled, batch)
            while len(items) > len(self._inflight) and (
                len(items) > MAX_BACKLOG_BATCHES or self._bytes > MAX_BACKLOG_BYTES
            ):
                victim = next(b for b in items if id(b) not in self._inflight)
                _remove(items, victim)
                self._bytes -= len(victim.body)
                self._add(self._dropped, victim)
                dropped.append(victim)
        return dropped

    def refused(self, exposures: int) -> None:
        """Exposures a resolver instance dropped itself (its queue was full)."""
        with self._lock:
            self._produced[1] += exposures
            self._dropped[1] += exposures

    def begin(self) -> LogBatch | None:
        """The oldest batch not yet in flight, now marked as in flight."""
        with self._lock:
            for batch in self._items:
                if id(batch) not in self._inflight:
                    self._inflight.add(id(batch))
                    self._add(self._in_flight, batch)
                    return batch
            return None

    def end(self, batch: LogBatch, delivered: bool) -> None:
        with self._lock:
            if id(batch) not in self._inflight:
                return
            self._inflight.discard(id(batch))
            self._add(self._in_flight, batch, -1)
            if delivered:
                _remove(self._items, batch)
                self._bytes -= len(batch.body)
                self._add(self._delivered, batch)

    def take_all(self) -> list[LogBatch]:
        """Remove every batch not in flight, counted as dropped (`spooled` corrects that for
        those the caller then writes to the spool)."""
        with self._lock:
            taken = [b for b in self._items if id(b) not in self._inflight]
            self._items = deque(b for b in self._items if id(b) in self._inflight)
            self._bytes = sum(len(b.body) for b in self._items)
            for batch in taken:
                self._add(self._dropped, batch)
            return taken

    def spooled(self, batches: list[LogBatch]) -> None:
        """Batches counted as dropped (pushed out by `extend`, or taken by `take_all`) that
        were written to the spool instead: not lost, delivered by a later start."""
        with self._lock:
            for batch in batches:
                self._add(self._dropped, batch, -1)
                self._add(self._spooled, batch)

    def snapshot(self) -> _Ledger:
        """Every column, atomically."""
        with self._lock:
            return _Ledger(
                list(self._produced),
                list(self._delivered),
                list(self._dropped),
                list(self._in_flight),
                list(self._spooled),
                list(self._unspooled),
                len(self._items),
                self._bytes,
            )


@dataclass(frozen=True, slots=True)
class _Ledger:
    produced: list[int]
    delivered: list[int]
    dropped: list[int]
    in_flight: list[int]
    spooled: list[int]
    unspooled: list[int]
    kept: int
    kept_bytes: int


class FlagLogPipeline:
    """Drains, prepares, keeps and delivers flag logs; one per runtime."""

    def __init__(
        self,
        *,
        interval: float,
        dedup: bool,
        state_updated_at: Callable[[], float | None] = lambda: None,
        analytics: StatsRecorder | None = None,
        init_labels: Mapping[str, str] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        spool: LogSpool | None = None,
    ) -> None:
        self._interval = interval
        self._state_updated_at = state_updated_at
        # Where the resolve analytics come from (take_telemetry / give_back).
        self._analytics = analytics
        # provider_init_rate labels; sent until one delivery succeeds, then None.
        self._init_labels = dict(init_labels) if init_labels is not None else None
        self._init_reported = False  # a delivery carrying the init labels succeeded
        self._dedup = Deduplicator() if dedup else None
        self._preparer = LogPreparer(dedup=self._dedup)
        self._max_in_flight = max(1, max_in_flight)
        self._spool = spool
        self._spool_pending = False  # files left behind by the last partial load
        self._spool_loaded = False  # the spool was read once (by `run` or `final_flush`)
        # Batches read back from the spool: id -> (batch, its claimed file).
        self._claims: dict[int, tuple[LogBatch, Path]] = {}
        self.backlog = _Backlog()
        self.pool: ResolverPool | None = None  # set once built
        self.sender: LogSender | None = None  # None: offline, logs are drained and discarded
        # ... unless a sender is on its way (the runtime opens delivery after the first
        # state, so that READY never waits for aiohttp): until then drains keep what they
        # get in the backlog (bounded in bytes, and counted), for the sender to deliver.
        self.awaiting_sender = False
        self._drain_lock = threading.Lock()  # one drain at a time (the preparer is stateful)
        self._failed_deliveries = 0
        self._consecutive_failures = 0
        self._pause_until = 0.0  # anyio clock: every sender waits after a failure
        # Deliveries since the counts were last reported in a request's telemetry; taken
        # by the request that carries them (and given back if it fails).
        self._report_succeeded = 0
        self._report_failed = 0
        self._closed = False
        self._wakeup: anyio.Event | None = None
        self._inflight_scopes: set[anyio.CancelScope] = set()
        self._stop_deadline: float | None = None
        self._rng = random.Random()

    # -- counters ----------------------------------------------------------------------------

    def stats(self) -> FlagLogStats:
        ledger = self.backlog.snapshot()
        produced, delivered = ledger.produced, ledger.delivered
        dropped, in_flight = ledger.dropped, ledger.in_flight
        columns = zip(produced, delivered, dropped, in_flight, ledger.spooled, strict=True)
        queued = [p - d - x - f - sp for p, d, x, f, sp in columns]
        return FlagLogStats(
            delivered_batches=delivered[0],
            delivered_exposures=delivered[1],
            delivered_resolves=delivered[2],
            failed_deliveries=self._failed_deliveries,
            backlog_batches=ledger.kept,
            backlog_bytes=ledger.kept_bytes,
            dropped_batches=dropped[0],
            dropped_exposures=dropped[1],
            dropped_resolves=dropped[2],
            dedup=self._dedup.stats() if self._dedup is not None else None,
            produced_exposures=produced[1],
            produced_resolves=produced[2],
            in_flight_batches=in_flight[0],
            in_flight_exposures=in_flight[1],
            in_flight_resolves=in_flight[2],
            queued_exposures=queued[1],
            queued_resolves=queued[2],
            spooled_exposures=ledger.spooled[1],
            spooled_resolves=ledger.spooled[2],
            unspooled_exposures=ledger.unspooled[1],
            unspooled_resolves=ledger.unspooled[2],
        )

    def _report_drop(self, batches: int, exposures: int, resolves: int, why: str) -> None:
        if not (exposures or resolves):
            return  # telemetry only (counted as a dropped batch; no experiment data lost)
        total = self.stats()
        logger.warning(
            "Flag logs lost (%s): %d exposure(s) and %d resolve count(s)%s; "
            "%d exposure(s) and %d resolve count(s) lost since start",
            why,
            exposures,
            resolves,
            f" in {batches} batch(es)" if batches else "",
            total.dropped_exposures,
            total.dropped_resolves,
        )

    def _report_batches(self, batches: list[LogBatch], why: str) -> None:
        self._report_drop(
            len(batches),
            sum(b.exposures for b in batches),
            sum(b.resolves for b in batches),
            why,
        )

    # -- draining (worker thread) ------------------------------------------------------------

    def _drain(self, skip_empty: bool = False) -> int:
        """Drain the pool into the backlog; returns the bytes drained. `skip_empty`: leave
        out batches that carry only the resolver's telemetry (no exposure, no resolve count),
        for the extra drains of shutdown, which would otherwise each add a heartbeat request."""
        pool = self.pool
        if pool is None:
            return 0
        with self._drain_lock:
            drained = pool.flush_logs(wait=True, max_assigned_bytes=DRAIN_ASSIGNED_BYTES)
            size = sum(len(body) for body in drained)
            if self.sender is None and not self.awaiting_sender:
                return size  # offline: drained only so that the resolvers' memory stays bounded
            _events, refused = pool.take_dropped_exposures()
            if refused:
                self.backlog.refused(refused)
                self._report_drop(0, refused, 0, "a resolver's exposure queue was full")
            batches = self._preparer.prepare(drained, now_millis())
            if skip_empty:
                batches = [b for b in batches if b.exposures or b.resolves]
            if self._closed:
                # Drained after finish() (an evaluation racing the shutdown): nobody will
                # send these any more.
                self.backlog.extend(batches)
                late = self.backlog.take_all()
                self._set_aside(late, "produced after the final flush")
                return size
            pushed_out = self.backlog.extend(batches)
        if pushed_out:
            self._set_aside(pushed_out, "the flag-log backlog was full")
        return size

    def drain_now(self) -> None:
        """Drain synchronously (any thread): the runtime's last look before the pool closes."""
        self._drain(skip_empty=True)

    # -- loops -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The drain and send loops; run until cancelled."""
        self._wakeup = anyio.Event()
        if self.sender is not None and self._spool is not None:
            # Before anything is drained: what earlier runs left behind goes out first.
            await anyio.to_thread.run_sync(self._load_spool)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain_loop)
            if self.sender is not None:
                for _ in range(self._max_in_flight):
                    tg.start_soon(self._send_loop)
            task_status.started()

    def _wake_senders(self) -> None:
        # Only called on the loop thread: replacing the event and setting the old one
        # cannot interleave with a sender's check-then-wait (no await in between).
        if self._wakeup is not None:
            woken, self._wakeup = self._wakeup, anyio.Event()
            woken.set()

    async def _drain_loop(self) -> None:
        delay = self._interval
        cadence = DrainCadence(self._interval, anyio.current_time())
        while True:
            await anyio.sleep(delay)
            delay = self._interval
            try:
                # Not abandoned on cancellation: a drain half done would lose what it took.
                size = await anyio.to_thread.run_sync(self._drain)
                delay = cadence.next_delay(size, anyio.current_time())
            except Exception:
                # Keep draining whatever one round hit; what was drained is in the backlog.
                logger.exception("Flag log drain failed")
            self._wake_senders()

    async def _send_loop(self) -> None:
        """One of `max_in_flight` senders sharing the backlog. A bug in one round must not
        end the runtime (and with it every evaluation): it is logged and the loop goes on."""
        while True:
            try:
                await self._send_round()
            except Exception:
                logger.exception("Flag log delivery failed unexpectedly")
                await anyio.sleep(min(self._interval, 1.0))

    async def _send_round(self) -> None:
        """Deliver batches until the loop should wait (then return to `_send_loop`)."""
        while True:
            pause = self._pause_until - anyio.current_time()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            batch = self.backlog.begin()
            if batch is None and self._spool_pending:
                self._spool_pending = False  # (one sender loads; the others wait)
                await anyio.to_thread.run_sync(self._load_spool)
                self._wake_senders()
                continue
            if batch is None:
                assert self._wakeup is not None
                await self._wakeup.wait()
                continue
            if await self._deliver(batch, shield=True):
                self._consecutive_failures = 0
                continue
            self._consecutive_failures += 1
            # The sender already retried this batch; everyone pauses before trying again.
            backoff = min(self._interval, 0.5 * 2 ** min(self._consecutive_failures - 1, 16))
            backoff *= 0.9 + 0.2 * self._rng.random()
            self._pause_until = max(self._pause_until, anyio.current_time() + backoff)

    async def _deliver(self, batch: LogBatch, *, shield: bool) -> bool:
        """Deliver `batch` (marked in flight by `begin`); True when delivered."""
        sender = self.sender
        if sender is None:
            self.backlog.end(batch, False)
            return False
        succeeded, failed = self._report_succeeded, self._report_failed
        self._report_succeeded = self._report_failed = 0
        # Taken, not read: with several deliveries in flight each analytics count and
        # the init report ride on exactly one of them (given back if it fails).
        analytics = self._analytics
        delta = analytics.take_telemetry() if analytics is not None else None
        init_labels, self._init_labels = self._init_labels, None
        body = batch.body + self._host_telemetry(succeeded, failed, delta, init_labels)
        started = time.perf_counter()
        ok = False
        scope = anyio.CancelScope(shield=shield)
        try:
            # Shielded: stopping the loops must not abort a request the server may already
            # have stored (it would be sent again). begin_shutdown() bounds it.
            with scope:
                if shield:
                    self._inflight_scopes.add(scope)
                    if self._stop_deadline is not None:
                        scope.deadline = self._stop_deadline
                ok = await sender.send(body)
        finally:
            self._inflight_scopes.discard(scope)
            self.backlog.end(batch, ok)
            if ok and self._claims:
                claimed = self._claims.pop(id(batch), None)
                if claimed is not None:
                    with contextlib.suppress(OSError):
                        LogSpool.done(claimed[1])  # (one unlink)
            if ok:
                if init_labels is not None:
                    self._init_reported = True
                # Those counts reached Confidence; this delivery is reported by the next one.
                self._report_succeeded = min(_UINT32_MAX, self._report_succeeded + 1)
                logger.debug(
                    "Flag logs delivered: 1 batch, %d exposure(s), %d resolve count(s), %d bytes "
                    "in %.0f ms (%d batch(es) still queued)",
                    batch.exposures,
                    batch.resolves,
                    len(body),
                    1e3 * (time.perf_counter() - started),
                    len(self.backlog),
                )
            else:
                if analytics is not None and delta is not None:
                    analytics.give_back(delta)
                if init_labels is not None and not self._init_reported:
                    self._init_labels = init_labels
                self._report_succeeded = min(_UINT32_MAX, self._report_succeeded + succeeded)
                self._report_failed = min(_UINT32_MAX, self._report_failed + failed + 1)
                self._failed_deliveries += 1
        return ok

    def _host_telemetry(
        self,
        succeeded: int,
        failed: int,
        delta: HostTelemetry | None = None,
        init_labels: Mapping[str, str] | None = None,
    ) -> bytes:
        _lazy.load("confidence._proto.confidence.flags.resolver.v1.api_pb2")  # (see _exposures)
        from confidence._proto.confidence.flags.resolver.v1 import api_pb2

        telemetry = api_pb2.TelemetryData()
        # Always present (as the reference sends it), zeros included.
        telemetry.flush.SetInParent()
        telemetry.flush.succeeded = succeeded
        telemetry.flush.failed = failed
        if delta is not None and delta.count:
            _add_analytics(telemetry, delta)
        if init_labels is not None:
            init = telemetry.provider_init_rate.add(count=1)
            init.labels.update(init_labels)
        updated = self._state_updated_at()
        if updated is not None:
            telemetry.state_age.last_state_update = int(updated * 1000)
        if not telemetry.ByteSize():
            return b""
        suffix: bytes = api_pb2.WriteFlagLogsRequest(telemetry_data=telemetry).SerializeToString()
        return suffix

    # -- shutdown ----------------------------------------------------------------------------

    def begin_shutdown(self, deadline: float) -> None:
        """Bound the deliveries in flight by `deadline` (anyio clock). Call before cancelling."""
        self._stop_deadline = deadline
        for scope in list(self._inflight_scopes):
            scope.deadline = deadline

    async def final_drain(self, *, skip_empty: bool = False) -> None:
        """Empty every resolver instance into the backlog. Run it shielded and *before* the
        bounded final send: a drain takes milliseconds, and what it leaves behind would be
        lost without a count."""
        await anyio.to_thread.run_sync(self._drain, skip_empty)

    async def final_flush(self) -> None:
        """Deliver the backlog, pipelined; run inside a bounded, shielded scope."""
        if self.sender is None:
            return
        if self._spool is not None and not self._spool_loaded:
            # Stopped before the loops ran (a short script, a stop right after READY): what
            # earlier runs spooled still goes out, within the same deadline.
            await anyio.to_thread.run_sync(self._load_spool)

        failed = False

        async def worker() -> None:
            nonlocal failed
            while not failed and (batch := self.backlog.begin()) is not None:
                if not await self._deliver(batch, shield=False):
                    failed = True  # the sender already retried; the rest would fail too

        while True:
            async with anyio.create_task_group() as tg:
                for _ in range(self._max_in_flight):
                    tg.start_soon(worker)
            if failed or not self._spool_pending:
                return
            # Time is left: deliver more of what earlier runs spooled.
            self._spool_pending = False
            await anyio.to_thread.run_sync(self._load_spool)

    def finish(self) -> None:
        """After the final flush: count and report whatever could not be delivered."""
        with self._drain_lock:
            self._closed = True
        self._set_aside(self.backlog.take_all(), "not delivered before the shutdown deadline")

    # -- the spool ---------------------------------------------------------------------------

    def _load_spool(self) -> None:
        """Claim as much of the spool as the backlog has room for; the rest is claimed when
        the backlog has drained (`_send_loop`), so a large spool is never pushed out."""
        assert self._spool is not None
        self._spool_loaded = True
        claimed = self._spool.claim_all(
            max_batches=max(1, MAX_BACKLOG_BATCHES // 2 - len(self.backlog)),
            max_bytes=max(1, MAX_BACKLOG_BYTES // 2 - self.backlog.bytes),
        )
        self._spool_pending = bool(claimed) and self._spool.has_files()
        if not claimed:
            return
        batches = [c.batch for c in claimed]
        for c in claimed:
            self._claims[id(c.batch)] = (c.batch, c.claim)
        logger.info(
            "Delivering %d exposure(s) and %d resolve count(s) from the flag-log spool %s",
            sum(b.exposures for b in batches),
            sum(b.resolves for b in batches),
            self._spool.directory,
        )
        pushed_out = self.backlog.extend(batches, unspooled=True)
        if pushed_out:
            self._set_aside(pushed_out, "the flag-log backlog was full")

    def _set_aside(self, batches: list[LogBatch], why: str) -> None:
        """Batches that leave the backlog undelivered: back to (or into) the spool when
        there is one, else dropped. Either way counted, and reported in one WARNING."""
        if not batches:
            return
        lost = batches
        if self._spool is not None:
            saved: list[LogBatch] = []
            fresh: list[LogBatch] = []
            telemetry_only: list[LogBatch] = []
            for batch in batches:
                claimed = self._claims.pop(id(batch), None)
                if claimed is not None and LogSpool.release(claimed[1]):
                    saved.append(batch)
                elif batch.exposures or batch.resolves:
                    fresh.append(batch)
                else:
                    telemetry_only.append(batch)  # not worth a file
            written, lost = self._spool.save(fresh)
            lost += telemetry_only
            saved += written
            if saved and not self._closed:
                # Picked up again by this process once the backlog has room.
                self._spool_pending = True
            if saved:
                self.backlog.spooled(saved)
                logger.warning(
                    "Flag logs spooled to %s (%s): %d exposure(s) and %d resolve count(s) in "
                    "%d batch(es), delivered by the next start with this log_spool_dir",
                    self._spool.directory,
                    why,
                    sum(b.exposures for b in saved),
                    sum(b.resolves for b in saved),
                    len(saved),
                )
        self._discard(lost, why)

    def _discard(self, batches: list[LogBatch], why: str) -> None:
        # (Already counted as dropped by the backlog.)
        if batches:
            self._report_batches(batches, why)


def _add_analytics(telemetry: Any, delta: HostTelemetry) -> None:  # Any: protobuf (untyped)
    """Resolve counts by reason, and the latency histogram as dense spans of consecutive
    exponents (each span's `offset` is the exponent of its first bucket)."""
    for reason, count in sorted(delta.rates.items()):
        telemetry.resolve_rate.add(count=min(_UINT32_MAX, count), reason=reason)
    latency = telemetry.resolve_latency
    latency.sum = min(_UINT32_MAX, delta.sum_us)
    latency.count = min(_UINT32_MAX, delta.count)
    latency.ln_ratio = LN_RATIO
    span: Any = None  # a protobuf message, as `telemetry`
    previous: int | None = None
    for exponent in sorted(delta.buckets):
        if previous is None or exponent != previous + 1:
            span = latency.buckets.add(offset=exponent)
        span.counts.append(min(_UINT32_MAX, delta.buckets[exponent]))
        previous = exponent
