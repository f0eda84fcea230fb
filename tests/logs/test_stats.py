"""`provider.stats()`, its hot-path counters, OpenTelemetry metrics and logging hygiene."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from openfeature.evaluation_context import EvaluationContext
from provider_support import SECRET, make_provider, requires_wasm, sample_state

import confidence
from confidence._stats import _FOLD_MIN, StatsRecorder, _bucket, _bucket_upper_ns
from confidence.testing.emulator import ConfidenceEmulator, Route, Status

USER = EvaluationContext("user-1")



# -- the recorder ------------------------------------------------------------------------------


def test_buckets_bound_values_within_25_percent() -> None:
    for ns in [0, 1, 2, 3, 7, 8, 9, 100, 1023, 1024, 123_456, 10**9, 2**40 + 5]:
        upper = _bucket_upper_ns(_bucket(ns))
        assert ns < upper
        # 4 buckets per power of two: at most 25 % above (tiny values: the next power).
        assert upper <= (ns * 1.25 + 1 if ns >= 8 else 2 * ns + 2)


def test_no_increment_is_lost_across_threads() -> None:
    recorder = StatsRecorder()

    def work() -> None:
        for i in range(20_000):
            recorder.record("TARGETING_MATCH", None if i % 4 else "GENERAL", 1000 + i)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reasons, errors, latency = recorder.counts()
    assert dict(reasons) == {"TARGETING_MATCH": 160_000}
    assert dict(errors) == {"GENERAL": 40_000}
    assert latency.count == 160_000
    assert latency.max == pytest.approx(20_999e-9)
    assert 9_000e-9 < latency.p50 < 14_000e-9  # median ~11 µs, bucket-rounded up
    assert latency.p50 <= latency.p90 <= latency.p99 <= latency.max
    # The dead threads' shards were folded away, and the totals survived that.
    assert recorder._shards == []
    assert recorder.counts()[0]["TARGETING_MATCH"] == 160_000


def test_a_thread_per_request_app_never_taking_a_snapshot_stays_bounded() -> None:
    # e.g. ThreadingHTTPServer: every request on a new thread, stats() never called.
    recorder = StatsRecorder()
    longest = 0
    for i in range(1_000):
        t = threading.Thread(target=recorder.record, args=("DEFAULT", None, 1000 + i))
        t.start()
        t.join()
        longest = max(longest, len(recorder._shards))
    assert longest <= _FOLD_MIN  # finished threads' shards were folded as new ones came
    reasons, _errors, latency = recorder.counts()
    assert dict(reasons) == {"DEFAULT": 1_000}
    assert latency.count == 1_000


def test_a_failing_observer_is_detached_not_raised() -> None:
    recorder = StatsRecorder()

    def boom(elapsed_ns: int, reason: Any) -> None:
        raise RuntimeError("boom")

    recorder.latency_observer = boom
    recorder.record("DEFAULT", None, 10)
    assert recorder.latency_observer is None
    assert recorder.counts()[0]["DEFAULT"] == 1


# -- through the provider ----------------------------------------------------------------------


@requires_wasm
@pytest.mark.anyio
async def test_provider_stats(confidence_emulator: ConfidenceEmulator) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    provider = make_provider(emulator, otel_metrics=False)
    before = provider.stats()
    assert before.status == "NOT_STARTED" and before.resolves == 0 and before.pool is None
    async with provider:
        for _ in range(3):
            await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        provider.resolve_boolean_details("swedish.enabled", False, USER)  # no match: DEFAULT
        await provider.resolve_boolean_details_async("missing", False, USER)
        await provider.resolve_string_details_async("feature.enabled", "", USER)  # mismatch
        stats = provider.stats()
        assert dict(stats.resolves_by_reason) == {"TARGETING_MATCH": 3, "DEFAULT": 1, "ERROR": 2}
        assert dict(stats.errors_by_code) == {"FLAG_NOT_FOUND": 1, "TYPE_MISMATCH": 1}
        assert stats.resolves == 6 and stats.resolve_latency.count == 6
        assert 0 < stats.resolve_latency.mean <= stats.resolve_latency.max < 1.0
        assert stats.status == "READY"
        assert stats.last_sync_outcome == "success" and stats.sync_consecutive_failures == 0
        assert stats.state_age_seconds is not None and stats.state_age_seconds < 5
        assert stats.pool is not None and stats.pool.instances >= 1
        assert stats.log_backlog_batches == 0 and stats.log_dropped_batches == 0

        emulator.inject(Route.STATE, Status(503))
        with anyio.fail_after(5):
            while provider.stats().sync_consecutive_failures < 3:
                await anyio.sleep(0.05)
        stats = provider.stats()
        assert stats.last_sync_outcome == "failure" and stats.last_sync_error == "HTTP 503"
        assert stats.status == "STALE"
        emulator.clear_faults()
    after = provider.stats()
    assert after.resolves == 6  # counters outlive a run
    # The stopped run's final flag-log ledger stays readable (issue 14).
    assert after.status == "STOPPED"
    # Resolve counts cover the flags that exist: all but "missing".
    assert after.log_produced_resolves == after.log_delivered_resolves == 5


# -- OpenTelemetry -----------------------------------------------------------------------------


@pytest.fixture
def metric_reader() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reader.meter_provider = provider  # type: ignore[attr-defined]
    yield reader
    provider.shutdown()


def collect(reader: Any) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def by_attribute(points: list[Any], key: str) -> dict[str, Any]:
    return {p.attributes[key]: p.value for p in points}


@requires_wasm
@pytest.mark.anyio
async def test_otel_metrics(confidence_emulator: ConfidenceEmulator, metric_reader: Any) -> None:
    from confidence.otel import instrument

    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    provider = make_provider(emulator, otel_metrics=False, log_poll_interval=0.1)
    instrument(provider, meter_provider=metric_reader.meter_provider)
    instrument(provider, meter_provider=metric_reader.meter_provider)  # idempotent
    async with provider:
        await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        await provider.resolve_boolean_details_async("missing", False, USER)
        provider.track("e")
        with anyio.fail_after(5):
            while provider.stats().events.published < 1:
                await anyio.sleep(0.05)
        points = collect(metric_reader)

    assert by_attribute(points["confidence.flag.evaluations"], "feature_flag.result.reason") == {
        "TARGETING_MATCH": 2,
        "ERROR": 1,
    }
    assert by_attribute(points["confidence.flag.evaluation.errors"], "error.type") == {
        "FLAG_NOT_FOUND": 1
    }
    histogram = {
        p.attributes["feature_flag.result.reason"]: p
        for p in points["confidence.flag.evaluation.duration"]
    }
    assert histogram["TARGETING_MATCH"].count == 2 and histogram["ERROR"].count == 1
    assert 0 < histogram["TARGETING_MATCH"].sum < 1.0
    (age,) = points["confidence.state.age"]
    assert 0 <= age.value < 10
    (outcome,) = points["confidence.state.sync.last_outcome"]
    assert outcome.attributes == {"outcome": "success"} and outcome.value == 1
    assert points["confidence.state.sync.consecutive_failures"][0].value == 0
    assert points["confidence.exposure.backlog"][0].value >= 0  # a flush may be underway
    assert points["confidence.exposure.dropped"][0].value == 0
    assert points["confidence.events.published"][0].value == 1
    assert points["confidence.events.backlog"][0].value == 0
    assert points["confidence.events.dropped"][0].value == 0


def test_otel_auto_instrumentation_is_harmless_without_an_sdk() -> None:
    # The global meter provider is OpenTelemetry's no-op proxy unless an app sets one.
    provider = confidence.ConfidenceProvider(SECRET)
    provider._instrument_otel()
    provider._instrument_otel()
    assert provider._otel_instrumented
    provider.resolve_boolean_details("x", False)  # runs the latency observer: no error
    assert provider.stats().resolves == 1


# -- logging -----------------------------------------------------------------------------------


def test_confidence_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("confidence").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


@requires_wasm
@pytest.mark.anyio
async def test_logs_never_contain_secrets(
    confidence_emulator: ConfidenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    with caplog.at_level(logging.DEBUG, logger="confidence"):
        async with make_provider(emulator, log_poll_interval=0.1, shutdown_timeout=1.0) as p:
            emulator.inject(Route.STATE, Status(500))
            emulator.inject(Route.EVENTS, Status(500))
            emulator.inject(Route.FLAG_LOGS, Status(500))
            p.track("e", EvaluationContext("u"))
            await p.resolve_boolean_details_async("feature.enabled", False, USER)
            with anyio.fail_after(10):
                while p.stats().events.failed_batches < 1:
                    await anyio.sleep(0.05)
        emulator.clear_faults()
    assert caplog.records
    assert SECRET not in caplog.text
    assert emulator.encryption_key_hex not in caplog.text.lower()
    assert emulator.secret_hash not in caplog.text
