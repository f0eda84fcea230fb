"""Code written for the official provider (`confidence-openfeature-provider` 0.15.3) runs
unchanged, or fails with a message that says what to change (issue 16).

Real components: the real resolver.wasm, the emulator on 127.0.0.1, the OpenFeature SDK.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider import ProviderStatus
from provider_support import SECRET, make_provider, requires_wasm, wait_until

import confidence
from confidence import ConfidenceProvider
from confidence.materialization import (
    InclusionReadOp,
    InclusionReadResult,
    InMemoryMaterializationStore,
    ReadOp,
    ReadResult,
    RemoteMaterializationError,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)
from confidence.testing.emulator import ConfidenceEmulator, Route, Status

USER = EvaluationContext("user-1")
STICKY_MAT = "materializations/sticky"

pytestmark = [pytest.mark.usefixtures("openfeature_api")]


def _urls(emulator: ConfidenceEmulator) -> dict[str, Any]:
    return {
        "cdn_base_url": emulator.cdn_base_url,
        "api_base_url": emulator.api_base_url,
        "events_base_url": emulator.base_url,
        "pool_size": 1,
    }


# -- constructor ---------------------------------------------------------------------------


@requires_wasm
def test_positional_encryption_key(emulator: ConfidenceEmulator) -> None:
    provider = ConfidenceProvider(SECRET, emulator.encryption_key_hex, **_urls(emulator))
    api.set_provider_and_wait(provider)
    assert api.get_client().get_string_value("feature.color", "none", USER) == "blue"


@requires_wasm
def test_the_official_positional_order_is_accepted(emulator: ConfidenceEmulator) -> None:
    # client_secret, encryption_key, state_poll_interval, log_poll_interval,
    # assign_poll_interval, materialization_store, use_remote_materialization_store,
    # http_client, grpc_channel, state_fetcher, flag_logger, wasm_bytes,
    # enable_apply_dedup, disable_exposure_collection
    store = InMemoryMaterializationStore()
    provider = ConfidenceProvider(
        SECRET,
        emulator.encryption_key_hex,
        30.0,
        15.0,
        0.1,
        store,
        False,
        None,
        None,
        None,
        None,
        None,
        True,
        False,
        **_urls(emulator),
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_boolean_value("sticky.enabled", False, USER) is True
    assert provider._settings.state_poll_interval == 30.0
    assert provider._settings.log_poll_interval == 15.0
    assert provider._settings.materialization_store is store


@pytest.mark.parametrize(
    ("name", "names_instead"),
    [
        ("http_client", "cdn_base_url"),
        ("grpc_channel", "api_base_url"),
        ("state_fetcher", "state_file"),
        ("flag_logger", "ConfidenceEmulator"),
        ("wasm_bytes", "state_file"),
    ],
)
def test_official_injection_points_raise_naming_our_equivalent(
    name: str, names_instead: str
) -> None:
    with pytest.raises(TypeError) as info:
        ConfidenceProvider(SECRET, **{name: object()})
    message = str(info.value)
    assert f"{name}=" in message and names_instead in message
    assert "unexpected keyword" not in message


def test_assign_poll_interval_is_accepted_and_validated() -> None:
    ConfidenceProvider(SECRET, assign_poll_interval=0.5)
    with pytest.raises(ValueError, match="assign_poll_interval"):
        ConfidenceProvider(SECRET, assign_poll_interval=0)


def test_official_public_imports() -> None:
    for name in (
        "ConfidenceProvider",
        "SnapshotConfig",
        "MaterializationStore",
        "MaterializationNotSupportedError",
        "RemoteMaterializationStore",
        "UnsupportedMaterializationStore",
        "__version__",
    ):
        assert hasattr(confidence, name), name
        assert name in confidence.__all__
    from confidence import RemoteMaterializationStore
    from confidence.materialization import RemoteMaterializationStore as Again

    assert RemoteMaterializationStore is Again


# -- disable_exposure_collection -------------------------------------------------------------


@requires_wasm
def test_disable_exposure_collection_sends_no_exposure_but_resolve_counts(
    emulator: ConfidenceEmulator,
) -> None:
    def run(**options: Any) -> None:
        provider = make_provider(emulator, **options)
        api.set_provider_and_wait(provider)
        client = api.get_client()
        for i in range(5):
            ctx = EvaluationContext(f"user-{i}")
            assert client.get_boolean_value("feature.enabled", False, ctx) is True
            assert client.get_string_value("swedish.missing", "x", ctx) == "x"
        api.shutdown()

    run()  # the control: the same evaluations do log exposures
    assert emulator.exposure_count("feature") == 5
    emulator.clear_records()
    emulator.take_flag_log_batches()

    run(disable_exposure_collection=True)
    batches = emulator.flag_logs
    assert batches, "resolve info and telemetry are still sent"
    assert emulator.exposure_count() == 0
    assert all(not b.flag_assigned for b in batches)
    counts = emulator.resolve_counts()
    assert counts["flags/feature"] == {"flags/feature/variants/blue": 5}
    assert counts["flags/swedish"] == {"": 5}
    rates = {r.reason: r.count for b in batches for r in b.telemetry_data.resolve_rate}
    assert rates == {1: 5, 2: 5}


# -- get_status / get_prometheus_metrics -----------------------------------------------------


@requires_wasm
def test_get_status_follows_the_lifecycle(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    assert provider.get_status() is ProviderStatus.NOT_READY
    api.set_provider_and_wait(provider)
    assert provider.get_status() is ProviderStatus.READY
    api.shutdown()
    assert provider.get_status() is ProviderStatus.NOT_READY


@requires_wasm
def test_get_prometheus_metrics_is_valid_text_exposition(emulator: ConfidenceEmulator) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    provider = make_provider(emulator)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_boolean_value("feature.enabled", False, USER) is True  # MATCH
    assert client.get_boolean_value("feature.enabled", False, USER) is True  # MATCH
    assert client.get_boolean_value("swedish.enabled", False, USER) is False  # NO_SEGMENT
    assert client.get_boolean_value("feature.color", False, USER) is False  # TYPE_MISMATCH
    assert client.get_boolean_value("nope.x", False, USER) is False  # FLAG_NOT_FOUND

    text = provider.get_prometheus_metrics(confidence.SnapshotConfig())
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}

    resolves = families["confidence_resolves"]
    assert resolves.type == "counter"
    by_reason = {s.labels["reason"]: s.value for s in resolves.samples if s.name.endswith("_total")}
    assert by_reason == {
        "RESOLVE_REASON_MATCH": 2,
        "RESOLVE_REASON_NO_SEGMENT_MATCH": 1,
        "RESOLVE_REASON_TYPE_MISMATCH": 1,
        "RESOLVE_REASON_FLAG_NOT_FOUND": 1,
    }

    latency = families["confidence_resolve_latency_microseconds"]
    assert latency.type == "histogram"
    buckets = [
        (float(s.labels["le"]), s.value) for s in latency.samples if s.name.endswith("_bucket")
    ]
    assert buckets[-1] == (math.inf, 5)
    assert [b for b, _ in buckets] == sorted(b for b, _ in buckets)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    count = [s.value for s in latency.samples if s.name.endswith("_count")]
    assert count == [5]

    evaluations = families["confidence_evaluations"]
    assert sum(s.value for s in evaluations.samples if s.name.endswith("_total")) == 5
    assert [s.value for s in families["confidence_ready"].samples] == [1]


def test_get_prometheus_metrics_before_start_parses() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    text = ConfidenceProvider(SECRET).get_prometheus_metrics()
    families = {f.name for f in parser.text_string_to_metric_families(text)}
    assert {"confidence_resolves", "confidence_resolve_latency_microseconds"} <= families


# -- the store's lifecycle -------------------------------------------------------------------


class ClosingStore(InMemoryMaterializationStore):
    """A sync store that records close() and what it held when closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0
        self.held_at_close: dict[tuple[str, str], dict[str, str]] | None = None

    def close(self) -> None:
        self.closed += 1
        self.held_at_close = self.snapshot()


class AsyncClosingStore:
    """An async store whose close() is a coroutine."""

    def __init__(self) -> None:
        self.inner = InMemoryMaterializationStore()
        self.closed = 0
        self.held_at_close: dict[tuple[str, str], dict[str, str]] | None = None

    async def read(self, ops: list[ReadOp]) -> list[ReadResult]:
        return self.inner.read(ops)

    async def write(self, ops: list[VariantWriteOp]) -> None:
        self.inner.write(ops)

    async def close(self) -> None:
        self.closed += 1
        self.held_at_close = self.inner.snapshot()


@requires_wasm
def test_shutdown_closes_a_sync_store_once_after_its_last_write(
    emulator: ConfidenceEmulator,
) -> None:
    store = ClosingStore()
    provider = make_provider(emulator, materialization_store=store)
    api.set_provider_and_wait(provider)
    assert api.get_client().get_boolean_value("sticky.enabled", False, USER) is True
    assert store.closed == 0
    api.shutdown()
    assert store.closed == 1
    assert store.held_at_close is not None and (("user-1", STICKY_MAT) in store.held_at_close)
    provider.shutdown()  # idempotent: not closed again
    assert store.closed == 1


@requires_wasm
def test_aclose_closes_an_async_store_once(emulator: ConfidenceEmulator) -> None:
    store = AsyncClosingStore()
    provider = make_provider(emulator, materialization_store=store)

    async def main() -> None:
        async with provider:
            details = await provider.resolve_boolean_details_async("sticky.enabled", False, USER)
            assert details.value is True
            assert store.closed == 0
        assert store.closed == 1
        await provider.aclose()
        assert store.closed == 1

    anyio.run(main)
    assert store.held_at_close is not None and ("user-1", STICKY_MAT) in store.held_at_close


# -- the sync remote store -------------------------------------------------------------------


def test_sync_remote_store_against_the_emulator(emulator: ConfidenceEmulator) -> None:
    from confidence import RemoteMaterializationStore

    RemoteMaterializationStore(SECRET).close()  # the official constructor; no I/O yet
    with pytest.raises(TypeError, match="api_base_url"):
        RemoteMaterializationStore(SECRET, object())

    emulator.set_inclusion("u2", "materializations/segment")
    store = RemoteMaterializationStore(
        SECRET, api_base_url=emulator.api_base_url, read_timeout=5.0, write_timeout=5.0
    )
    rule = "flags/f/rules/r1"
    assert store.read([VariantReadOp("u1", STICKY_MAT, rule)]) == [
        VariantReadResult("u1", STICKY_MAT, rule, None)
    ]
    store.write([VariantWriteOp("u1", STICKY_MAT, rule, "treatment")])
    assert emulator.materialized_variants[("u1", STICKY_MAT, rule)] == "treatment"
    results = store.read(
        [VariantReadOp("u1", STICKY_MAT, rule), InclusionReadOp("u2", "materializations/segment")]
    )
    assert sorted(results, key=repr) == sorted(
        [
            VariantReadResult("u1", STICKY_MAT, rule, "treatment"),
            InclusionReadResult("u2", "materializations/segment", True),
        ],
        key=repr,
    )
    store.close()
    store.close()  # idempotent
    with pytest.raises(RemoteMaterializationError, match="closed"):
        store.read([VariantReadOp("u1", STICKY_MAT, rule)])


@requires_wasm
def test_sync_remote_store_as_the_providers_store(emulator: ConfidenceEmulator) -> None:
    from confidence import RemoteMaterializationStore

    store = RemoteMaterializationStore(
        SECRET, api_base_url=emulator.api_base_url, read_timeout=5.0, write_timeout=5.0
    )
    provider = make_provider(emulator, materialization_store=store)
    api.set_provider_and_wait(provider)
    assert api.get_client().get_boolean_value("sticky.enabled", False, USER) is True
    api.shutdown()  # flushes the write, then closes the store
    assert any(k[0] == "user-1" for k in emulator.materialized_variants)
    with pytest.raises(RemoteMaterializationError, match="closed"):
        store.write([VariantWriteOp("u", STICKY_MAT, "r", "v")])


# -- resolve analytics in the flag-log telemetry ---------------------------------------------


@requires_wasm
def test_telemetry_fields_decoded_from_the_emulator(emulator: ConfidenceEmulator) -> None:
    # The first delivery fails (a permanent 400): its counts ride on the next one.
    emulator.inject(Route.FLAG_LOGS, Status(400), times=1)
    provider = make_provider(emulator, log_poll_interval=0.3)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_boolean_value("feature.enabled", False, USER) is True  # MATCH
    assert client.get_boolean_value("swedish.enabled", False, USER) is False  # NO_SEGMENT
    assert client.get_boolean_value("feature.color", False, USER) is False  # TYPE_MISMATCH
    assert client.get_boolean_value("nope.x", False, USER) is False  # FLAG_NOT_FOUND
    assert client.get_boolean_value("feature.no.path", False, USER) is False  # FLAG_NOT_FOUND
    wait_until(lambda: len(emulator.flag_logs) >= 1)
    assert client.get_integer_value("feature.size", 0, USER) == 42  # MATCH, second delivery
    api.shutdown()

    received = emulator.flag_logs
    assert len(received) >= 2
    telemetry = [r.telemetry_data for r in received]

    # resolve_rate: every reason we produce, each evaluation exactly once.
    rates: dict[int, int] = {}
    for t in telemetry:
        for rate in t.resolve_rate:
            rates[rate.reason] = rates.get(rate.reason, 0) + rate.count
    assert rates == {1: 2, 2: 1, 9: 1, 10: 2}

    # resolve_latency: count, sum and dense spans of consecutive exponents.
    total = 0
    for t in telemetry:
        latency = t.resolve_latency
        if not latency.count:
            continue
        assert latency.ln_ratio == pytest.approx(math.log(10) / 18)
        assert latency.sum > 0
        in_spans = 0
        previous_end: int | None = None
        for span in latency.buckets:
            assert span.counts and all(c > 0 for c in span.counts)
            if previous_end is not None:
                assert span.offset > previous_end  # runs are maximal and ordered
            previous_end = span.offset + len(span.counts)
            in_spans += sum(span.counts)
            # 1 µs .. 10 s: a plausible resolve latency
            assert span.offset >= 0 and previous_end <= 7 * 18
        assert in_spans == latency.count
        total += latency.count
    assert total == 6

    # provider_init_rate: once, on the first delivery that succeeded.
    inits = [(i.count, dict(i.labels)) for t in telemetry for i in t.provider_init_rate]
    assert inits == [(1, {"encryption": "true"})]
    assert received[0].telemetry_data.provider_init_rate  # the failed one was retried

    # flush: always present; the failed first attempt and the later successes are counted.
    assert all(t.HasField("flush") for t in telemetry)
    assert received[0].telemetry_data.flush.failed == 1
    assert received[0].telemetry_data.flush.succeeded == 0
    assert received[-1].telemetry_data.flush.succeeded >= 1
    assert sum(t.flush.failed for t in telemetry) == 1


# -- resolver parity -----------------------------------------------------------------------


@requires_wasm
def test_lower_case_t_and_z_are_not_timestamps(emulator: ConfidenceEmulator) -> None:
    """As in the official resolver (resolve.md: `T`/`Z`): such text is a plain string, and
    a string never satisfies a timestamp bound."""
    from confidence.testing.state_builder import StateBuilder, rollout

    after_2022 = {
        "criteria": {
            "c": {
                "attribute": {
                    "attributeName": "seen",
                    "rangeRule": {"startInclusive": {"timestampValue": "2022-01-01T00:00:00Z"}},
                }
            }
        },
        "expression": {"ref": "c"},
    }
    on = "flags/recent/variants/on"
    emulator.set_state(
        StateBuilder(account="accounts/test")
        .client(SECRET)
        .segment("segments/recent", targeting=after_2022)
        .flag(
            "flags/recent",
            variants={on: {"enabled": True}},
            rules=[rollout("segments/recent", {on: 100})],
        )
        .build()
    )
    api.set_provider_and_wait(make_provider(emulator))
    client = api.get_client()

    def matches(seen: str) -> bool:
        return client.get_boolean_value(
            "recent.enabled", False, EvaluationContext("u", {"seen": seen})
        )

    assert matches("2022-11-17T15:16:17.118Z")
    assert matches("2022-11-17 15:16:17.118+01:00")
    for text in ("2022-11-17t15:16:17.118z", "2022-11-17T15:16:17.118z", "2022-11-17t15:16:17Z"):
        assert not matches(text), text


@requires_wasm
def test_provider_init_rate_says_when_the_state_is_not_encrypted(
    emulator: ConfidenceEmulator,
) -> None:
    provider = make_provider(emulator, encryption_key=None)  # the legacy plaintext state
    api.set_provider_and_wait(provider)
    assert api.get_client().get_boolean_value("feature.enabled", False, USER) is True
    api.shutdown()
    inits = [
        (i.count, dict(i.labels))
        for r in emulator.flag_logs
        for i in r.telemetry_data.provider_init_rate
    ]
    assert inits == [(1, {"encryption": "false"})]
