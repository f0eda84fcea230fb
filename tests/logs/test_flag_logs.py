"""Exposure logging and resolve analytics, proved by counting what the emulator received.

Real threads, a real event loop and the emulator on 127.0.0.1: every exposure must arrive
exactly once (after the global apply de-duplication), every resolve must be counted, through
faults, and whatever cannot be delivered must be counted and reported.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from provider_support import ACCOUNT, SECRET, make_provider, requires_wasm, sample_state, wait_until

from confidence._logs import flag_logs as _flag_logs
from confidence._logs.sender import RetryPolicy
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._proto.confidence.flags.resolver.v1.events import events_pb2
from confidence._version import __version__
from confidence._wasm.abi import ResolveRequest
from confidence._wasm.pool import ResolverPool
from confidence.provider import ConfidenceProvider
from confidence.testing.emulator import (
    ConfidenceEmulator,
    DropConnection,
    Hang,
    Route,
    Status,
)

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]

THREADS = 4
UNITS = [f"unit-{i}" for i in range(20)]
FLAGS = ("feature", "split")
#: M: the distinct (unit, flag) pairs every test evaluates.
PAIRS = [(unit, flag) for unit in UNITS for flag in FLAGS]
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, attempt_timeout=0.3)


def evaluate(client: OpenFeatureClient, unit: str, flag: str) -> None:
    context = EvaluationContext(targeting_key=unit)
    if flag == "feature":
        assert client.get_boolean_value("feature.enabled", False, context) is True
    else:
        assert client.get_string_value("split.group", "none", context) in ("a", "b")


async def evaluate_async(client: OpenFeatureClient, unit: str, flag: str) -> None:
    context = EvaluationContext(targeting_key=unit)
    if flag == "feature":
        assert await client.get_boolean_value_async("feature.enabled", False, context) is True
    else:
        assert await client.get_string_value_async("split.group", "none", context) in ("a", "b")


class Workload:
    """Evaluates PAIRS round-robin from several threads; counts evaluations per pair."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, pair: tuple[str, str]) -> None:
        with self._lock:
            self.counts[pair] += 1

    def thread_body(self, client: OpenFeatureClient, offset: int, rounds: int) -> None:
        for _ in range(rounds):
            for i in range(len(PAIRS)):
                pair = PAIRS[(i + offset * 7) % len(PAIRS)]
                evaluate(client, *pair)
                self.record(pair)

    def run_threads(self, client: OpenFeatureClient, rounds: int = 3) -> None:
        threads = [
            threading.Thread(target=self.thread_body, args=(client, t, rounds))
            for t in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def run_threads_async(self, client: OpenFeatureClient) -> None:
        await anyio.to_thread.run_sync(self.run_threads, client)

    async def run_async(self, client: OpenFeatureClient, rounds: int = 2) -> None:
        for _ in range(rounds):
            for pair in reversed(PAIRS):
                await evaluate_async(client, *pair)
                self.record(pair)


def received_exposures(emulator: ConfidenceEmulator) -> Counter[tuple[str, str]]:
    """(unit, flag key) of every AppliedFlag received, decoded from the requests."""
    seen: Counter[tuple[str, str]] = Counter()
    for batch in emulator.all_flag_log_batches():
        for assigned in batch.flag_assigned:
            for flag in assigned.flags:
                seen[(flag.targeting_key, flag.flag.removeprefix("flags/"))] += 1
    return seen


def received_resolves(emulator: ConfidenceEmulator) -> int:
    return sum(sum(per_variant.values()) for per_variant in emulator.resolve_counts().values())


def lost_in_warnings(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """(exposures, resolve counts) that the WARNINGs say were lost."""
    exposures = resolves = 0
    for record in caplog.records:
        if record.levelno == logging.WARNING and record.name == "confidence.flag_logs":
            m = re.search(r"\): (\d+) exposure\(s\) and (\d+) resolve count", record.getMessage())
            assert m is not None, record.getMessage()
            exposures += int(m.group(1))
            resolves += int(m.group(2))
    return exposures, resolves


def swapped_state() -> bytes:
    # Same flags, plus one: the identities of every exposure stay the same.
    return (
        sample_state()
        .flag(
            "flags/extra",
            variants={"flags/extra/variants/x": {"x": 1}},
            rules=[],
        )
        .build()
    )


def with_settings(provider: ConfidenceProvider, **changes: Any) -> ConfidenceProvider:
    # Internal knobs that are not constructor options (test seams).
    provider._settings = dataclasses.replace(provider._settings, **changes)
    return provider


# -- async-hosted: threads and the async path ------------------------------------------------


@pytest.fixture
async def emulator(
    confidence_emulator: ConfidenceEmulator, openfeature_api: None
) -> AsyncIterator[ConfidenceEmulator]:
    confidence_emulator.set_state(sample_state().build())
    yield confidence_emulator
    await anyio.to_thread.run_sync(api.shutdown)


@pytest.mark.anyio
@pytest.mark.parametrize("dedup", [True, False], ids=["dedup", "no-dedup"])
async def test_every_exposure_once_and_every_resolve_counted(
    emulator: ConfidenceEmulator, dedup: bool
) -> None:
    work = Workload()
    provider = make_provider(
        emulator, pool_size=THREADS, log_poll_interval=0.2, enable_apply_dedup=dedup
    )
    async with provider:
        runtime = provider._runtime
        assert runtime is not None
        api.set_provider_and_wait(provider)  # on the loop thread: attaches at once
        client = api.get_client()
        for phase in range(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(work.run_threads_async, client)
                tg.start_soon(work.run_async, client)
            if phase == 0:
                # A state swap replaces every instance, and with it each instance's own
                # dedup window: only the host-side window can recognize phase 2's exposures.
                generation = runtime._pool.generation
                emulator.set_state(swapped_state())
                with anyio.fail_after(10):
                    while runtime._pool.generation == generation:
                        await anyio.sleep(0.02)
    # `async with` exit: loops stopped, final flush delivered.

    n, m = work.total, len(PAIRS)
    assert m == 40 and n == 2 * (THREADS * 3 + 2) * m == 1120
    exposures = received_exposures(emulator)
    assert received_resolves(emulator) == n
    stats = runtime.log_stats()
    assert (stats.dropped_exposures, stats.dropped_resolves, stats.backlog_batches) == (0, 0, 0)
    if dedup:
        assert exposures == Counter({pair: 1 for pair in PAIRS})  # exactly M, one each
        assert stats.dedup is not None and stats.dedup.applies_deduped >= m
    else:
        assert exposures == work.counts  # exactly N, each evaluation once
        assert sum(exposures.values()) == n
        assert stats.dedup is None
    assert stats.delivered_exposures == sum(exposures.values())
    assert len(emulator.flag_logs) > 2  # periodic flushes ran, not only the final one


@pytest.mark.anyio
async def test_skip_apply_is_counted_as_a_resolve_but_not_exposed(
    emulator: ConfidenceEmulator,
) -> None:
    async with make_provider(emulator) as provider:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        skip = EvaluationContext("inspected", {"_confidence_skip_apply": True})
        for _ in range(3):
            assert await client.get_boolean_value_async("feature.enabled", False, skip)
        assert await client.get_boolean_value_async(
            "feature.enabled", False, EvaluationContext("applied")
        )
    assert received_exposures(emulator) == Counter({("applied", "feature"): 1})
    assert emulator.resolve_counts() == {"flags/feature": {"flags/feature/variants/blue": 4}}


@pytest.mark.anyio
async def test_cloudflare_destination_gets_the_same_counts(
    confidence_emulator: ConfidenceEmulator,
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build(), log_destinations=[2])
    work = Workload()
    provider = with_settings(
        make_provider(emulator, log_poll_interval=0.2),
        cloudflare_base_url=emulator.cloudflare_base_url,
    )
    async with provider:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        await anyio.to_thread.run_sync(work.run_threads, client, 1)
    await anyio.to_thread.run_sync(api.shutdown)
    assert emulator.requests_for(Route.FLAG_LOGS) == []
    assert {i.account_id for i in emulator.ingested} == {ACCOUNT}
    assert received_exposures(emulator) == Counter({pair: 1 for pair in PAIRS})
    assert received_resolves(emulator) == work.total == THREADS * len(PAIRS)


# -- sync app: threads, faults, api.shutdown() -------------------------------------------------


@pytest.fixture
def emulator_sync(
    confidence_emulator_sync: ConfidenceEmulator, openfeature_api: None
) -> Iterator[ConfidenceEmulator]:
    confidence_emulator_sync.set_state(sample_state().build())
    yield confidence_emulator_sync
    api.shutdown()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_flag_logs, "RETRY_POLICY", FAST_RETRY)


@pytest.mark.usefixtures("fast_retries")
def test_flapping_endpoint_loses_and_duplicates_nothing(emulator_sync: ConfidenceEmulator) -> None:
    emulator = emulator_sync
    # 5xx, then timeouts, then dropped connections, then 5xx again; then it recovers.
    faults: list[tuple[Any, int]] = [
        (Status(503), 4),
        (Hang(), 3),
        (DropConnection(), 2),
        (Status(500, headers=(("Retry-After", "0"),)), 2),
    ]
    for fault, times in faults:
        emulator.inject(Route.FLAG_LOGS, fault, times=times)
    provider = make_provider(emulator, pool_size=THREADS, log_poll_interval=0.1)
    api.set_provider_and_wait(provider)
    runtime = provider._runtime
    assert runtime is not None
    client = api.get_client()
    work = Workload()
    for _ in range(3):  # spread over several drains, so many batches meet the faults
        work.run_threads(client, rounds=1)
        time.sleep(0.3)
    attempts = sum(times for _, times in faults)
    wait_until(lambda: len(emulator.requests_for(Route.FLAG_LOGS)) > attempts, timeout=30)
    wait_until(lambda: runtime.log_stats().backlog_batches == 0, timeout=30)
    api.shutdown()  # the sync app's shutdown flushes the rest

    assert work.total == 3 * THREADS * len(PAIRS) == 480
    assert received_exposures(emulator) == Counter({pair: 1 for pair in PAIRS})
    assert received_resolves(emulator) == work.total
    stats = runtime.log_stats()
    assert stats.failed_deliveries >= 1
    assert (stats.dropped_exposures, stats.dropped_resolves) == (0, 0)
    # The requests that failed carried the same bytes as a later successful one.
    assert stats.delivered_exposures == len(PAIRS)


@pytest.mark.usefixtures("fast_retries")
def test_dead_endpoint_bounded_backlog_counts_and_reports_losses(
    emulator_sync: ConfidenceEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="confidence.flag_logs")
    monkeypatch.setattr(_flag_logs, "MAX_BACKLOG_BATCHES", 4)
    emulator = emulator_sync
    emulator.inject(Route.FLAG_LOGS, Hang())  # dead for good: every request times out
    provider = make_provider(
        emulator, pool_size=THREADS, log_poll_interval=0.05, shutdown_timeout=1.0
    )
    api.set_provider_and_wait(provider)
    runtime = provider._runtime
    assert runtime is not None
    client = api.get_client()

    per_thread = 1500
    latencies: list[float] = []
    backlog_seen: list[tuple[int, int]] = []
    done = threading.Event()

    def evaluate_unique(t: int) -> None:
        mine = []
        for i in range(per_thread):
            started = time.perf_counter()
            evaluate(client, f"dead-{t}-{i}", "feature")
            mine.append(time.perf_counter() - started)
        latencies.extend(mine)

    def watch_backlog() -> None:
        while not done.is_set():
            stats = runtime.log_stats()
            backlog_seen.append((stats.backlog_batches, stats.backlog_bytes))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_backlog)
    watcher.start()
    threads = [threading.Thread(target=evaluate_unique, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.3)  # a few more drains into the full backlog
    done.set()
    watcher.join()
    during = provider.stats()
    assert during.log_dropped_exposures > 0 and during.log_dropped_batches > 0
    assert during.log_dropped_exposures == runtime.log_stats().dropped_exposures
    started = time.monotonic()
    api.shutdown()
    shutdown_seconds = time.monotonic() - started

    n = THREADS * per_thread
    # Nothing was accepted; everything is accounted for as lost, exactly.
    assert emulator.all_flag_log_batches() == []
    stats = runtime.log_stats()
    assert stats.delivered_exposures == 0
    assert (stats.dropped_exposures, stats.dropped_resolves) == (n, n)
    assert stats.dropped_batches > 4
    assert lost_in_warnings(caplog) == (n, n)
    assert "the flag-log backlog was full" in caplog.text
    # Memory stayed bounded: never more than the bound (plus the batch in flight).
    assert backlog_seen and max(b for b, _ in backlog_seen) <= 4
    assert max(size for _, size in backlog_seen) <= _flag_logs.MAX_BACKLOG_BYTES
    # The resolve path never waited for the network (a send attempt takes 0.3 s here).
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.01
    assert latencies[int(len(latencies) * 0.99)] < 0.05
    assert shutdown_seconds < 1.0 + 2.0  # shutdown_timeout bounds it


def test_resolver_queue_cap_drops_are_counted_not_silent(
    emulator_sync: ConfidenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="confidence.flag_logs")
    emulator = emulator_sync
    # No periodic drain, and a tiny per-instance exposure queue: most exposures are refused.
    provider = with_settings(
        make_provider(emulator, pool_size=1, log_poll_interval=60.0),
        max_pending_exposure_bytes=4096,
    )
    api.set_provider_and_wait(provider)
    runtime = provider._runtime
    assert runtime is not None
    client = api.get_client()
    n = 300
    for i in range(n):
        evaluate(client, f"capped-{i}", "feature")
    api.shutdown()

    received = sum(received_exposures(emulator).values())
    stats = runtime.log_stats()
    assert 0 < received < n
    assert stats.dropped_exposures == n - received
    assert received_resolves(emulator) == n  # resolve counts are never capped
    assert lost_in_warnings(caplog) == (n - received, 0)
    assert "a resolver's exposure queue was full" in caplog.text


def test_drains_are_not_starved_by_more_resolving_threads_than_instances() -> None:
    # Saturated: 8 threads on 2 instances, so an instance is almost never idle. A drain
    # must still get each instance promptly (its borrower hands it over), or exposures
    # would pile up in the resolvers until their cap.
    pool = ResolverPool(2)
    pool.set_state(sample_state().build(), ACCOUNT)
    stop = threading.Event()
    resolved = Counter[int]()

    def resolve(t: int) -> None:
        i = 0
        while not stop.is_set():
            context = f'{{"targeting_key":"sat-{t}-{i}"}}'.encode()
            with pool.borrow() as instance:
                instance.resolve(ResolveRequest(("flags/feature",), context, SECRET, apply=True))
            i += 1
        resolved[t] = i

    threads = [threading.Thread(target=resolve, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    drained: list[bytes] = []
    durations: list[float] = []

    def drain() -> None:
        for _ in range(10):
            time.sleep(0.05)
            started = time.monotonic()
            drained.extend(pool.flush_logs(wait=True, max_assigned_bytes=1 << 20))
            durations.append(time.monotonic() - started)

    drainer = threading.Thread(target=drain)
    drainer.start()
    drainer.join(timeout=10)  # a starved drain only finishes once the resolvers stop
    stop.set()
    for thread in [drainer, *threads]:
        thread.join()
    slowest = max(durations)
    drained += pool.flush_logs(wait=True)
    assert slowest < 1.0
    exposures = sum(
        len(a.flags)
        for body in drained
        for a in api_pb2.WriteFlagLogsRequest.FromString(body).flag_assigned
    )
    assert exposures == sum(resolved.values()) > 0
    assert pool.take_dropped_exposures() == (0, 0)


# -- the wire format, field by field -----------------------------------------------------------


def wire_state() -> bytes:
    def rule(segment: str, assignment: dict[str, Any], aid: str, name: str, **extra: Any) -> Any:
        return {
            "name": name,
            "segment": segment,
            "enabled": True,
            "assignmentSpec": {
                "bucketCount": 1,
                "assignments": [
                    {"assignmentId": aid, **assignment, "bucketRanges": [{"lower": 0, "upper": 1}]}
                ],
            },
            **extra,
        }

    on = "flags/wire/variants/on"
    return (
        sample_state()
        .flag(
            "flags/wire",
            variants={on: {"enabled": True}},
            rules=[
                # A fallthrough bucketed on another unit, then the Swedish match.
                rule(
                    "segments/everyone",
                    {"fallthrough": {}},
                    "ft-1",
                    "flags/wire/rules/warmup",
                    targetingKeySelector="user_id",
                ),
                rule(
                    "segments/sweden", {"variant": {"variant": on}}, "on-1", "flags/wire/rules/se"
                ),
            ],
        )
        .build()
    )


def test_requests_carry_every_field_the_spec_requires(emulator_sync: ConfidenceEmulator) -> None:
    emulator = emulator_sync
    emulator.set_state(wire_state())
    provider = make_provider(emulator, log_poll_interval=0.2)
    api.set_provider_and_wait(provider)
    runtime = provider._runtime
    assert runtime is not None
    client = api.get_client()
    before = time.time()
    sweden = EvaluationContext("tk-1", {"user_id": "u1", "country": "SE", "app": {"build": 7}})
    norway = EvaluationContext("tk-2", {"user_id": "u2", "country": "NO"})
    assert client.get_boolean_value("wire.enabled", False, sweden) is True
    assert client.get_boolean_value("wire.enabled", False, norway) is False  # no segment
    wait_until(lambda: len(emulator.flag_logs) >= 1)
    assert client.get_boolean_value("feature.enabled", False, EvaluationContext("tk-3"))
    api.shutdown()
    after = time.time()

    requests = emulator.requests_for(Route.FLAG_LOGS)
    assert len(requests) == len(emulator.flag_logs) >= 2
    for request in requests:
        assert request.method == "POST" and request.path == "/v1/clientFlagLogs:write"
        assert request.header("Authorization") == f"ClientSecret {SECRET}"
        assert request.header("Content-Type") == "application/x-protobuf"
        api_pb2.WriteFlagLogsRequest.FromString(request.body)  # decodes
    received = emulator.flag_logs
    sdk = api_pb2.Sdk(id=api_pb2.SDK_ID_PYTHON_LOCAL_PROVIDER, version=__version__)
    client_name, credential = "clients/test-client", "clients/test-client/clientCredentials/0"

    # -- assignments (exposures) --
    envelopes = [a for r in received for a in r.flag_assigned]
    assert len(envelopes) == 3 and len({a.resolve_id for a in envelopes}) == 3
    for envelope in envelopes:
        assert len(envelope.resolve_id) >= 16
        assert envelope.client_info.client == client_name
        assert envelope.client_info.client_credential == credential
        assert envelope.client_info.sdk == sdk
        (applied,) = envelope.flags
        assert before - 0.001 <= applied.apply_time.ToMicroseconds() / 1e6 <= after
    wire = {
        a.flags[0].fallthrough_assignments[0].targeting_key: a.flags[0]
        for a in envelopes
        if a.flags[0].flag == "flags/wire"
    }
    assert set(wire) == {"u1", "u2"}
    for unit, applied in wire.items():
        (fallthrough,) = applied.fallthrough_assignments
        assert (fallthrough.rule, fallthrough.assignment_id) == ("flags/wire/rules/warmup", "ft-1")
        assert (fallthrough.targeting_key, fallthrough.targeting_key_selector) == (unit, "user_id")
    match = wire["u1"]
    assert match.WhichOneof("assignment") == "assignment_info"
    assert match.assignment_info.segment == "segments/sweden"
    assert match.assignment_info.variant == "flags/wire/variants/on"
    assert (match.targeting_key, match.targeting_key_selector) == ("tk-1", "targeting_key")
    assert (match.assignment_id, match.rule) == ("on-1", "flags/wire/rules/se")
    default = wire["u2"]
    assert default.WhichOneof("assignment") == "default_assignment"
    assert (
        default.default_assignment.reason
        == events_pb2.FlagAssigned.DefaultAssignment.NO_SEGMENT_MATCH
    )
    (feature,) = [a.flags[0] for a in envelopes if a.flags[0].flag == "flags/feature"]
    assert feature.assignment_info.variant == "flags/feature/variants/blue"
    assert (feature.targeting_key, feature.rule) == ("tk-3", "flags/feature/rules/rule-0")
    assert feature.assignment_id == "flags/feature/variants/blue-0"

    # -- client resolve info: the context schemas --
    infos = [i for r in received for i in r.client_resolve_info]
    assert {(i.client, i.client_credential) for i in infos} == {(client_name, credential)}
    schemas = [dict(s.schema) for i in infos for s in i.schema]
    string, number = 3, 2
    assert {"targeting_key": string, "user_id": string, "country": string, "app.build": number} in (
        schemas
    )
    assert {"targeting_key": string, "user_id": string, "country": string} in schemas
    assert {"targeting_key": string} in schemas
    assert all(
        s.semantic_types["country"].HasField("country")
        for i in infos
        for s in i.schema
        if "country" in s.schema
    )

    # -- flag resolve info: per variant, per rule (fallthroughs included), per assignment --
    variants: Counter[tuple[str, str]] = Counter()
    rules: Counter[tuple[str, str]] = Counter()
    assignments: Counter[tuple[str, str, str]] = Counter()
    for info in (i for r in received for i in r.flag_resolve_info):
        for v in info.variant_resolve_info:
            variants[(info.flag, v.variant)] += v.count
        for rule in info.rule_resolve_info:
            rules[(info.flag, rule.rule)] += rule.count
            for a in rule.assignment_resolve_info:
                assignments[(info.flag, rule.rule, a.assignment_id)] += a.count
    assert variants == Counter(
        {
            ("flags/wire", "flags/wire/variants/on"): 1,
            ("flags/wire", ""): 1,
            ("flags/feature", "flags/feature/variants/blue"): 1,
        }
    )
    assert rules == Counter(
        {
            ("flags/wire", "flags/wire/rules/warmup"): 2,
            ("flags/wire", "flags/wire/rules/se"): 1,
            ("flags/feature", "flags/feature/rules/rule-0"): 1,
        }
    )
    assert assignments == Counter(
        {
            ("flags/wire", "flags/wire/rules/warmup", "ft-1"): 2,
            ("flags/wire", "flags/wire/rules/se", "on-1"): 1,
            ("flags/feature", "flags/feature/rules/rule-0", "flags/feature/variants/blue-0"): 1,
        }
    )

    # -- telemetry: from the resolver, and from the host --
    rates: Counter[int] = Counter()
    for r in received:
        telemetry = r.telemetry_data
        assert telemetry.sdk == sdk
        assert telemetry.memory_bytes > 0
        assert telemetry.resolver_version
        assert telemetry.apply_dedup.map_capacity == 100_000
        for rate in telemetry.resolve_rate:
            rates[rate.reason] += rate.count
        loaded = telemetry.state_age.last_state_update / 1000
        assert before - 60 <= loaded <= before
    assert rates == Counter({1: 2, 2: 1})  # MATCH, NO_SEGMENT_MATCH
    assert sum(r.telemetry_data.apply_dedup.applies_total for r in received) == 3
    assert received[0].telemetry_data.flush.succeeded == 0  # nothing delivered before it
    # Earlier deliveries are reported, each by exactly one later request (pipelined requests
    # take the counts they carry, so none is reported twice).
    reported = sum(r.telemetry_data.flush.succeeded for r in received)
    assert 1 <= reported <= len(received) - 1
    assert runtime.log_stats().delivered_batches == len(requests)


def test_drains_come_sooner_while_exposures_arrive_fast() -> None:
    busy, interval = _flag_logs.BUSY_DRAIN_BYTES, 10.0
    delay = _flag_logs.next_drain_delay
    # 4 MiB over the 10 s interval: the rate would fill the threshold per interval.
    assert delay(busy, interval, interval) == _flag_logs.BUSY_DRAIN_INTERVAL
    # Half a second after a busy drain, a twentieth of it still means the same rate.
    assert delay(busy // 20 + 1, 0.5, interval) == _flag_logs.BUSY_DRAIN_INTERVAL
    # Slower traffic: back to the configured interval.
    assert delay(busy // 20 - 1, 0.5, interval) == interval
    assert delay(busy - 1, interval, interval) == interval
    assert delay(0, 0.0, interval) == interval
    # Never later than configured (a short interval stays as it is).
    assert delay(busy, 0.1, 0.2) == 0.2


def test_drain_cadence_stays_busy_through_short_pauses_in_a_burst() -> None:
    # Bursts of traffic with pauses shorter than the interval (a batch job, the sustained
    # bench alternating with other work): a quiet half second must not send the next drain
    # a whole interval away, or the resolvers queue an interval of bursts (their linear
    # memory keeps that high-water mark: 12 -> 44 MiB on one instance over 1,000,000 calls).
    busy, interval = _flag_logs.BUSY_DRAIN_BYTES, 10.0
    fast = _flag_logs.BUSY_DRAIN_INTERVAL
    cadence = _flag_logs.DrainCadence(interval, now=0.0)
    assert cadence.next_delay(0, 10.0) == interval  # idle start: the configured interval
    assert cadence.next_delay(busy, 20.0) == fast  # a burst
    assert cadence.next_delay(busy // 20 + 1, 20.5) == fast  # still at the busy rate
    assert cadence.next_delay(0, 21.0) == fast  # a pause within the burst
    assert cadence.next_delay(0, 25.0) == fast
    assert cadence.next_delay(0, 30.4) == fast  # < interval since the last busy drain
    assert cadence.next_delay(0, 30.5) == interval  # a whole interval quiet: back to it
    assert cadence.next_delay(0, 40.5) == interval
    assert cadence.next_delay(busy, 50.5) == fast  # the next burst
    # Never later than configured, and a short interval stays as it is.
    short = _flag_logs.DrainCadence(0.2, now=0.0)
    assert short.next_delay(busy, 0.1) == 0.2
    assert short.next_delay(0, 0.2) == 0.2
