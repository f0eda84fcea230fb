"""Materialization through the provider (issue #4): concurrent sticky resolves from threads and
tasks lose no write; a failing or hanging store costs the caller its default with an error,
within the store's timeout, and never hangs the evaluation."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from provider_support import make_provider, requires_wasm, sample_state

from confidence import ConfidenceProvider
from confidence.materialization import InMemoryMaterializationStore
from confidence.testing.emulator import ConfidenceEmulator, Hang, Route
from confidence.testing.state_builder import StateBuilder, rollout, with_materialization

pytestmark = requires_wasm

SECRET = "materialization-provider-secret"
RULE_MATERIALIZATION = "materializations/sticky-split"


def _split_state_file(tmp_path: Path) -> Path:
    state = (
        StateBuilder(account="mat-provider")
        .client(SECRET)
        .segment("segments/everyone")
        .flag(
            "flags/split",
            variants={"a": {"v": "a"}, "b": {"v": "b"}},
            rules=[
                with_materialization(
                    rollout("segments/everyone", {"a": 50, "b": 50}),
                    write=RULE_MATERIALIZATION,
                    read=RULE_MATERIALIZATION,
                )
            ],
        )
    )
    path = tmp_path / "state.pb"
    path.write_bytes(state.build_client_state())
    return path


def test_concurrent_sticky_resolves_from_threads_and_tasks_lose_no_write(tmp_path: Path) -> None:
    store = InMemoryMaterializationStore()
    provider = ConfidenceProvider(
        SECRET, state_file=_split_state_file(tmp_path), offline=True, materialization_store=store
    )
    provider.initialize(EvaluationContext())
    got: dict[str, str] = {}
    problems: list[Any] = []
    lock = threading.Lock()

    def record(unit: str, details: Any) -> None:
        with lock:
            if details.error_code is not None or details.reason != Reason.TARGETING_MATCH:
                problems.append((unit, details))
            got[unit] = details.variant

    def worker(t: int) -> None:
        for i in range(60):
            unit = f"thread{t}-unit{i}"
            record(unit, provider.resolve_string_details("split.v", "-", EvaluationContext(unit)))

    async def tasks() -> None:
        async def one(i: int) -> None:
            unit = f"task-unit{i}"
            ctx = EvaluationContext(unit)
            record(unit, await provider.resolve_string_details_async("split.v", "-", ctx))

        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(one, i)

    try:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        anyio.run(tasks)
        for t in threads:
            t.join()
    finally:
        provider.shutdown()  # drains the write queue into the store
    assert problems == []
    assert len(got) == 300
    assert set(got.values()) == {"a", "b"}  # both sides of the split are exercised
    snapshot = store.snapshot()
    written = {unit: rules for (unit, materialization), rules in snapshot.items()}
    assert set(written) == set(got)  # one record per unit: no write lost
    for unit, variant in got.items():
        assert set(written[unit].values()) == {variant}  # what the caller got is what stuck


def test_a_failing_store_gives_the_default_with_an_error(tmp_path: Path) -> None:
    class DownStore:
        def read(self, ops: Any) -> Any:
            raise OSError("store is down")

        def write(self, ops: Any) -> None:
            raise OSError("store is down")

    provider = ConfidenceProvider(
        SECRET,
        state_file=_split_state_file(tmp_path),
        offline=True,
        materialization_store=DownStore(),
    )
    provider.initialize(EvaluationContext())
    try:
        details = provider.resolve_string_details("split.v", "fallback", EvaluationContext("u1"))
    finally:
        provider.shutdown()
    assert details.value == "fallback"
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.GENERAL
    assert details.error_message and "materializations" in details.error_message


def test_a_hanging_remote_store_times_out_to_the_default(
    confidence_emulator_sync: ConfidenceEmulator,
) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state().build())
    emulator.inject(Route.MATERIALIZATION_READ, Hang())
    provider = make_provider(emulator, use_remote_materialization_store=True)
    provider.initialize(EvaluationContext())
    try:
        started = time.monotonic()
        details = provider.resolve_boolean_details("sticky.enabled", False, EvaluationContext("u"))
        elapsed = time.monotonic() - started
    finally:
        emulator.clear_faults()
        provider.shutdown()
    assert details.value is False
    assert details.error_code == ErrorCode.GENERAL
    # RemoteMaterializationStore: 0.5 s per attempt x 3 attempts plus backoff (~1.7 s).
    assert elapsed < 5.0, f"the evaluation waited {elapsed:.1f} s on a hanging store"
