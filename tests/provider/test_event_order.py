"""Event order on recovery with a new state: READY, then CONFIGURATION_CHANGED (docs/errors.md).

On every supported OpenFeature SDK and both hostings (the sync facade's background loop, an
application's own asyncio loop): a CONFIGURATION_CHANGED handler runs after the recovery
READY's handlers have returned, and sees the provider READY. The READY handler takes a
while on purpose: on openfeature-sdk 0.10 (handlers on a thread pool) that is what let the
change overtake the recovery before the provider waited for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.event import EventDetails, ProviderEvent
from openfeature.provider import ProviderStatus
from provider_support import PROVIDER_NAME, make_provider, requires_wasm, sample_state

from confidence.testing.emulator import ConfidenceEmulator, Route, Status

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]

CYCLES = 3
COLORS = ("red", "green", "yellow")
READY, STALE, CHANGED = (
    ProviderEvent.PROVIDER_READY,
    ProviderEvent.PROVIDER_STALE,
    ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
)


class OrderProbe:
    """Records (event, provider status seen by the handler, handlers still running)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.seen: list[tuple[ProviderEvent, ProviderStatus, int]] = []
        self._running = 0

    def _handler(self, event: ProviderEvent, linger: float) -> object:
        def handler(details: EventDetails) -> None:
            if details.provider_name != PROVIDER_NAME:
                return
            with self._cond:
                self._running += 1
                others = self._running - 1
                status = api.get_client().get_provider_status()
            time.sleep(linger)  # a handler with real work: a later event must wait for it
            with self._cond:
                self._running -= 1
                self.seen.append((event, status, others))
                self._cond.notify_all()

        return handler

    @contextmanager
    def attached(self) -> Iterator[OrderProbe]:
        handlers = [
            (READY, self._handler(READY, 0.1)),
            (STALE, self._handler(STALE, 0.0)),
            (CHANGED, self._handler(CHANGED, 0.0)),
        ]
        for event, handler in handlers:
            api.add_handler(event, handler)  # type: ignore[arg-type]
        try:
            yield self
        finally:
            for event, handler in handlers:
                # ValueError: api.shutdown() already dropped it.
                with contextlib.suppress(ValueError):
                    api.remove_handler(event, handler)  # type: ignore[arg-type]

    def wait_for(self, event: ProviderEvent, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for e, _, _ in self.seen if e is event) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {count} x {event}: {self.seen}")
                self._cond.wait(remaining)


def _recover_with_a_new_state(emulator: ConfidenceEmulator, probe: OrderProbe, n: int) -> None:
    """Fault the state route until STALE, publish a new state, then let it through."""
    emulator.set_state(sample_state(color=COLORS[n % len(COLORS)]).build())
    emulator.inject(Route.STATE, Status(503))
    probe.wait_for(STALE, n + 1)
    emulator.clear_faults()
    probe.wait_for(CHANGED, n + 1)


def _assert_ordered(probe: OrderProbe) -> None:
    assert probe.seen[0][0] is READY  # the SDK's, for initialize()
    after_start = probe.seen[1:]
    assert [e for e, _, _ in after_start] == [STALE, READY, CHANGED] * CYCLES
    for event, status, others in after_start:
        assert others == 0, f"{event} ran while another handler ran: {probe.seen}"
        if event is CHANGED:
            assert status is ProviderStatus.READY


def test_recovery_announces_ready_before_the_change_sync_host(
    emulator: ConfidenceEmulator,
) -> None:
    provider = make_provider(emulator, state_poll_interval=0.05, stale_after_failures=1)
    with OrderProbe().attached() as probe:
        api.set_provider_and_wait(provider)
        probe.wait_for(READY, 1)
        for n in range(CYCLES):
            _recover_with_a_new_state(emulator, probe, n)
        _assert_ordered(probe)


@pytest.mark.anyio
async def test_recovery_announces_ready_before_the_change_asyncio_host(
    emulator: ConfidenceEmulator,
) -> None:
    with OrderProbe().attached() as probe:
        async with make_provider(
            emulator, state_poll_interval=0.05, stale_after_failures=1
        ) as provider:
            # On the loop thread: initialize() only attaches to the running provider.
            api.set_provider_and_wait(provider)
            await anyio.to_thread.run_sync(probe.wait_for, READY, 1)
            for n in range(CYCLES):
                await anyio.to_thread.run_sync(_recover_with_a_new_state, emulator, probe, n)
            _assert_ordered(probe)
