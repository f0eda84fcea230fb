"""Sustained traffic with a fresh user on every evaluation: the apply-dedup windows (the
resolver's and the host's) fill, stay at their bound and keep deduplicating correctly.

Real components: the real resolver.wasm, the real provider through the OpenFeature client,
the emulator on 127.0.0.1 receiving the flag logs. Not timed: the speed of this regime is
measured by `nox -s bench`; here the counts must add up exactly.
"""

from __future__ import annotations

from collections import Counter

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from provider_support import make_provider, requires_wasm

from confidence.testing.emulator import ConfidenceEmulator

CAPACITY = 100_000  # resolve.md §6: the dedup window holds at most 100,000 identities
N = 160_000  # unique users, well past the capacity
AGAIN = 1_000


def _user(i: int) -> EvaluationContext:
    return EvaluationContext(f"user-{i}", {"country": "SE"})


@pytest.mark.slow  # ~40 s on a shared 2-core machine
@requires_wasm
def test_unique_users_past_the_dedup_capacity(emulator: ConfidenceEmulator) -> None:
    # One instance: every exposure goes through one guest window (a second instance would
    # split the identities between two windows and the exact counts below with them).
    provider = make_provider(emulator, pool_size=1, log_poll_interval=1.0)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    runtime = provider._runtime
    assert runtime is not None

    for i in range(N):
        assert client.get_boolean_value("swedish.enabled", False, _user(i)) is True
    # The most recent users are still in both windows: deduplicated by the resolver.
    for i in range(N - AGAIN, N):
        assert client.get_boolean_value("swedish.enabled", False, _user(i)) is True
    # The first users were forgotten to make room (all of this runs well within the
    # 120 s window, so eviction is the only way out): they are exposed again.
    for i in range(AGAIN):
        assert client.get_boolean_value("swedish.enabled", False, _user(i)) is True
    pool = runtime._pool.stats()
    assert (pool.instances, pool.retired, pool.traps) == (1, 0, 0)  # one window all along
    api.shutdown()  # the final flush delivers the rest

    received = emulator.all_flag_log_batches()
    units = Counter(
        f.targeting_key for batch in received for a in batch.flag_assigned for f in a.flags
    )
    assert units == Counter({f"user-{i}": 2 if i < AGAIN else 1 for i in range(N)})
    assert {f.flag for batch in received for a in batch.flag_assigned for f in a.flags} == {
        "flags/swedish"
    }

    telemetry = [b.telemetry_data.apply_dedup for b in received if b.HasField("telemetry_data")]
    assert all(t.map_capacity == CAPACITY and t.map_size <= CAPACITY for t in telemetry)
    assert telemetry[-1].map_size == CAPACITY  # full, and not beyond
    assert sum(t.applies_total for t in telemetry) == N + 2 * AGAIN
    assert sum(t.applies_deduped for t in telemetry) == AGAIN  # the resolver's; the host: 0
    guest_evicted = N + AGAIN - CAPACITY  # every new identity past the capacity evicts one
    host_evicted = N + AGAIN - CAPACITY  # the host sees the same N + AGAIN new identities
    assert sum(t.apply_dedup_overflow for t in telemetry) == guest_evicted + host_evicted

    stats = runtime.log_stats()
    assert stats.dedup is not None
    assert stats.dedup.window_size == CAPACITY
    assert (stats.dedup.applies_total, stats.dedup.applies_deduped) == (N + AGAIN, 0)
    assert stats.dedup.overflow == host_evicted
    assert (stats.dropped_exposures, stats.backlog_batches) == (0, 0)
    assert stats.delivered_exposures == N + AGAIN
