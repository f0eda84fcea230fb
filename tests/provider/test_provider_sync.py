"""The provider in a sync app: OpenFeature registration, errors, events, shutdown.

Real components only: the real resolver.wasm, the real emulator on 127.0.0.1 (served from a
background loop), the OpenFeature SDK's own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from provider_support import (
    SECRET,
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
    variant,
    wait_until,
)

from confidence import ConfidenceProvider
from confidence.testing.emulator import ConfidenceEmulator, Hang, Route, Status

USER = EvaluationContext("user-1")


pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]


def test_set_provider_and_wait_in_a_sync_app(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        assert client.get_provider_status() is ProviderStatus.READY

        details = client.get_boolean_details("feature.enabled", False)
        assert details.value is True
        assert details.reason == Reason.TARGETING_MATCH
        assert details.variant == variant("feature", "blue")
        assert details.error_code is None
        assert client.get_string_value("feature.color", "none") == "blue"
        assert client.get_integer_value("feature.size", 0) == 42
        assert client.get_float_value("feature.size", 0.0) == 42.0
        assert client.get_object_value("feature.nested", {}) == {"deep": {"x": 7}}

        settle_events()
        assert events.kinds() == [ProviderEvent.PROVIDER_READY]  # the SDK's, exactly once

        api.shutdown()
    # The final flush on shutdown delivered the exposures.
    assert emulator.exposure_count("feature") >= 1
    assert provider.is_ready is False


def test_set_provider_non_blocking_emits_ready_once(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    with recording_events() as events:
        api.set_provider(provider)
        events.wait_for(ProviderEvent.PROVIDER_READY)
        client = api.get_client()
        assert client.get_boolean_value("feature.enabled", False) is True
        settle_events()
        assert events.kinds() == [ProviderEvent.PROVIDER_READY]


def test_not_ready_until_state_then_recovers(emulator: ConfidenceEmulator) -> None:
    emulator.inject(Route.STATE, Hang())
    provider = make_provider(emulator, init_timeout=0.5)
    with recording_events() as events:
        api.set_provider(provider)
        client = api.get_client()
        # Before initialize() finishes, the SDK short-circuits with PROVIDER_NOT_READY.
        early = client.get_boolean_details("feature.enabled", False)
        assert early.error_code == ErrorCode.PROVIDER_NOT_READY
        assert early.value is False

        error = events.wait_for(ProviderEvent.PROVIDER_ERROR)[0]
        assert error.error_code == ErrorCode.PROVIDER_NOT_READY
        assert client.get_provider_status() is ProviderStatus.ERROR
        # The provider itself answers PROVIDER_NOT_READY while it has no state.
        direct = provider.resolve_boolean_details("feature.enabled", False, USER)
        assert (direct.value, direct.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)

        emulator.clear_faults()
        events.wait_for(ProviderEvent.PROVIDER_READY)
        assert client.get_provider_status() is ProviderStatus.READY
        assert client.get_boolean_value("feature.enabled", False) is True
        settle_events()
        assert events.kinds() == [ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY]


def test_set_provider_and_wait_raises_not_ready(emulator: ConfidenceEmulator) -> None:
    emulator.inject(Route.STATE, Hang())
    provider = make_provider(emulator, init_timeout=0.3)
    with pytest.raises(ProviderNotReadyError):
        api.set_provider_and_wait(provider)


def test_wrong_encryption_key_is_fatal(emulator: ConfidenceEmulator, caplog: Any) -> None:
    wrong_key = "ab" * 32
    provider = make_provider(emulator, encryption_key=wrong_key, init_timeout=5.0)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderFatalError) as info:
        api.set_provider_and_wait(provider)
    assert "decrypt" in str(info.value)
    assert api.get_client().get_provider_status() is ProviderStatus.FATAL
    for text in (str(info.value), caplog.text):
        assert SECRET not in text
        assert wrong_key not in text
        assert emulator.encryption_key_hex not in text


def test_refused_credentials_are_fatal(emulator: ConfidenceEmulator) -> None:
    for status in (401, 403):
        emulator.inject(Route.STATE, Status(status))  # every fetch, until cleared
        provider = make_provider(emulator, init_timeout=5.0)
        with pytest.raises(ProviderFatalError, match=str(status)):
            api.set_provider_and_wait(provider)
        assert provider.get_status() is ProviderStatus.FATAL
        api.shutdown()
        emulator.clear_faults()


def test_404_before_any_state_is_retried_until_the_state_appears(
    emulator: ConfidenceEmulator,
) -> None:
    """A credential whose first state is published after the app started: NOT_READY (the
    SDK says ERROR), polling with backoff, then READY, not a terminal FATAL."""
    emulator.clear_state()  # the CDN answers 404
    provider = make_provider(emulator, init_timeout=1.0)
    with recording_events() as events:
        with pytest.raises(ProviderNotReadyError, match="404"):
            api.set_provider_and_wait(provider)
        client = api.get_client()
        assert client.get_provider_status() is ProviderStatus.ERROR
        assert provider.get_status() is ProviderStatus.NOT_READY
        details = client.get_string_details("feature.color", "none", USER)
        assert (details.value, details.error_code) == ("none", ErrorCode.PROVIDER_NOT_READY)
        polled = len(emulator.requests_for(Route.STATE))
        assert polled >= 1
        emulator.set_state(sample_state().build())
        events.wait_for(ProviderEvent.PROVIDER_READY, timeout=15)
        assert client.get_provider_status() is ProviderStatus.READY
        assert provider.get_status() is ProviderStatus.READY
        assert client.get_string_value("feature.color", "none", USER) == "blue"
        # Only the SDK's ERROR for initialize() raising: never FATAL.
        errors = events.of(ProviderEvent.PROVIDER_ERROR)
        assert [e.error_code for e in errors] == [ErrorCode.PROVIDER_NOT_READY]


def test_configuration_changed_stale_and_recovery(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        client = api.get_client()

        emulator.set_state(sample_state(color="red").build())
        changed = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0]
        assert changed.flags_changed == ["feature"]
        assert client.get_string_value("feature.color", "none") == "red"

        # The same content again (re-encrypted, new ETag): no event.
        emulator.set_state(sample_state(color="red").build())
        settle_events(0.8)
        assert len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1

        emulator.inject(Route.STATE, Status(503))
        events.wait_for(ProviderEvent.PROVIDER_STALE)
        assert client.get_provider_status() is ProviderStatus.STALE
        # Still serving the last good state.
        assert client.get_string_value("feature.color", "none") == "red"

        emulator.clear_faults()
        events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
        assert client.get_provider_status() is ProviderStatus.READY
        settle_events()
        assert events.kinds() == [
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_READY,
        ]


def test_state_updates_while_threads_resolve(emulator: ConfidenceEmulator) -> None:
    # 6 threads on 3 instances. (Workers pause briefly between evaluations: in a tight
    # loop, threading.Semaphore's unfairness can starve one thread indefinitely.)
    provider = make_provider(emulator, pool_size=3)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    stop = threading.Event()
    seen: list[set[str]] = [set() for _ in range(6)]
    errors: list[Any] = []

    def worker(i: int) -> None:
        ctx = EvaluationContext(targeting_key=f"user-{i}")
        while not stop.is_set():
            details = client.get_object_details("feature", {}, ctx)
            if details.error_code is not None:
                errors.append((details.error_code, details.error_message))
                continue
            seen[i].add(str(details.value["color"]))
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        for color in ("red", "green", "yellow"):
            emulator.set_state(sample_state(color=color).build())
            wait_until(lambda c=color: all(c in s for s in seen))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    for colors in seen:
        assert {"red", "green", "yellow"} <= colors


def test_skip_apply_suppresses_exposure(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    skip = EvaluationContext(targeting_key="u1", attributes={"_confidence_skip_apply": True})
    assert client.get_string_value("split.group", "none", skip) in ("a", "b")
    assert skip.attributes == {"_confidence_skip_apply": True}  # not mutated
    assert client.get_boolean_value("feature.enabled", False, EvaluationContext("u2")) is True
    api.shutdown()
    assert emulator.exposure_count("split") == 0
    assert emulator.exposure_count("feature") == 1
    assert emulator.resolve_counts()["flags/split"]  # resolved, just not exposed


def test_periodic_log_flush(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator, log_poll_interval=0.2)
    api.set_provider_and_wait(provider)
    api.get_client().get_boolean_value("feature.enabled", False)
    wait_until(lambda: emulator.exposure_count("feature") == 1)


def test_failed_log_batches_are_retried(emulator: ConfidenceEmulator) -> None:
    emulator.inject(Route.FLAG_LOGS, Status(400), times=1)  # permanent for that attempt
    provider = make_provider(emulator, log_poll_interval=0.2)
    api.set_provider_and_wait(provider)
    api.get_client().get_boolean_value("feature.enabled", False)
    wait_until(lambda: emulator.exposure_count("feature") == 1)
    assert len(emulator.requests_for(Route.FLAG_LOGS)) >= 2


def test_shutdown_is_idempotent_and_bounded(emulator: ConfidenceEmulator) -> None:
    emulator.inject(Route.FLAG_LOGS, Hang())
    provider = make_provider(emulator, shutdown_timeout=0.5)
    provider.initialize(EvaluationContext())
    provider.resolve_boolean_details("feature.enabled", False, USER)
    provider.shutdown()
    provider.shutdown()
    after = provider.resolve_boolean_details("feature.enabled", False, USER)
    assert (after.value, after.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
    # And it can be initialized again.
    emulator.clear_faults()
    provider.initialize(EvaluationContext())
    assert provider.resolve_boolean_details("feature.enabled", False, USER).value is True
    provider.shutdown()


def test_secret_never_in_repr_or_logs(emulator: ConfidenceEmulator, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_provider(emulator)
    assert SECRET not in repr(provider)
    assert emulator.encryption_key_hex not in repr(provider)
    api.set_provider_and_wait(provider)
    emulator.inject(Route.STATE, Status(500), times=3)
    emulator.inject(Route.FLAG_LOGS, Status(500), times=2)
    api.get_client().get_boolean_value("feature.enabled", False)
    wait_until(lambda: len(emulator.requests_for(Route.STATE)) >= 5)
    api.shutdown()
    assert caplog.records  # something was logged
    assert SECRET not in caplog.text
    assert emulator.encryption_key_hex not in caplog.text


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        ConfidenceProvider("")
    with pytest.raises(ValueError) as info:
        ConfidenceProvider("s", encryption_key="not-a-key-secret-value")
    assert "not-a-key-secret-value" not in str(info.value)
    with pytest.raises(ValueError):
        ConfidenceProvider("s", state_poll_interval=0)
    with pytest.raises(ValueError):
        ConfidenceProvider("s", offline=True)
    assert ConfidenceProvider("s").get_metadata().name == "confidence-sdk-python-local"


def test_never_started_provider_is_not_ready() -> None:
    provider = ConfidenceProvider("s")
    details = provider.resolve_string_details("feature.color", "d", USER)
    assert (details.value, details.reason, details.error_code) == (
        "d",
        Reason.ERROR,
        ErrorCode.PROVIDER_NOT_READY,
    )
    provider.shutdown()  # no-op
