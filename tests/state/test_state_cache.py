"""`state_cache_dir=`: the last applied state on disk, and a cold start from it (as STALE)
while Confidence is unreachable."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import anyio
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from provider_support import (
    SECRET,
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    wait_until,
)
from sdk_compat import STALE_REASON

from confidence._state.cache import StateCache
from confidence._state.crypto import decrypt_state, parse_encryption_key
from confidence.testing.emulator import ConfidenceEmulator, DropConnection, Hang, Route, Status

USER = EvaluationContext("user-1")


pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]


def cache_file(emulator: ConfidenceEmulator, directory: Path) -> Path:
    return StateCache(directory, SECRET, emulator.encryption_key).path


async def fill_cache(emulator: ConfidenceEmulator, directory: Path) -> None:
    async with make_provider(emulator, state_cache_dir=directory):
        pass


@pytest.mark.anyio
async def test_applied_states_are_written_encrypted_and_atomically(
    confidence_emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state(color="blue").build())
    key = parse_encryption_key(emulator.encryption_key_hex)
    async with make_provider(emulator, state_cache_dir=tmp_path / "cache") as provider:
        path = cache_file(emulator, tmp_path / "cache")
        with anyio.fail_after(5):  # written right after the state is applied
            while not path.exists():
                await anyio.sleep(0.02)
        first = path.read_bytes()
        # As received: the encrypted CDN body, never the plaintext.
        assert sample_state(color="blue").build() not in first
        assert decrypt_state(first, key) == sample_state(color="blue").build_client_state()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        emulator.set_state(sample_state(color="green").build())
        with anyio.fail_after(5):
            while (
                await provider.resolve_string_details_async("feature.color", "", USER)
            ).value != ("green"):
                await anyio.sleep(0.05)
        with anyio.fail_after(5):
            while path.read_bytes() == first:
                await anyio.sleep(0.02)
        assert decrypt_state(path.read_bytes(), key) == (
            sample_state(color="green").build_client_state()
        )
    assert os.listdir(tmp_path / "cache") == [path.name]  # no temp files left behind


@pytest.mark.anyio
async def test_async_cold_start_from_cache_then_recovery(
    confidence_emulator: ConfidenceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    await fill_cache(emulator, tmp_path)

    emulator.inject(Route.STATE, Status(503))  # Confidence "down" until cleared
    provider = make_provider(emulator, state_cache_dir=tmp_path, init_timeout=5.0)
    with caplog.at_level(logging.WARNING, logger="confidence"):
        started = time.monotonic()
        async with provider:
            assert time.monotonic() - started < 3.0
            details = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
            assert (details.value, details.reason) == (True, STALE_REASON)
            assert details.variant == "flags/feature/variants/blue"
            stats = provider.stats()
            assert stats.status == "STALE" and stats.serving_cached_state
            assert stats.last_sync_outcome == "failure"
            assert stats.state_age_seconds is not None and stats.state_age_seconds >= 0
            # Errors are still errors, not STALE.
            missing = await provider.resolve_boolean_details_async("nope", False, USER)
            assert missing.reason == Reason.ERROR

            emulator.clear_faults()
            with anyio.fail_after(5):
                while provider.stats().last_sync_outcome != "success":
                    await anyio.sleep(0.05)
            assert not provider.stats().serving_cached_state
            details = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
            assert details.reason == Reason.TARGETING_MATCH
            assert provider.stats().status == "READY"
            assert provider.stats().last_sync_outcome == "success"
    assert "serving the cached resolver state" in caplog.text
    assert SECRET not in caplog.text


def test_sync_cold_start_emits_stale_then_ready(
    confidence_emulator_sync: ConfidenceEmulator, tmp_path: Path
) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state().build())
    provider = make_provider(emulator, state_cache_dir=tmp_path)
    api.set_provider_and_wait(provider)
    api.shutdown()
    assert cache_file(emulator, tmp_path).is_file()

    emulator.inject(Route.STATE, DropConnection())
    with recording_events() as events:
        provider = make_provider(emulator, state_cache_dir=tmp_path)
        api.set_provider_and_wait(provider)  # ready from the cache
        client = api.get_client()
        stale = events.wait_for(ProviderEvent.PROVIDER_STALE)
        # STALE right after the SDK's READY, not only when the next failed sync
        # re-announces it (whose message names the failure).
        assert stale[0].message == "serving a cached resolver state", stale[0].message
        assert client.get_provider_status() is ProviderStatus.STALE
        details = client.get_boolean_details("feature.enabled", False)
        assert (details.value, details.reason) == (True, STALE_REASON)

        emulator.clear_faults()
        events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
        wait_until(lambda: client.get_provider_status() is ProviderStatus.READY)
        assert client.get_boolean_details("feature.enabled", False).reason == (
            Reason.TARGETING_MATCH
        )
        kinds = events.kinds()
        # The SDK's READY and our STALE are dispatched back to back; the SDK runs handlers
        # on a thread pool, so their relative order is its to keep, not ours.
        assert sorted(kinds[:2], key=str) == sorted(
            [ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_STALE], key=str
        )
        assert kinds[2] is ProviderEvent.PROVIDER_READY
        # Same content as the cache: no CONFIGURATION_CHANGED.
        assert ProviderEvent.PROVIDER_CONFIGURATION_CHANGED not in kinds
        api.shutdown()  # while the emulator still runs


@pytest.mark.anyio
async def test_hanging_cdn_uses_the_cache_after_a_grace_period(
    confidence_emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    await fill_cache(emulator, tmp_path)
    emulator.inject(Route.STATE, Hang())
    async with make_provider(emulator, state_cache_dir=tmp_path, init_timeout=3.0) as provider:
        details = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        assert details.reason == STALE_REASON
    emulator.clear_faults()


@pytest.mark.anyio
async def test_bad_credentials_do_not_fall_back_to_the_cache(
    confidence_emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    emulator = confidence_emulator
    emulator.set_state(sample_state().build())
    await fill_cache(emulator, tmp_path)
    emulator.inject(Route.STATE, Status(403))
    with pytest.raises(ProviderFatalError, match="403"):
        await make_provider(emulator, state_cache_dir=tmp_path).start()


@pytest.mark.anyio
async def test_unusable_or_missing_cache_is_ignored(
    confidence_emulator: ConfidenceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = confidence_emulator
    emulator.inject(Route.STATE, Status(503))
    with pytest.raises(ProviderNotReadyError):
        await make_provider(emulator, state_cache_dir=tmp_path, init_timeout=1.0).start()
    cache_file(emulator, tmp_path).write_bytes(b"\x00 not a state")
    with (
        caplog.at_level(logging.WARNING, logger="confidence"),
        pytest.raises(ProviderNotReadyError),
    ):
        await make_provider(emulator, state_cache_dir=tmp_path, init_timeout=1.0).start()
    assert "Ignoring the state cache" in caplog.text


def test_unwritable_cache_dir_does_not_break_the_provider(
    confidence_emulator_sync: ConfidenceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state().build())
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="confidence"):
        api.set_provider_and_wait(make_provider(emulator, state_cache_dir=blocker / "sub"))
        client = api.get_client()
        assert client.get_boolean_value("feature.enabled", False) is True
        wait_until(lambda: "Could not write the state cache" in caplog.text)
        api.shutdown()  # while the emulator still runs
