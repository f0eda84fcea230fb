"""The flag-log pipeline: drain the resolvers, prepare, keep a bounded backlog, deliver.

Two loops run in the runtime's task group (protocol.md §3):

- the **drain loop** wakes every `log_poll_interval` and, in a worker thread, drains every pool
  instance (each instance is taken out of service only for its drain call), de-duplicates
  exposures across instances and splits the result into requests below 4 MiB
  (`_exposures.LogPreparer`), then appends them to the backlog;
- the **send loop** delivers the backlog oldest first through `LogSender` (which retries with
  backoff and jitter on 5xx, 408, 429, timeouts and connection errors). A batch leaves the
  backlog only once delivered; after a failed delivery the loop pauses (exponential, at most
  `log_poll_interval`) and tries the same batch again.

Draining never waits for sending, so a slow or dead endpoint cannot make the resolvers' own
queues fill up: logs move into the backlog, which is bounded (256 batches, 64 MiB). Whatever is
lost is counted and logged at WARNING, never silent: batches the full backlog pushes out,
exposures a resolver instance refused because its own queue was full, and batches still
undelivered when shutdown's deadline passes.

Shutdown: the send currently in flight is shielded from the cancellation of the loops (so a
batch the server may already have stored is not sent again), bounded by the shutdown
deadline; then `final_flush()` drains everything and delivers what it can before the
deadline; `finish()` reports what is left.

Delivery is at-least-once: a request that times out after the server stored it is sent again.

The host adds what the guest cannot know to each request's `telemetry_data` by appending a
small serialized `WriteFlagLogsRequest` (protobuf merges concatenated messages): the counts
of earlier deliveries that succeeded or failed, and when the state was last updated.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.abc
import anyio.to_thread

from confidence import _lazy
from confidence._abi import now_millis
from confidence._exposures import Deduplicator, DedupStats, LogBatch, LogPreparer
from confidence._log_sender import LogSender, RetryPolicy

__all__ = [
    "DRAIN_ASSIGNED_BYTES",
    "MAX_BACKLOG_BATCHES",
    "MAX_BACKLOG_BYTES",
    "RETRY_POLICY",
    "FlagLogPipeline",
    "FlagLogStats",
]

logger = logging.getLogger("confidence.flag_logs")

#: Delivery batches kept for retry. Beyond either bound the oldest batch is dropped (and
#: counted): memory must stay bounded when the ingest endpoint is down for a long time.
MAX_BACKLOG_BATCHES: Final = 256
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: Exposure bytes per drain call: keeps each drained request (plus its resolve info) below
#: the request limit, so splitting is the exception.
DRAIN_ASSIGNED_BYTES: Final = 3 * 1024 * 1024
#: How LogSender retries one delivery (module-level so tests can shorten the timeouts).
RETRY_POLICY: RetryPolicy = RetryPolicy()
_UINT32_MAX: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class FlagLogStats:
    """Counters of the flag-log pipeline since the provider started."""

    delivered_batches: int = 0
    delivered_exposures: int = 0
    delivered_resolves: int = 0
    failed_deliveries: int = 0
    backlog_batches: int = 0
    backlog_bytes: int = 0
    #: Lost, for any reason: full backlog, full resolver queue, shutdown deadline.
    dropped_batches: int = 0
    dropped_exposures: int = 0
    dropped_resolves: int = 0
    #: Host-side (cross-instance) apply de-duplication; None when it is switched off.
    dedup: DedupStats | None = None


class _Backlog:
    """Bounded FIFO of prepared batches. Thread-safe (filled from the drain's worker thread).

    The batch being delivered is never the one pushed out, so a delivery that succeeds is
    never also counted as dropped.
    """

    def __init__(self) -> None:
        self._items: deque[LogBatch] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: LogBatch | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def extend(self, batches: list[LogBatch]) -> list[LogBatch]:
        """Append; returns the batches pushed out to respect the bounds (oldest first)."""
        dropped: list[LogBatch] = []
        with self._lock:
            items = self._items
            for batch in batches:
                items.append(batch)
                self._bytes += len(batch.body)
            while len(items) > 1 and (
                len(items) > MAX_BACKLOG_BATCHES or self._bytes > MAX_BACKLOG_BYTES
            ):
                if items[0] is self._inflight:
                    victim = items[1]
                    del items[1]
                else:
                    victim = items.popleft()
                self._bytes -= len(victim.body)
                dropped.append(victim)
        return dropped

    def begin(self) -> LogBatch | None:
        """The oldest batch, marked as in flight."""
        with self._lock:
            self._inflight = self._items[0] if self._items else None
            return self._inflight

    def end(self, batch: LogBatch, delivered: bool) -> None:
        with self._lock:
            self._inflight = None
            if delivered and self._items and self._items[0] is batch:
                self._items.popleft()
                self._bytes -= len(batch.body)

    def take_all(self) -> list[LogBatch]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            return items


class FlagLogPipeline:
    """Drains, prepares, keeps and delivers flag logs; one per runtime."""

    def __init__(
        self,
        *,
        interval: float,
        dedup: bool,
        state_updated_at: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._interval = interval
        self._state_updated_at = state_updated_at
        self._dedup = Deduplicator() if dedup else None
        self._preparer = LogPreparer(dedup=self._dedup)
        self.backlog = _Backlog()
        self.pool: Any = None  # ResolverPool, set once built
        self.sender: LogSender | None = None  # None: offline, logs are drained and discarded
        self._lock = threading.Lock()  # the counters below (drops come from worker threads)
        self._delivered = (0, 0, 0)  # batches, exposures, resolves
        self._dropped = (0, 0, 0)
        self._failed_deliveries = 0
        # Deliveries since the counts were last reported in a request's telemetry.
        self._report_succeeded = 0
        self._report_failed = 0
        self._closed = False
        self._wakeup: anyio.Event | None = None
        self._inflight: anyio.CancelScope | None = None
        self._stop_deadline: float | None = None
        self._rng = random.Random()

    # -- counters ----------------------------------------------------------------------------

    def stats(self) -> FlagLogStats:
        with self._lock:
            delivered, dropped, failed = self._delivered, self._dropped, self._failed_deliveries
        return FlagLogStats(
            delivered_batches=delivered[0],
            delivered_exposures=delivered[1],
            delivered_resolves=delivered[2],
            failed_deliveries=failed,
            backlog_batches=len(self.backlog),
            backlog_bytes=self.backlog.bytes,
            dropped_batches=dropped[0],
            dropped_exposures=dropped[1],
            dropped_resolves=dropped[2],
            dedup=self._dedup.stats() if self._dedup is not None else None,
        )

    def _record_drop(self, batches: int, exposures: int, resolves: int, why: str) -> None:
        with self._lock:
            b, e, r = self._dropped
            self._dropped = total = (b + batches, e + exposures, r + resolves)
        logger.warning(
            "Flag logs lost (%s): %d exposure(s) and %d resolve count(s)%s; "
            "%d exposure(s) and %d resolve count(s) lost since start",
            why,
            exposures,
            resolves,
            f" in {batches} batch(es)" if batches else "",
            total[1],
            total[2],
        )

    def _drop_batches(self, batches: list[LogBatch], why: str) -> None:
        if batches:
            self._record_drop(
                len(batches),
                sum(b.exposures for b in batches),
                sum(b.resolves for b in batches),
                why,
            )

    # -- draining (worker thread) ------------------------------------------------------------

    def _drain(self) -> None:
        pool = self.pool
        if pool is None:
            return
        drained = pool.flush_logs(wait=True, max_assigned_bytes=DRAIN_ASSIGNED_BYTES)
        if self.sender is None:
            return  # offline: drained only so that the resolvers' memory stays bounded
        _events, refused = pool.take_dropped_exposures()
        if refused:
            self._record_drop(0, refused, 0, "a resolver's exposure queue was full")
        batches = self._preparer.prepare(drained, now_millis())
        if self._closed:
            # An abandoned final drain finishing after shutdown: nobody will send these.
            self._drop_batches(batches, "drained after shutdown")
            return
        self._drop_batches(self.backlog.extend(batches), "the flag-log backlog was full")

    # -- loops -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The drain and send loops; run until cancelled."""
        self._wakeup = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain_loop)
            if self.sender is not None:
                tg.start_soon(self._send_loop)
            task_status.started()

    async def _drain_loop(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            try:
                await anyio.to_thread.run_sync(self._drain)
            except Exception:
                # Keep draining whatever one round hit; what was drained is in the backlog.
                logger.exception("Flag log drain failed")
            if self._wakeup is not None:
                self._wakeup.set()

    async def _send_loop(self) -> None:
        failures = 0
        while True:
            if not len(self.backlog):
                # Only the drain loop (on this loop thread) sets it, after filling the backlog.
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            if await self._deliver_next(shield=True):
                failures = 0
                continue
            failures += 1
            # The sender already retried this batch; pause before trying it again.
            pause = min(self._interval, 0.5 * 2 ** min(failures - 1, 16))
            await anyio.sleep(pause * (0.9 + 0.2 * self._rng.random()))

    async def _deliver_next(self, *, shield: bool) -> bool:
        """Deliver the oldest batch; True when it was delivered (and left the backlog)."""
        sender = self.sender
        batch = self.backlog.begin()
        if sender is None or batch is None:
            return False
        succeeded, failed = self._report_succeeded, self._report_failed
        body = batch.body + self._host_telemetry(succeeded, failed)
        ok = False
        try:
            # Shielded: stopping the loops must not abort a request the server may already
            # have stored (it would be sent again). begin_shutdown() bounds it.
            with anyio.CancelScope(shield=shield) as scope:
                if shield:
                    self._inflight = scope
                    if self._stop_deadline is not None:
                        scope.deadline = self._stop_deadline
                ok = await sender.send(body)
        finally:
            self._inflight = None
            self.backlog.end(batch, ok)
        if ok:
            # Those counts reached Confidence; this delivery is reported by the next one.
            self._report_succeeded = min(_UINT32_MAX, self._report_succeeded - succeeded + 1)
            self._report_failed -= failed
            with self._lock:
                b, e, r = self._delivered
                self._delivered = (b + 1, e + batch.exposures, r + batch.resolves)
        else:
            self._report_failed = min(_UINT32_MAX, self._report_failed + 1)
            with self._lock:
                self._failed_deliveries += 1
        return ok

    def _host_telemetry(self, succeeded: int, failed: int) -> bytes:
        _lazy.load("confidence._proto.confidence.flags.resolver.v1.api_pb2")  # (see _exposures)
        from confidence._proto.confidence.flags.resolver.v1 import api_pb2

        telemetry = api_pb2.TelemetryData()
        if succeeded or failed:
            telemetry.flush.succeeded = succeeded
            telemetry.flush.failed = failed
        updated = self._state_updated_at()
        if updated is not None:
            telemetry.state_age.last_state_update = int(updated * 1000)
        if not telemetry.ByteSize():
            return b""
        suffix: bytes = api_pb2.WriteFlagLogsRequest(telemetry_data=telemetry).SerializeToString()
        return suffix

    # -- shutdown ----------------------------------------------------------------------------

    def begin_shutdown(self, deadline: float) -> None:
        """Bound the in-flight delivery by `deadline` (anyio clock). Call before cancelling."""
        self._stop_deadline = deadline
        if self._inflight is not None:
            self._inflight.deadline = deadline

    async def final_flush(self) -> None:
        """Drain everything and deliver it; run inside a bounded, shielded scope."""
        # Abandoned at the deadline: the thread finishes on its own (see _drain's _closed).
        await anyio.to_thread.run_sync(self._drain, abandon_on_cancel=True)
        while len(self.backlog):
            if not await self._deliver_next(shield=False):
                break  # the sender already retried; the rest would fail the same way

    def finish(self) -> None:
        """After the final flush: report whatever could not be delivered."""
        self._closed = True
        self._drop_batches(self.backlog.take_all(), "not delivered before the shutdown deadline")
