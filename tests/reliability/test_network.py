"""Reliability: network faults on state sync, end to end (issue #6).

The provider runs as an application runs it (registered with OpenFeature, its sync runtime in
a background loop thread) against the emulator on 127.0.0.1, whose state route misbehaves on
demand. Whatever the fault: the last good state keeps serving, STALE comes after the
configured number of failed fetches, READY (and the newer state) comes back on recovery, and
no evaluation ever waits for the network.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import anyio
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.provider import ProviderStatus
from provider_support import (
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
    wait_until,
)

from confidence.testing.emulator import (
    ConfidenceEmulator,
    Delay,
    DropConnection,
    Fault,
    Hang,
    ResetConnection,
    Route,
    SlowBody,
    Status,
    TruncatedBody,
)

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]

USER = EvaluationContext("user-1")


def _color() -> str:
    return api.get_client().get_string_value("feature.color", "none", USER)


# Every way the state route can fail once a state is loaded. A few are worth a word:
# - DropConnection/ResetConnection: aiohttp retries an idempotent GET once on a new
#   connection, so each failed fetch costs two faulted requests (injected until cleared);
# - Hang: the server accepts and never answers, like a DNS or proxy black hole;
# - SlowBody: every socket read gets a few bytes in time, so only the whole-request
#   deadline (state_request_timeout) ends the fetch.
NETWORK_FAULTS: list[tuple[str, Fault]] = [
    ("5xx", Status(503)),
    ("404-unknown-secret", Status(404)),
    ("connection-reset", ResetConnection()),
    ("connection-dropped", DropConnection()),
    ("body-cut-mid-way", TruncatedBody()),
    ("accepts-never-answers", Hang()),
    ("answers-too-late", Delay(30.0)),
    ("slow-drip-body", SlowBody(chunk=8, interval=0.05)),
]


@pytest.mark.parametrize(("name", "fault"), NETWORK_FAULTS, ids=[n for n, _ in NETWORK_FAULTS])
def test_network_fault_keeps_last_state_goes_stale_and_recovers(
    emulator: ConfidenceEmulator, name: str, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="confidence")
    provider = make_provider(
        emulator, state_poll_interval=0.1, stale_after_failures=2, state_request_timeout=0.5
    )
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        assert _color() == "blue"

        # A newer state waits behind the fault: until the fault clears, blue keeps serving.
        emulator.set_state(sample_state(color="red").build())
        emulator.inject(Route.STATE, fault)
        events.wait_for(ProviderEvent.PROVIDER_STALE, timeout=15)
        assert client.get_provider_status() is ProviderStatus.STALE
        assert _color() == "blue"
        assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED) == []

        emulator.clear_faults()
        events.wait_for(ProviderEvent.PROVIDER_READY, count=2, timeout=15)
        events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, timeout=15)
        wait_until(lambda: _color() == "red")
        assert client.get_provider_status() is ProviderStatus.READY
        settle_events()
        # A network fault is no ERROR: the provider never served anything bad.
        assert events.of(ProviderEvent.PROVIDER_ERROR) == []
        assert events.kinds()[:3] == [
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_READY,
        ]
    stale_lines = [r for r in caplog.records if "STALE" in r.getMessage()]
    assert len(stale_lines) == 1  # said once, not on every failed poll


def test_stale_threshold_is_the_configured_number_of_failures(
    emulator: ConfidenceEmulator,
) -> None:
    provider = make_provider(emulator, state_poll_interval=0.05, stale_after_failures=4)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        before = len(emulator.requests_for(Route.STATE))
        # Three failures and a success: below the threshold, so no STALE.
        emulator.inject(Route.STATE, Status(500), times=3)
        wait_until(lambda: len(emulator.requests_for(Route.STATE)) >= before + 5)
        settle_events()
        assert events.of(ProviderEvent.PROVIDER_STALE) == []

        # Four in a row: STALE, once the fourth has failed.
        second = len(emulator.requests_for(Route.STATE))
        emulator.inject(Route.STATE, Status(500), times=4)
        events.wait_for(ProviderEvent.PROVIDER_STALE)
        assert len(emulator.requests_for(Route.STATE)) - second >= 4


def test_304_storm_changes_nothing(
    emulator: ConfidenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The CDN answering 304 to every poll, fast: no re-apply, no event, no log noise."""
    provider = make_provider(emulator, state_poll_interval=0.01)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        runtime = provider._runtime
        assert runtime is not None
        generation = runtime._pool.generation
        caplog.clear()
        caplog.set_level(logging.INFO, logger="confidence")
        start = len(emulator.requests_for(Route.STATE))
        wait_until(lambda: len(emulator.requests_for(Route.STATE)) >= start + 100, timeout=20)
        assert _color() == "blue"
        assert runtime._pool.generation == generation  # nothing was re-applied
        settle_events()
        assert events.kinds() == [ProviderEvent.PROVIDER_READY]
        assert [r.getMessage() for r in caplog.records if r.name.startswith("confidence")] == []
        assert provider._runtime is runtime


def test_304_storm_without_a_state_never_becomes_ready(emulator: ConfidenceEmulator) -> None:
    """A CDN that answers 304 to a request without If-None-Match has nothing to offer."""
    emulator.inject(Route.STATE, Status(304))
    provider = make_provider(emulator, init_timeout=1.5)
    with pytest.raises(ProviderNotReadyError, match="304"):
        api.set_provider_and_wait(provider)
    details = api.get_client().get_string_details("feature.color", "none", USER)
    assert (details.value, details.error_code) == ("none", ErrorCode.PROVIDER_NOT_READY)
    # ... until the CDN behaves.
    emulator.clear_faults()
    wait_until(lambda: _color() == "blue")


@pytest.mark.parametrize(
    ("fault", "fatal"),
    [
        (Hang(), False),
        (SlowBody(chunk=8, interval=0.05), False),
        (ResetConnection(), False),
        (Status(404), False),  # no state published yet: retried (until it appears)
        (Status(403), True),
    ],
    ids=["hang", "slow-drip", "reset", "404", "403"],
)
def test_faults_at_start_up_are_bounded(
    emulator: ConfidenceEmulator, fault: Fault, fatal: bool
) -> None:
    emulator.inject(Route.STATE, fault)
    provider = make_provider(emulator, init_timeout=1.5, state_request_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(ProviderFatalError if fatal else ProviderNotReadyError):
        api.set_provider_and_wait(provider)
    assert time.monotonic() - start < 1.5 + 2.0  # init_timeout, not the fault, decides
    if not fatal:
        emulator.clear_faults()
        wait_until(lambda: _color() == "blue", timeout=15)


def test_start_up_retries_back_off_exponentially(emulator: ConfidenceEmulator) -> None:
    """1 s, 2 s, 4 s between attempts (±10 % jitter), not a fixed retry storm."""
    arrivals: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        seen = 0
        while not stop.is_set():
            count = len(emulator.requests_for(Route.STATE))
            if count > seen:
                arrivals.extend([time.monotonic()] * (count - seen))
                seen = count
            time.sleep(0.002)

    emulator.inject(Route.STATE, Status(500), times=3)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        provider = make_provider(emulator, state_poll_interval=30.0, init_timeout=20.0)
        api.set_provider_and_wait(provider)
    finally:
        stop.set()
        watcher.join()
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    for gap, expected in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert expected * 0.9 - 0.05 <= gap <= expected * 1.1 + 0.5, gaps


def test_nothing_blocks_a_resolve_while_the_cdn_hangs(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator, state_poll_interval=0.05, state_request_timeout=3.0)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    sent = len(emulator.requests_for(Route.STATE))
    emulator.inject(Route.STATE, Hang())
    wait_until(lambda: len(emulator.requests_for(Route.STATE)) > sent)  # a fetch is stuck
    worst = 0.0
    deadline = time.monotonic() + 1.5
    count = 0
    while time.monotonic() < deadline:
        start = time.perf_counter()
        assert client.get_string_value("feature.color", "none", USER) == "blue"
        worst = max(worst, time.perf_counter() - start)
        count += 1
    assert count > 100
    assert worst < 0.25, f"a resolve took {worst:.3f}s while the CDN hung"
    emulator.clear_faults()


@pytest.mark.anyio
async def test_the_event_loop_stays_responsive_while_the_cdn_hangs(
    confidence_emulator: ConfidenceEmulator,
) -> None:
    """Async-hosted: the state sync runs in the app's own loop; a hanging CDN must not stall
    it, and async evaluations on that loop answer at once."""
    emu = confidence_emulator
    emu.set_state(sample_state().build())
    provider = make_provider(emu, state_poll_interval=0.05, state_request_timeout=5.0)
    async with provider:
        sent = len(emu.requests_for(Route.STATE))
        emu.inject(Route.STATE, Hang())
        with anyio.fail_after(10):
            while len(emu.requests_for(Route.STATE)) <= sent:  # until a fetch is stuck
                await anyio.sleep(0.01)
        lag = 0.0
        worst_eval = 0.0
        end = anyio.current_time() + 1.0
        while anyio.current_time() < end:
            before = anyio.current_time()
            await anyio.sleep(0.005)
            lag = max(lag, anyio.current_time() - before - 0.005)
            before = anyio.current_time()
            details = await provider.resolve_string_details_async("feature.color", "x", USER)
            worst_eval = max(worst_eval, anyio.current_time() - before)
            assert details.value == "blue"
        assert lag < 0.2, f"event loop lag {lag:.3f}s"
        assert worst_eval < 0.2
        emu.clear_faults()
