"""The provider in an asyncio app: `async with`, start/aclose, OpenFeature's async client,
initialize() on the loop thread, materialization stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from provider_support import make_provider, recording_events, requires_wasm, sample_state, variant
from sdk_compat import requires_async_set_provider

from confidence.materialization import InMemoryMaterializationStore
from confidence.testing.emulator import ConfidenceEmulator, Hang, Route

USER = EvaluationContext("user-1")


pytestmark = [requires_wasm, pytest.mark.anyio, pytest.mark.usefixtures("openfeature_api")]


@pytest.fixture
async def emulator(
    confidence_emulator: ConfidenceEmulator, openfeature_api: None
) -> AsyncIterator[ConfidenceEmulator]:
    confidence_emulator.set_state(sample_state().build())
    yield confidence_emulator
    # Off the loop (a sync-hosted provider's shutdown blocks until its final flush, which
    # needs this loop's emulator), and while the emulator still runs.
    await anyio.to_thread.run_sync(api.shutdown)


async def wait_for_async(recorder: Any, event: ProviderEvent, count: int = 1) -> None:
    await anyio.to_thread.run_sync(lambda: recorder.wait_for(event, count))


async def test_async_with_and_set_provider_and_wait(emulator: ConfidenceEmulator) -> None:
    with recording_events() as events:
        async with make_provider(emulator) as provider:
            assert provider.is_ready
            # On the loop thread: initialize() only attaches, so this returns at once.
            api.set_provider_and_wait(provider)
            client = api.get_client()
            assert client.get_provider_status() is ProviderStatus.READY
            details = await client.get_boolean_details_async("feature.enabled", False)
            assert (details.value, details.reason, details.variant) == (
                True,
                Reason.TARGETING_MATCH,
                variant("feature", "blue"),
            )
            assert await client.get_float_value_async("feature.size", 0.0) == 42.0
            assert await client.get_integer_value_async("feature.size", 0) == 42
            assert await client.get_string_value_async("feature.color", "") == "blue"
            assert await client.get_object_value_async("feature.nested.deep", {}) == {"x": 7}
            await anyio.sleep(0.3)
            assert events.kinds() == [ProviderEvent.PROVIDER_READY]
        # __aexit__ flushed the logs.
        assert emulator.exposure_count("feature") >= 1
        after = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        assert after.error_code == ErrorCode.PROVIDER_NOT_READY


async def test_start_and_aclose(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    assert await provider.start() is provider
    with pytest.raises(RuntimeError, match="already started"):
        await provider.start()
    details = await provider.resolve_string_details_async("feature.color", "", USER)
    assert details.value == "blue"
    await provider.aclose()
    await provider.aclose()  # idempotent
    provider.shutdown()  # and the sync twin is a no-op now


async def test_runtime_runs_in_the_callers_loop(emulator: ConfidenceEmulator) -> None:
    before = {t.name for t in threading.enumerate()}
    async with make_provider(emulator) as provider:
        await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        portal_threads = {
            t.name for t in threading.enumerate() if "portal" in t.name and t.name not in before
        }
        assert portal_threads == set()  # no background loop thread in async mode


async def test_start_fails_fast_on_wrong_key(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator, encryption_key="cd" * 32)
    started = time.monotonic()
    with pytest.raises(ProviderFatalError, match="decrypt"):
        await provider.start()
    assert time.monotonic() - started < 5
    assert not provider.is_ready
    # Nothing is left running, and a corrected provider starts fine.
    async with make_provider(emulator) as good:
        assert good.is_ready


async def test_start_times_out_without_state(emulator: ConfidenceEmulator) -> None:
    emulator.inject(Route.STATE, Hang())
    provider = make_provider(emulator, init_timeout=0.3)
    with pytest.raises(ProviderNotReadyError):
        await provider.start()
    assert not provider.is_ready


async def test_initialize_on_the_loop_does_not_block(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    with recording_events() as events:
        started = time.monotonic()
        with pytest.raises(ProviderNotReadyError, match="async with"):
            api.set_provider_and_wait(provider)  # calls initialize() on this loop thread
        assert time.monotonic() - started < 2
        # It loads in the background and reports READY when done.
        await wait_for_async(events, ProviderEvent.PROVIDER_READY)
        client = api.get_client()
        assert client.get_provider_status() is ProviderStatus.READY
        assert await client.get_boolean_value_async("feature.enabled", False) is True
        # `async with` on a provider the SDK already started uses that runtime.
        async with provider:
            assert provider.is_ready
    assert not provider.is_ready


async def test_api_shutdown_on_the_loop_inside_async_with(emulator: ConfidenceEmulator) -> None:
    async with make_provider(emulator) as provider:
        api.set_provider_and_wait(provider)
        await api.get_client().get_boolean_value_async("feature.enabled", False)
        started = time.monotonic()
        api.shutdown()  # sync, on the loop thread: must not block
        assert time.monotonic() - started < 1
        assert emulator.exposure_count("feature") == 0
    assert emulator.exposure_count("feature") == 1


async def test_shutdown_from_another_thread_stops_async_runtime(
    emulator: ConfidenceEmulator,
) -> None:
    async with make_provider(emulator) as provider:
        await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        await anyio.to_thread.run_sync(provider.shutdown)
        assert emulator.exposure_count("feature") == 1
        details = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY


async def test_concurrent_async_evaluations_during_state_updates(
    emulator: ConfidenceEmulator,
) -> None:
    errors: list[Any] = []
    colors: set[str] = set()
    async with make_provider(emulator) as provider:

        async def evaluate(i: int) -> None:
            for _ in range(50):
                details = await provider.resolve_object_details_async(
                    "feature", {}, EvaluationContext(f"u{i}")
                )
                if details.error_code is not None:
                    errors.append(details)
                else:
                    colors.add(details.value["color"])
                await anyio.sleep(0.005)

        async def update() -> None:
            for color in ("red", "green"):
                await anyio.sleep(0.1)
                emulator.set_state(sample_state(color=color).build())

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(evaluate, i)
            tg.start_soon(update)
        # Worker threads resolving at the same time as the loop.
        results = await anyio.to_thread.run_sync(
            lambda: [
                provider.resolve_boolean_details("feature.enabled", False, USER) for _ in range(20)
            ]
        )
    assert errors == []
    assert "blue" in colors
    assert all(r.value is True for r in results)


async def test_remote_materialization_store(emulator: ConfidenceEmulator) -> None:
    ctx = EvaluationContext("sticky-user")
    async with make_provider(emulator, use_remote_materialization_store=True) as provider:
        details = await provider.resolve_boolean_details_async("sticky.enabled", False, ctx)
        assert (details.value, details.error_code, details.reason) == (
            True,
            None,
            Reason.TARGETING_MATCH,
        )
        # The sync path from a worker thread reaches the store through the runtime's loop.
        sync_details = await anyio.to_thread.run_sync(
            lambda: provider.resolve_boolean_details("sticky.enabled", False, ctx)
        )
        assert sync_details.value is True
        # On the loop thread a sync evaluation cannot wait for the loop: a clear error.
        on_loop = provider.resolve_boolean_details("sticky.enabled", False, ctx)
        assert on_loop.error_code == ErrorCode.GENERAL
    assert emulator.materialization_reads
    assert emulator.materialized_variants  # the write was delivered (at the latest on close)


async def test_custom_sync_materialization_store(emulator: ConfidenceEmulator) -> None:
    store = InMemoryMaterializationStore()
    ctx = EvaluationContext("unit-1")
    async with make_provider(emulator, materialization_store=store) as provider:
        assert (await provider.resolve_boolean_details_async("sticky.enabled", False, ctx)).value
        assert provider.resolve_boolean_details("sticky.enabled", False, ctx).value is True
    assert store.snapshot()  # writes drained into the store


@requires_async_set_provider
async def test_sdk_replacing_and_re_registering_inside_async_with(
    emulator: ConfidenceEmulator,
) -> None:
    from openfeature.provider.no_op_provider import NoOpProvider

    with recording_events() as events:
        async with make_provider(emulator) as provider:
            api.set_provider(provider)  # the SDK's init thread attaches to our runtime
            await wait_for_async(events, ProviderEvent.PROVIDER_READY)
            # Replaced: the SDK shuts ours down on one of its threads.
            api.set_provider(NoOpProvider())
            with anyio.fail_after(10):
                while provider.is_ready:
                    await anyio.sleep(0.02)
            # Registered again (blocking, from a worker thread): a fresh runtime starts.
            await anyio.to_thread.run_sync(api.set_provider_and_wait, provider)
            assert provider.is_ready
            details = await provider.resolve_boolean_details_async("feature.enabled", False, USER)
            assert details.value is True
        # The `async with` exit closed everything it and the SDK started.
        assert not provider.is_ready
        # ...including the background loop thread that the sync registration started.
        assert [t for t in threading.enumerate() if t.name.startswith("asyncio-portal")] == []


async def test_cancelled_owner_still_flushes_logs(emulator: ConfidenceEmulator) -> None:
    with anyio.CancelScope() as scope:
        async with make_provider(emulator) as provider:
            await provider.resolve_boolean_details_async("feature.enabled", False, USER)
            scope.cancel()
            await anyio.sleep(30)  # cancelled right here
    assert scope.cancelled_caught
    assert emulator.exposure_count("feature") == 1
    assert not provider.is_ready


async def test_async_store_is_awaited_on_the_loop_without_a_thread_hop(
    emulator: ConfidenceEmulator,
) -> None:
    """An AsyncMaterializationStore is awaited natively by async evaluations (issue #4)."""

    class RecordingAsyncStore:
        def __init__(self) -> None:
            self.inner = InMemoryMaterializationStore()
            self.read_tasks: list[object] = []

        async def read(self, ops: Any) -> Any:
            # The evaluating task itself awaits us: no worker thread, no bridged task.
            self.read_tasks.append(asyncio.current_task())
            return self.inner.read(ops)

        async def write(self, ops: Any) -> None:
            self.inner.write(ops)

    store = RecordingAsyncStore()
    ctx = EvaluationContext("native-unit")
    async with make_provider(emulator, materialization_store=store) as provider:
        details = await provider.resolve_boolean_details_async("sticky.enabled", False, ctx)
        assert details.value is True and details.error_code is None
    assert store.read_tasks and set(store.read_tasks) == {asyncio.current_task()}
    assert store.inner.snapshot()  # the sticky write reached the store
