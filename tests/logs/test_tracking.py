"""`track()`: Confidence events built per protocol §4.1, queued, batched and published to the
emulator's JSON endpoint (§4.5) with retries, bounded backlog and a final flush."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import warnings
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from provider_support import SECRET, make_provider, requires_wasm, sample_state, wait_until

from confidence import ConfidenceProvider
from confidence._logs.sender import RetryPolicy
from confidence._logs.tracking import (
    MAX_BATCH_BYTES,
    EventPublisher,
    EventQueue,
    build_event,
    encode_event,
)
from confidence.testing.emulator import (
    ConfidenceEmulator,
    Delay,
    DropConnection,
    Hang,
    Route,
    Status,
)

# The tracking API (`client.track`, `openfeature.track`) exists from openfeature-sdk 0.9 on.
TrackingEventDetails = pytest.importorskip(
    "openfeature.track", reason="openfeature-sdk < 0.9 has no tracking API (track)"
).TrackingEventDetails

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, attempt_timeout=0.5)


# -- the event itself (§4.1) -----------------------------------------------------------------


def test_payload_merge_rules() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    ctx = EvaluationContext(
        "user-1", {"country": "SE", "_confidence_skip_apply": True, "n": 3, "when": now}
    )
    details = TrackingEventDetails(
        value=0,  # an explicit 0 is kept
        attributes={"value": "user's", "context": "user's", "item": "shoe", "tags": ["a", "b"]},
    )
    event = build_event("purchase", ctx, details, now=now)
    assert event["eventDefinition"] == "eventDefinitions/purchase"
    assert event["eventTime"] == "2026-01-02T03:04:05.678000Z"
    # Data fields at the top level; the reserved keys overwrite user keys of the same name.
    assert event["payload"] == {
        "value": 0.0,
        "context": {
            "targeting_key": "user-1",
            "country": "SE",
            "n": 3,
            "when": "2026-01-02T03:04:05.678000+00:00",
        },
        "item": "shoe",
        "tags": ["a", "b"],
    }
    # The caller's objects are untouched.
    assert ctx.attributes["_confidence_skip_apply"] is True
    assert details.attributes["value"] == "user's"


def test_payload_without_details_or_context() -> None:
    assert build_event("e")["payload"] == {"context": {}}
    assert build_event("e", EvaluationContext())["payload"] == {"context": {}}
    no_value = build_event("e", None, TrackingEventDetails(attributes={"a": 1}))
    assert no_value["payload"] == {"a": 1, "context": {}}
    # A naive/other-zone event time is rendered in UTC.
    local = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert build_event("e", now=local)["eventTime"] == "2026-01-01T10:00:00.000000Z"
    # JSON has no NaN: non-finite numbers become null instead of breaking the batch.
    event = build_event("e", None, TrackingEventDetails(attributes={"x": float("nan")}))
    assert json.loads(encode_event(event))["payload"]["x"] is None


def test_invalid_events_are_refused() -> None:
    with pytest.raises(ValueError):
        build_event("")
    with pytest.raises(ValueError):
        build_event("e", None, TrackingEventDetails(value="12"))  # type: ignore[arg-type]
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError):
        build_event("e", None, TrackingEventDetails(attributes={"c": cyclic}))


# -- queue -----------------------------------------------------------------------------------


def test_queue_bounds_drop_oldest_and_batches_fit() -> None:
    queue = EventQueue(max_events=10)
    for i in range(15):
        queue.put(b'{"i":%d}' % i)
    stats = queue.stats()
    assert (stats.tracked, stats.dropped, stats.backlog) == (15, 5, 10)
    assert queue.take_new_drops() == 5 and queue.take_new_drops() == 0
    batch = queue.take_batch(max_body_bytes=30, overhead=10)
    assert batch == [b'{"i":5}', b'{"i":6}']  # oldest first, within the size
    assert queue.stats().backlog == 10  # in flight still counts
    queue.requeue(batch)
    assert queue.take_batch(1 << 20, 0)[0] == b'{"i":5}'
    # A single event larger than the limit still goes (alone).
    big = EventQueue()
    big.put(b"x" * 100)
    big.put(b"y")
    assert big.take_batch(max_body_bytes=50, overhead=10) == [b"x" * 100]


# -- publisher against the emulator ------------------------------------------------------------


def publisher(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession, queue: EventQueue, **kw: Any
) -> EventPublisher:
    return EventPublisher(
        queue,
        client_secret=emulator_async.client_secret,
        session=session,
        events_base_url=emulator_async.events_base_url,
        sdk_version="9.9.9",
        retry=kw.pop("retry", FAST),
        **kw,
    )


def queued(*names: str) -> EventQueue:
    queue = EventQueue()
    for name in names:
        queue.put(encode_event(build_event(name, EvaluationContext("u"))))
    return queue


@pytest.mark.anyio
async def test_publish_request_shape(
    confidence_emulator: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    queue = queued("a", "b")
    await publisher(confidence_emulator, session, queue).flush()
    (recorded,) = confidence_emulator.requests_for(Route.EVENTS)
    assert recorded.path == "/v1/events:publish"
    assert recorded.header("Content-Type") == "application/json"
    assert recorded.header("Authorization") is None  # the secret travels in the body
    body = json.loads(recorded.body)
    assert set(body) == {"clientSecret", "sendTime", "sdk", "events"}
    assert body["clientSecret"] == confidence_emulator.client_secret
    assert body["sdk"] == {"id": "SDK_ID_PYTHON_LOCAL_PROVIDER", "version": "9.9.9"}
    assert body["sendTime"].endswith("Z")
    (request,) = confidence_emulator.event_publish_requests
    assert [e.event_definition for e in request.events] == [
        "eventDefinitions/a",
        "eventDefinitions/b",
    ]
    assert queue.stats().published == 2 and queue.stats().backlog == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault",
    [Status(503), Status(429, headers=(("Retry-After", "0"),)), DropConnection(), Delay(2.0)],
    ids=["503", "429", "dropped-connection", "timeout"],
)
async def test_retries_transient_failures(
    confidence_emulator: ConfidenceEmulator, session: aiohttp.ClientSession, fault: Any
) -> None:
    confidence_emulator.inject(Route.EVENTS, fault, times=2)
    queue = queued("a")
    await publisher(confidence_emulator, session, queue).flush()
    assert len(confidence_emulator.requests_for(Route.EVENTS)) == 3
    assert len(confidence_emulator.events("a")) == 1
    stats = queue.stats()
    assert (stats.published, stats.failed_batches, stats.backlog) == (1, 0, 0)


@pytest.mark.anyio
async def test_failed_batch_is_kept_for_the_next_flush(
    confidence_emulator: ConfidenceEmulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    confidence_emulator.inject(Route.EVENTS, Status(500), times=3)
    queue = queued("a", "b")
    pub = publisher(confidence_emulator, session, queue)
    with caplog.at_level(logging.WARNING, logger="confidence"):
        await pub.flush()
    assert queue.stats().backlog == 2 and queue.stats().failed_batches == 1
    assert "kept for the next flush" in caplog.text
    assert SECRET not in caplog.text
    await pub.flush()
    assert [e["event_definition"] for e in confidence_emulator.events()] == [
        "eventDefinitions/a",
        "eventDefinitions/b",
    ]
    assert queue.stats().published == 2 and queue.stats().backlog == 0


@pytest.mark.anyio
async def test_permanent_refusal_drops_the_batch(
    confidence_emulator: ConfidenceEmulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    confidence_emulator.inject(Route.EVENTS, Status(400), times=1)
    queue = queued("a")
    with caplog.at_level(logging.WARNING, logger="confidence"):
        await publisher(confidence_emulator, session, queue).flush()
    assert len(confidence_emulator.requests_for(Route.EVENTS)) == 1  # not retried
    stats = queue.stats()
    assert (stats.dropped, stats.backlog, stats.published) == (1, 0, 0)
    assert "HTTP 400" in caplog.text


@pytest.mark.anyio
async def test_rejected_events_are_counted_and_logged(
    confidence_emulator: ConfidenceEmulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    confidence_emulator.reject_event_definitions("bad")
    queue = queued("good", "bad", "good")
    with caplog.at_level(logging.ERROR, logger="confidence"):
        await publisher(confidence_emulator, session, queue).flush()
    stats = queue.stats()
    assert (stats.published, stats.rejected) == (2, 1)
    assert "EVENT_DEFINITION_NOT_FOUND" in caplog.text and "#1" in caplog.text


@pytest.mark.anyio
async def test_batches_stay_under_2_mib(
    confidence_emulator: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    queue = EventQueue()
    filler = "x" * 1000
    for i in range(5000):
        event = build_event("bulk", None, TrackingEventDetails(attributes={"i": i, "f": filler}))
        queue.put(encode_event(event))
    await publisher(confidence_emulator, session, queue).flush()
    bodies = [r.body for r in confidence_emulator.requests_for(Route.EVENTS)]
    assert len(bodies) == 3
    assert all(len(b) <= MAX_BATCH_BYTES for b in bodies)
    assert len(bodies[0]) > MAX_BATCH_BYTES - 2000  # filled, not split early
    received = [e["payload"]["i"] for e in confidence_emulator.events("bulk")]
    assert received == list(range(5000))  # all of them, in order


# -- through the provider --------------------------------------------------------------------


@pytest.fixture
def emulator_sync(confidence_emulator_sync: ConfidenceEmulator) -> ConfidenceEmulator:
    confidence_emulator_sync.set_state(sample_state().build())
    return confidence_emulator_sync


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
def test_openfeature_client_track_sync(emulator_sync: ConfidenceEmulator) -> None:
    api.set_provider_and_wait(make_provider(emulator_sync, log_poll_interval=0.2))
    client = api.get_client()
    client.track("checkout", EvaluationContext(attributes={"country": "SE"}))
    client.track("purchase", None, TrackingEventDetails(value=9.5).add("item", "shoe"))
    wait_until(lambda: len(emulator_sync.events()) == 2)
    checkout, purchase = emulator_sync.events()
    # The SDK merged the API-level context (targeting key "test-user") into the event.
    assert checkout["payload"] == {"context": {"targeting_key": "test-user", "country": "SE"}}
    assert purchase["payload"] == {
        "item": "shoe",
        "value": 9.5,
        "context": {"targeting_key": "test-user"},
    }


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
def test_track_from_many_threads_then_final_flush(emulator_sync: ConfidenceEmulator) -> None:
    provider = make_provider(emulator_sync, log_poll_interval=60.0)  # only the final flush
    api.set_provider_and_wait(provider)

    def worker(n: int) -> None:
        for i in range(200):
            provider.track("tick", EvaluationContext(f"t{n}"), TrackingEventDetails(value=i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emulator_sync.events() == []
    api.shutdown()
    events = emulator_sync.events("tick")
    assert len(events) == 1600
    for n in range(8):
        values = [
            e["payload"]["value"]
            for e in events
            if e["payload"]["context"]["targeting_key"] == f"t{n}"
        ]
        assert values == [float(i) for i in range(200)]  # per-thread order kept
    stats = provider.stats().events
    assert (stats.tracked, stats.published, stats.dropped) == (1600, 1600, 0)


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
def test_track_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    provider = ConfidenceProvider(SECRET, events_base_url="http://127.0.0.1:9")
    cyclic: dict[str, Any] = {}
    cyclic["me"] = cyclic
    with caplog.at_level(logging.WARNING, logger="confidence"):
        provider.track("")
        provider.track(None)  # type: ignore[arg-type]
        provider.track("e", None, TrackingEventDetails(value="x"))  # type: ignore[arg-type]
        provider.track("e", EvaluationContext(attributes={"c": cyclic}))
        provider.track("ok")  # before start(): queued, not lost
    assert caplog.text.count("Dropped tracking event") == 4
    assert provider.stats().events.tracked == 1


def test_offline_track_is_a_no_op(tmp_path: Any) -> None:
    state = tmp_path / "state.pb"
    state.write_bytes(sample_state().build_client_state())
    provider = ConfidenceProvider(SECRET, state_file=state, offline=True)
    provider.track("e")
    assert provider.stats().events.tracked == 0


@requires_wasm
@pytest.mark.anyio
async def test_async_final_flush_is_bounded_when_events_hang(
    confidence_emulator: ConfidenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    confidence_emulator.set_state(sample_state().build())
    confidence_emulator.inject(Route.EVENTS, Hang())
    provider = make_provider(confidence_emulator, shutdown_timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="confidence"):
        async with provider:
            provider.track("stuck")
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    # Not delivered, but not silently gone either: still counted as pending.
    assert provider.stats().events.backlog == 1
    confidence_emulator.clear_faults()


@requires_wasm
@pytest.mark.anyio
async def test_async_periodic_flush(confidence_emulator: ConfidenceEmulator) -> None:
    confidence_emulator.set_state(sample_state().build())
    async with make_provider(confidence_emulator, log_poll_interval=0.1) as provider:
        provider.track("first", EvaluationContext("u1"))
        with anyio.fail_after(5):
            while provider.stats().events.published < 1:
                await anyio.sleep(0.05)
        assert len(confidence_emulator.events("first")) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_starts_with_an_empty_usable_queue() -> None:
    from confidence._stats import StatsRecorder

    queue = queued("parent-event")
    recorder = StatsRecorder()
    recorder.record("DEFAULT", None, 10)
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # a parent thread holds the queue's lock across the fork
        with queue._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(5)
    with warnings.catch_warnings():
        # 3.12+ warns about fork() in a multi-threaded process: that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: must not deadlock, must not resend the parent's events
        ok = len(queue) == 0 and recorder.counts()[0] == {}
        queue.put(b"{}")
        recorder.record("DEFAULT", None, 10)
        ok = ok and len(queue) == 1 and recorder.counts()[0] == {"DEFAULT": 1}
        os._exit(0 if ok else 1)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(queue) == 1  # the parent keeps (and will deliver) its own events
