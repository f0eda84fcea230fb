"""Reliability: faults inside the WebAssembly resolver (issue #6).

Guest memory is capped per instance (`resolver_memory_limit`, a wasmtime store limit). An
evaluation that blows the cap traps its instance: the instance is dropped and replaced, that
one evaluation gets the caller's default with GENERAL, and the next evaluation succeeds —
on the sync path, on the async path, and while other threads keep evaluating on the other
instances without noticing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from provider_support import SECRET, requires_wasm, sample_state

from confidence import ConfidenceProvider

pytestmark = [requires_wasm]

MiB = 1024 * 1024
USER = EvaluationContext("user-1")
# Far over a 24 MiB guest: the resolver copies the context into its memory and parses it.
HUGE = EvaluationContext("user-1", {"blob": "x" * (40 * MiB)})


def _offline(tmp_path: Path, **options: object) -> ConfidenceProvider:
    path = tmp_path / "state.pb"
    path.write_bytes(sample_state().build_client_state())
    return ConfidenceProvider(SECRET, state_file=path, offline=True, **options)  # type: ignore[arg-type]


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ConfidenceProvider]:
    provider = _offline(tmp_path, resolver_memory_limit=24 * MiB, pool_size=2)
    provider.initialize(EvaluationContext())
    yield provider
    provider.shutdown()


def _traps(provider: ConfidenceProvider) -> int:
    runtime = provider._runtime
    assert runtime is not None
    return int(runtime._pool.stats().traps)


def test_out_of_memory_traps_one_evaluation_and_the_next_succeeds(
    capped: ConfidenceProvider,
) -> None:
    before = _traps(capped)
    failed = capped.resolve_string_details("feature.color", "default", HUGE)
    assert (failed.value, failed.reason, failed.error_code) == (
        "default",
        Reason.ERROR,
        ErrorCode.GENERAL,
    )
    assert SECRET not in (failed.error_message or "")
    assert _traps(capped) > before  # the trapped instance (and its retry) were dropped
    ok = capped.resolve_string_details("feature.color", "default", USER)
    assert (ok.value, ok.error_code) == ("blue", None)
    stats = capped._runtime._pool.stats()  # type: ignore[union-attr]
    assert stats.instances <= stats.size  # replaced, not leaked


@pytest.mark.anyio
async def test_out_of_memory_on_the_async_path(tmp_path: Path) -> None:
    async with _offline(tmp_path, resolver_memory_limit=24 * MiB, pool_size=2) as provider:
        before = _traps(provider)
        failed = await provider.resolve_string_details_async("feature.color", "default", HUGE)
        assert (failed.value, failed.error_code) == ("default", ErrorCode.GENERAL)
        assert _traps(provider) > before
        for _ in range(5):
            ok = await provider.resolve_string_details_async("feature.color", "default", USER)
            assert (ok.value, ok.error_code) == ("blue", None)


def test_the_memory_cap_is_the_provider_option(tmp_path: Path) -> None:
    """The same 20 MiB context is fine under the default cap (512 MiB) and traps under a
    24 MiB one: the option reaches the wasmtime store."""
    context = EvaluationContext("user-1", {"blob": "x" * (20 * MiB)})
    default = _offline(tmp_path)
    default.initialize(EvaluationContext())
    try:
        assert default.resolve_string_details("feature.color", "d", context).value == "blue"
        assert _traps(default) == 0
    finally:
        default.shutdown()
    capped = _offline(tmp_path, resolver_memory_limit=24 * MiB)
    capped.initialize(EvaluationContext())
    try:
        details = capped.resolve_string_details("feature.color", "d", context)
        assert (details.value, details.error_code) == ("d", ErrorCode.GENERAL)
        assert _traps(capped) >= 1
    finally:
        capped.shutdown()


def test_a_trap_does_not_disturb_other_threads(tmp_path: Path) -> None:
    capped = _offline(tmp_path, resolver_memory_limit=24 * MiB, pool_size=3)
    capped.initialize(EvaluationContext())
    try:
        _trap_while_others_evaluate(capped)
    finally:
        capped.shutdown()


def _trap_while_others_evaluate(capped: ConfidenceProvider) -> None:
    stop = threading.Event()
    errors: list[object] = []
    counts = [0, 0]

    def worker(i: int) -> None:
        ctx = EvaluationContext(f"worker-{i}")
        while not stop.is_set():
            details = capped.resolve_string_details("feature.color", "none", ctx)
            if (details.value, details.error_code) != ("blue", None):
                errors.append((details.value, details.error_code, details.error_message))
            counts[i] += 1
            time.sleep(0.0002)  # a tight loop would starve the trapping thread of instances

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            failed = capped.resolve_string_details("feature.color", "default", HUGE)
            assert failed.error_code == ErrorCode.GENERAL
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert all(count > 0 for count in counts)
    assert _traps(capped) >= 4
    assert capped.resolve_string_details("feature.color", "none", USER).value == "blue"
