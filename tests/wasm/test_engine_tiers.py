"""The compiled-module cache and the two compile tiers (`_engine.Tier`).

A start with a cold cache compiles QUICK code (fast to compile, slower to run) and moves to
OPTIMIZED code compiled in the background; a warm start loads OPTIMIZED code from disk. Real
resolver.wasm, real wasmtime compiles, real threads.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ProviderFatalError
from openfeature.flag_evaluation import Reason
from provider_support import SECRET, make_provider, requires_wasm, variant, wait_until

from confidence._cli import EXIT_OK
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._proto.confidence.wasm.v1 import abi_pb2
from confidence._wasm import engine as _engine
from confidence._wasm.abi import MaterializationMode
from confidence._wasm.engine import CompiledResolver, Tier, cache_path
from confidence._wasm.pool import ResolverPool
from confidence.testing.emulator import ConfidenceEmulator, Route
from confidence.testing.state_builder import StateBuilder, rollout

pytestmark = requires_wasm

ACCOUNT = "tier-test"


@pytest.fixture
def cold_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if this were a fresh process: nothing compiled in memory yet."""
    monkeypatch.setattr(_engine, "_MODULES", {})


def _split_state() -> bytes:
    a, b = "flags/split/variants/a", "flags/split/variants/b"
    return (
        StateBuilder(account=ACCOUNT)
        .client(SECRET)
        .segment("segments/everyone")
        .flag(
            "flags/split",
            variants={a: {"g": "a"}, b: {"g": "b"}},
            rules=[rollout("segments/everyone", {a: 50, b: 50})],
        )
        .build()
    )


def _assignments(pool: ResolverPool, units: range, *, apply: bool = False) -> list[str]:
    out = []
    for unit in units:
        with pool.borrow() as instance:
            resolved = instance.resolve_flag(
                "flags/split",
                SECRET,
                apply,
                MaterializationMode.UNSUPPORTED,
                json.dumps({"targeting_key": f"user-{unit}"}).encode(),
            )
        out.append(resolved.flags[0].variant)  # type: ignore[union-attr]
    return out


def _exposures(batches: list[bytes]) -> int:
    total = 0
    for batch in batches:
        request = api_pb2.WriteFlagLogsRequest.FromString(batch)
        total += sum(len(assigned.flags) for assigned in request.flag_assigned)
    return total


def test_materialization_mode_numbers_match_the_abi() -> None:
    assert MaterializationMode.UNSUPPORTED == abi_pb2.MATERIALIZATION_MODE_UNSUPPORTED
    assert MaterializationMode.DISCOVERY == abi_pb2.MATERIALIZATION_MODE_DISCOVERY
    assert MaterializationMode.COMPLETE == abi_pb2.MATERIALIZATION_MODE_COMPLETE


def test_a_cold_cache_gives_quick_code_and_the_optimized_compile_fills_the_cache(
    tmp_path: Path, cold_process: None
) -> None:
    quick = CompiledResolver.load(cache_dir=tmp_path, quick_if_cold=True)
    assert quick.tier is Tier.QUICK
    assert cache_path(tmp_path, quick.digest, Tier.QUICK).is_file()
    assert not cache_path(tmp_path, quick.digest).exists()

    optimized = CompiledResolver.load(cache_dir=tmp_path)
    assert optimized.tier is Tier.OPTIMIZED
    assert cache_path(tmp_path, optimized.digest).is_file()
    # The stand-in is dropped from the process and from the cache.
    assert (quick.digest, Tier.QUICK) not in _engine._MODULES
    assert not cache_path(tmp_path, quick.digest, Tier.QUICK).exists()
    # From now on this process, and any other using the cache, starts optimized.
    assert CompiledResolver.load(cache_dir=tmp_path, quick_if_cold=True).tier is Tier.OPTIMIZED


def test_a_warm_cache_loads_without_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "_MODULES", {})
    CompiledResolver.load(cache_dir=tmp_path)  # a previous process filled the cache
    monkeypatch.setattr(_engine, "_MODULES", {})  # a new process
    real = _engine.wasmtime.Module
    compiles: list[object] = []

    class CountingModule:
        deserialize = staticmethod(real.deserialize)
        deserialize_file = staticmethod(real.deserialize_file)

        def __new__(cls, *args: Any) -> Any:
            compiles.append(args)
            return real(*args)

    monkeypatch.setattr(_engine.wasmtime, "Module", CountingModule)
    compiled = CompiledResolver.load(cache_dir=tmp_path, quick_if_cold=True)
    assert compiled.tier is Tier.OPTIMIZED
    assert compiles == []
    pool = ResolverPool(size=1, compiled=compiled)
    pool.set_state(_split_state(), ACCOUNT)
    assert set(_assignments(pool, range(50))) == {
        "flags/split/variants/a",
        "flags/split/variants/b",
    }


@pytest.mark.parametrize("damage", [b"", b"not a compiled module", None])
def test_a_damaged_cache_file_is_recompiled_and_rewritten(
    tmp_path: Path, cold_process: None, damage: bytes | None
) -> None:
    digest = CompiledResolver.load(cache_dir=tmp_path).digest
    path = cache_path(tmp_path, digest)
    good = path.read_bytes()
    _engine._MODULES.clear()
    path.write_bytes(good[: len(good) // 2] if damage is None else damage)  # None: truncated

    compiled = CompiledResolver.load(cache_dir=tmp_path)
    pool = ResolverPool(size=1, compiled=compiled)
    pool.set_state(_split_state(), ACCOUNT)
    assert len(_assignments(pool, range(5))) == 5
    assert len(path.read_bytes()) == len(good)  # rewritten whole


def test_quick_and_optimized_code_give_the_same_answers(tmp_path: Path, cold_process: None) -> None:
    quick = ResolverPool(size=1, cache_dir=tmp_path, quick_start=True)
    optimized = ResolverPool(size=1, compiled=CompiledResolver.load(cache_dir=tmp_path))
    assert (quick.tier, optimized.tier) == (Tier.QUICK, Tier.OPTIMIZED)
    for pool in (quick, optimized):
        pool.set_state(_split_state(), ACCOUNT)
    units = range(400)
    assert _assignments(quick, units) == _assignments(optimized, units)


def test_tier_up_under_load_loses_no_exposure(tmp_path: Path, cold_process: None) -> None:
    pool = ResolverPool(size=2, cache_dir=tmp_path, quick_start=True, enable_apply_dedup=False)
    pool.set_state(_split_state(), ACCOUNT)
    assert pool.tier is Tier.QUICK
    stop = threading.Event()
    resolved: list[int] = []
    errors: list[BaseException] = []

    def resolve_until_stopped() -> None:
        try:
            n = 0
            while not stop.is_set() or n < 50:
                _assignments(pool, range(n, n + 1), apply=True)
                n += 1
            resolved.append(n)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=resolve_until_stopped) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        assert pool.tier_up() is True
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert errors == []
    assert pool.tier is Tier.OPTIMIZED
    assert pool.tier_up() is False  # nothing left to do
    # Every applied resolve's exposure is still there: drained from the retired QUICK
    # instances or pending in the new OPTIMIZED ones.
    assert _exposures(pool.flush_logs(wait=True)) == sum(resolved)


def test_tier_up_after_close_does_nothing(tmp_path: Path, cold_process: None) -> None:
    pool = ResolverPool(size=1, cache_dir=tmp_path, quick_start=True)
    pool.set_state(_split_state(), ACCOUNT)
    pool.close()
    assert pool.tier_up() is False
    assert pool.tier is Tier.QUICK


def test_precompile_command_fills_the_cache_providers_use(
    tmp_path: Path, cold_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from confidence.__main__ import main

    assert main(["precompile", "--cache-dir", str(tmp_path)]) == EXIT_OK
    printed = Path(capsys.readouterr().out.strip())
    assert printed.is_file() and printed.parent == tmp_path
    _engine._MODULES.clear()
    assert CompiledResolver.load(cache_dir=tmp_path, quick_if_cold=True).tier is Tier.OPTIMIZED


# -- through the provider ----------------------------------------------------------------------


@pytest.fixture
def cold_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cold_process: None) -> Path:
    """An empty compiled-module cache where providers look for it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return _engine.default_cache_dir()


def _provider_tier(provider: Any) -> Tier:
    return provider._runtime._pool.tier  # type: ignore[no-any-return]


def test_a_cold_provider_serves_at_once_and_moves_to_optimized_code(
    emulator: ConfidenceEmulator, cold_machine: Path
) -> None:
    provider = make_provider(emulator)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    user = EvaluationContext("user-1")
    details = client.get_boolean_details("feature.enabled", False, user)
    assert (details.value, details.reason) == (True, Reason.TARGETING_MATCH)

    wait_until(lambda: _provider_tier(provider) is Tier.OPTIMIZED, timeout=60)
    assert any(p.name.endswith(".cwasm") and "quick" not in p.name for p in cold_machine.iterdir())
    after = client.get_boolean_details("feature.enabled", False, user)
    assert (after.value, after.reason, after.variant) == (
        True,
        Reason.TARGETING_MATCH,
        variant("feature", "blue"),
    )
    api.shutdown()
    # Every evaluation's exposure arrived, across the move to new instances.
    assert emulator.exposure_count("feature") == 1  # de-duplicated: one unit, one variant


def test_shutdown_while_the_optimized_compile_runs(
    emulator: ConfidenceEmulator,
    cold_machine: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tier-up starts on the loop after READY; shutting down before it started would
    # leave nothing to abandon (a loaded machine got there first), so wait for it to start.
    compiling = threading.Event()
    real_load = CompiledResolver.load.__func__  # type: ignore[attr-defined]

    def load(cls: type[CompiledResolver], *args: Any, **kwargs: Any) -> CompiledResolver:
        if not kwargs.get("quick_if_cold"):
            compiling.set()  # the OPTIMIZED compile (tier_up), not the cold start
        return real_load(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(CompiledResolver, "load", classmethod(load))
    provider = make_provider(emulator)
    api.set_provider_and_wait(provider)
    assert compiling.wait(30), "the optimized compile never started"
    assert _provider_tier(provider) is Tier.QUICK  # the optimized compile has just begun
    assert api.get_client().get_boolean_value("feature.enabled", False, EvaluationContext("u"))
    pool = provider._runtime and provider._runtime._pool  # (gone from the provider after shutdown)
    api.shutdown()  # does not wait for the compile; the abandoned compile touches nothing
    assert provider.is_ready is False
    assert not [r for r in caplog.records if r.levelno >= 30 and "confidence" in r.name]
    assert emulator.exposure_count("feature") == 1
    # The abandoned compile still finishes (it cannot be interrupted) and fills the cache,
    # but leaves the closed pool alone. Waiting for it also keeps it out of later tests.
    digest = hashlib.sha256(_engine.load_resolver_wasm()).hexdigest()
    wait_until(lambda: (digest, Tier.OPTIMIZED) in _engine._MODULES, timeout=120)
    wait_until(lambda: cache_path(cold_machine, digest).is_file(), timeout=30)
    assert pool is None or pool.tier is Tier.QUICK


def test_the_first_state_downloads_while_the_resolver_compiles(
    emulator: ConfidenceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_compile = ResolverPool.compile

    def compile_once_the_state_was_requested(self: ResolverPool) -> None:
        # Were the download to wait for the compile, this would never see the request.
        wait_until(lambda: bool(emulator.requests_for(Route.STATE)), timeout=15)
        real_compile(self)

    monkeypatch.setattr(ResolverPool, "compile", compile_once_the_state_was_requested)
    api.set_provider_and_wait(make_provider(emulator))
    assert api.get_client().get_boolean_value("feature.enabled", False, EvaluationContext("u"))


def test_a_resolver_that_cannot_be_compiled_is_a_fatal_error(
    emulator: ConfidenceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no usable resolver.wasm")

    monkeypatch.setattr(_engine.CompiledResolver, "load", broken)
    provider = make_provider(emulator)
    with pytest.raises(ProviderFatalError, match="could not load the resolver"):
        provider.initialize(EvaluationContext())
    details = provider.resolve_boolean_details("feature.enabled", False, EvaluationContext("u"))
    assert details.value is False and details.error_code is not None
    provider.shutdown()


def test_an_unchecked_wasmtime_gets_quick_code_without_the_single_pass_allocator(
    tmp_path: Path, cold_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unknown Cranelift setting makes wasmtime abort the process, so it is only set on
    # the versions it was checked with.
    monkeypatch.setattr(_engine, "_ENGINES", {})
    monkeypatch.setattr(_engine, "_wasmtime_version", lambda: "99.0.0")
    assert not _engine._single_pass_checked()
    pool = ResolverPool(size=1, cache_dir=tmp_path, quick_start=True)
    assert pool.tier is Tier.QUICK
    pool.set_state(_split_state(), ACCOUNT)
    assert len(_assignments(pool, range(20))) == 20
    monkeypatch.setattr(_engine, "_wasmtime_version", lambda: "50.0.1")
    assert _engine._single_pass_checked()
