"""Event tracking: OpenFeature `track()` -> Confidence events (protocol §4).

Flow:

1. `build_event()` turns `(name, context, details)` into one Confidence `Event` in proto-JSON,
   with the payload merge rules of §4.1 exactly: the `details.attributes` fields at the top
   level, then `"value"` (if not None; an explicit 0 is kept), then `"context"` (the evaluation
   context: `targeting_key` plus attributes, minus `_confidence_skip_apply`; `{}` when empty).
   The reserved keys overwrite user data keys of the same name.
   `eventDefinition = "eventDefinitions/" + name`; `eventTime` = now, UTC.
2. `EventQueue.put()` keeps the serialized event. It is what `provider.track()` calls, from
   any thread: a short lock, no I/O, never raises, never blocks on the network. The queue is
   bounded (count and bytes); beyond either bound the *oldest* events are dropped and
   counted, and the publisher logs one WARNING per flush for them (never one per event).
3. `EventPublisher` runs in the runtime's task group: every `log_poll_interval` it drains the
   queue into batches of at most 2 MiB (request body) and POSTs each to
   `{events_base_url}/v1/events:publish` as proto-JSON (`clientSecret`, `sendTime`, `sdk`,
   `events[]`, §4.5). Retries with backoff on 5xx/408/429/timeouts/connection errors (the
   flag-log policy); a batch that still fails goes back to the *front* of the queue (order and
   events kept; the bound still applies). A permanent 4xx drops the batch (retrying cannot
   help) with a WARNING. Events the server rejects individually (`errors[]` in the response)
   are counted and logged, as the reference provider does.
4. At shutdown the runtime calls `flush(final=True)` inside its shielded, deadline-bounded
   final-flush scope.

The client secret travels in the body (the endpoint's auth) and is never logged.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import random
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from confidence import _http
from confidence._context import SKIP_APPLY_KEY
from confidence._http import FailureKind, HttpFailure, RetryPolicy
from confidence._stats import EventStats
from confidence.errors import EventError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_EVENTS_BASE_URL",
    "EVENTS_PUBLISH_PATH",
    "MAX_BATCH_BYTES",
    "EventPublisher",
    "EventQueue",
    "build_event",
    "encode_event",
]

logger = logging.getLogger("confidence.events")

DEFAULT_EVENTS_BASE_URL: Final = "https://events.confidence.dev"
EVENTS_PUBLISH_PATH: Final = "/v1/events:publish"
#: Largest request body per publish (protocol §4.1 step 5). A single larger event goes alone.
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
#: Queue bounds: beyond either, the oldest events are dropped (memory stays bounded while the
#: endpoint is down).
MAX_QUEUED_EVENTS: Final = 100_000
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
#: The events enum's id for this SDK (protocol §9 "Identity").
SDK_ID: Final = "SDK_ID_PYTHON_LOCAL_PROVIDER"

_MAX_DEPTH: Final = 64


def _jsonable(value: Any, depth: int = 0) -> Any:  # Any: JSON values
    """A JSON value for Struct: numbers are finite (JSON has no NaN), keys are strings."""
    if depth > _MAX_DEPTH:
        raise EventError("event data is nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # proto-JSON cannot carry NaN/Infinity inside a Struct: null is the honest answer.
        return value if math.isfinite(value) else None
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_jsonable(v, depth + 1) for v in value]
    return str(value)


def _rfc3339(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def context_struct(evaluation_context: object) -> dict[str, Any]:  # Any: JSON values
    """The evaluation context as the event's `context` Struct (§4.1 step 2)."""
    if evaluation_context is None:
        return {}
    fields: dict[str, Any] = {}  # Any: JSON values
    targeting_key = getattr(evaluation_context, "targeting_key", None)
    if targeting_key:
        fields["targeting_key"] = targeting_key
    attributes = getattr(evaluation_context, "attributes", None) or {}
    # As for evaluations, an attribute named targeting_key wins over the targeting key.
    fields.update(attributes)
    fields.pop(SKIP_APPLY_KEY, None)
    result = _jsonable(fields)
    assert isinstance(result, dict)
    return result


def build_event(
    name: str,
    evaluation_context: object = None,  # an EvaluationContext (or None)
    details: object = None,  # TrackingEventDetails, on SDKs that have it
    *,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:  # Any: JSON values
    """One Confidence `Event` in proto-JSON, payload merged per §4.1 step 4."""
    if not isinstance(name, str) or not name:
        raise EventError("tracking event name must be a non-empty string")
    payload: dict[str, Any] = {}  # Any: JSON values
    if details is not None:
        attributes = getattr(details, "attributes", None)
        if attributes:
            data = _jsonable(dict(attributes))
            assert isinstance(data, dict)
            payload.update(data)
        value = getattr(details, "value", None)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EventError("tracking event value must be a number")
            payload["value"] = _jsonable(float(value))
    payload["context"] = context_struct(evaluation_context)
    when = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    return {
        "eventDefinition": "eventDefinitions/" + name,
        "payload": payload,
        "eventTime": _rfc3339(when),
    }


def encode_event(event: Mapping[str, Any]) -> bytes:  # Any: JSON values
    try:
        return json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventError(f"event is not serializable: {exc}") from None


class EventQueue:
    """Thread-safe, bounded FIFO of serialized events (owned by the provider, so events
    tracked before a runtime starts, or between two runtimes, are kept)."""

    def __init__(
        self, *, max_events: int = MAX_QUEUED_EVENTS, max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self._lock = threading.Lock()
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.tracked = 0
        self.dropped = 0
        self.published = 0
        self.rejected = 0
        self.failed_batches = 0
        self._overflowed = 0  # queue-full drops not yet reported in a WARNING
        self._in_flight = 0  # taken by the publisher, not yet settled
        _QUEUES.add(self)

    def _after_fork(self) -> None:
        # In a forked child: a new lock (the old one may be held by a parent thread that does
        # not exist here), and no inherited events: the parent delivers those, and a child
        # sending them too would duplicate them.
        self._lock = threading.Lock()
        self._items = deque()
        self._bytes = 0
        self._in_flight = 0
        self._overflowed = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: bytes) -> None:
        with self._lock:
            self._items.append(event)
            self._bytes += len(event)
            self.tracked += 1
            self._trim_locked()

    def _trim_locked(self) -> None:
        items = self._items
        while items and (len(items) > self._max_events or self._bytes > self._max_bytes):
            self._bytes -= len(items.popleft())
            self.dropped += 1
            self._overflowed += 1

    def take_batch(self, max_body_bytes: int, overhead: int) -> list[bytes]:
        """Remove and return the oldest events that fit one request body (at least one)."""
        batch: list[bytes] = []
        size = overhead
        with self._lock:
            items = self._items
            while items:
                n = len(items[0]) + 1  # plus the comma
                if batch and size + n > max_body_bytes:
                    break
                event = items.popleft()
                self._bytes -= len(event)
                batch.append(event)
                size += n
            self._in_flight += len(batch)
        return batch

    def requeue(self, batch: list[bytes]) -> None:
        """Put an undelivered batch back at the front, oldest first."""
        with self._lock:
            self._in_flight -= len(batch)
            for event in reversed(batch):
                self._items.appendleft(event)
                self._bytes += len(event)
            self._trim_locked()

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._bytes = 0
            return n

    def take_new_drops(self) -> int:
        """Queue-full drops since the last call (for one aggregated WARNING per flush)."""
        with self._lock:
            new, self._overflowed = self._overflowed, 0
            return new

    def count(
        self,
        *,
        settled: int = 0,
        published: int = 0,
        rejected: int = 0,
        dropped: int = 0,
        failed_batches: int = 0,
    ) -> None:
        """Record a delivery outcome (under the lock: `put()` runs on other threads);
        `settled` events taken by `take_batch` are no longer in flight."""
        with self._lock:
            self._in_flight -= settled
            self.published += published
            self.rejected += rejected
            self.dropped += dropped
            self.failed_batches += failed_batches

    def stats(self) -> EventStats:
        return EventStats(
            tracked=self.tracked,
            published=self.published,
            rejected=self.rejected,
            dropped=self.dropped,
            backlog=len(self._items) + self._in_flight,
            failed_batches=self.failed_batches,
        )


_QUEUES: weakref.WeakSet[EventQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_QUEUES):
        queue._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class EventPublisher:
    """Delivers the queue's events; started in the runtime's task group."""

    def __init__(
        self,
        queue: EventQueue,
        *,
        client_secret: str,
        session: aiohttp.ClientSession,
        events_base_url: str = DEFAULT_EVENTS_BASE_URL,
        interval: float = 10.0,
        sdk_version: str = "",
        retry: RetryPolicy | None = None,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not client_secret:
            raise ValueError("client_secret must not be empty")
        self._queue = queue
        self._secret = client_secret
        self._session = session
        self._url = events_base_url.rstrip("/") + EVENTS_PUBLISH_PATH
        self._interval = interval
        self._retry = retry if retry is not None else RetryPolicy()
        self._max_batch_bytes = max_batch_bytes
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        # Everything of the body but the events and the send time, built once.
        self._head = (
            b'{"clientSecret":'
            + json.dumps(client_secret).encode()
            + b',"sdk":{"id":"'
            + SDK_ID.encode()
            + b'","version":'
            + json.dumps(sdk_version).encode()
            + b'},"sendTime":"'
        )
        self._overhead = len(self._head) + len('2000-01-01T00:00:00.000000Z","events":[]}')

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await self._sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                # Keep the loop alive whatever a flush hits; undelivered events stay queued.
                logger.exception("Event flush failed")

    async def flush(self, *, final: bool = False) -> None:
        """Publish everything queued now; stop at the first batch that cannot be delivered."""
        dropped = self._queue.take_new_drops()
        if dropped:
            logger.warning("Event queue full: dropped %d oldest event(s)", dropped)
        while len(self._queue):
            batch = self._queue.take_batch(self._max_batch_bytes, self._overhead)
            if not batch:
                break
            delivered = False
            try:
                delivered = await self._publish(batch)
            finally:
                if not delivered:
                    # Also when cancelled mid-send (shutdown deadline): the events stay
                    # queued and counted, never silently vanish from the books.
                    self._queue.requeue(batch)
            if not delivered:
                if final:
                    logger.warning(
                        "Shutdown: %d tracked event(s) could not be delivered", len(self._queue)
                    )
                break

    def _body(self, batch: list[bytes]) -> bytes:
        send_time = _rfc3339(_dt.datetime.now(_dt.timezone.utc)).encode()
        return b"".join((self._head, send_time, b'","events":[', b",".join(batch), b"]}"))

    async def _publish(self, batch: list[bytes]) -> bool:
        """True when the batch is settled (accepted, or permanently refused and dropped)."""
        try:
            response = await _http.call(
                self._session,
                "POST",
                self._url,
                policy=self._retry,
                secret=self._secret,
                body=self._body(batch),
                headers={"Content-Type": "application/json"},
                # The secret travels in the body (§4.5); _http never follows a redirect,
                # which would resend it elsewhere.
                sleep=self._sleep,
                rng=self._rng,
            )
        except HttpFailure as failure:
            if failure.retryable or failure.kind is FailureKind.INTERNAL:
                # Transient, or our own problem (e.g. a closed session): not the server's
                # verdict on these events, so they are kept.
                self._queue.count(failed_batches=1)
                logger.warning(
                    "Event publish failed after %d attempt(s) (%s); %d event(s) kept "
                    "for the next flush",
                    failure.attempts,
                    failure,
                    len(batch),
                )
                return False
            self._queue.count(settled=len(batch), dropped=len(batch), failed_batches=1)
            logger.warning("Event publish refused (%s): dropped %d event(s)", failure, len(batch))
            return True
        self._account(batch, response.body)
        return True

    def _account(self, batch: list[bytes], response: bytes) -> None:
        errors: list[Any] = []  # Any: JSON values
        try:
            decoded = json.loads(response) if response.strip() else {}
            if isinstance(decoded, dict) and isinstance(decoded.get("errors"), list):
                errors = decoded["errors"]
        except ValueError:
            pass  # a 2xx is success; an unreadable body only loses the per-event errors
        rejected = min(len(errors), len(batch))
        self._queue.count(settled=len(batch), published=len(batch) - rejected, rejected=rejected)
        logger.debug("Published %d tracked event(s), %d rejected", len(batch), rejected)
        if errors:
            shown = "; ".join(
                f"#{e.get('index')} {e.get('reason')}: {e.get('message')}"
                for e in errors[:3]
                if isinstance(e, dict)
            )
            logger.error(
                "Confidence rejected %d of %d tracked event(s): %s%s",
                rejected,
                len(batch),
                shown,
                " ..." if len(errors) > 3 else "",
            )
