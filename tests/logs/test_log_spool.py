"""The durable flag-log spool (`log_spool_dir`): what cannot be delivered before the shutdown
deadline is on disk, and the next start delivers it, exactly counted by the emulator."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from provider_support import SECRET, make_provider, requires_wasm, sample_state

from confidence._logs.exposures import LogBatch
from confidence._logs.spool import LogSpool
from confidence._stats import ProviderStats
from confidence.testing.emulator import ConfidenceEmulator, Route, Status

pytestmark = requires_wasm


@pytest.fixture
def emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
        emu.set_state(sample_state().build())
        yield emu


def units(emulator: ConfidenceEmulator) -> Counter[str]:
    found: Counter[str] = Counter()
    for batch in emulator.all_flag_log_batches():
        for assigned in batch.flag_assigned:
            for applied in assigned.flags:
                found[applied.targeting_key] += 1
    return found


def resolves(emulator: ConfidenceEmulator) -> int:
    return sum(sum(v.values()) for v in emulator.resolve_counts().values())


def run_provider(emulator: ConfidenceEmulator, spool: Path, users: list[str]) -> ProviderStats:
    provider = make_provider(
        emulator, log_spool_dir=spool, shutdown_timeout=1.0, log_poll_interval=60.0
    )
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    client = api.get_client()
    for user in users:
        client.get_string_value("feature.color", "", EvaluationContext(user))
    api.shutdown()
    return provider.stats()


def spool_files(spool: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in spool.glob(pattern) if p.is_file())


def test_round_trip_endpoint_down_at_shutdown_then_up_at_the_next_start(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    emulator.inject(Route.FLAG_LOGS, Status(503))
    first = [f"a{i}" for i in range(3000)]
    stats = run_provider(emulator, spool, first)
    assert units(emulator) == Counter()
    assert (stats.log_produced_exposures, stats.log_spooled_exposures) == (3000, 3000)
    assert stats.log_spooled_resolves == 3000
    assert stats.log_dropped_exposures == stats.log_dropped_resolves == 0
    files = spool_files(spool, "*.spool")
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not spool_files(spool, ".tmp-*")

    emulator.clear_faults()
    second = [f"b{i}" for i in range(200)]
    stats = run_provider(emulator, spool, second)
    seen = units(emulator)
    assert set(seen) == set(first) | set(second) and set(seen.values()) == {1}
    assert resolves(emulator) == 3200
    assert stats.log_unspooled_exposures == stats.log_unspooled_resolves == 3000
    assert stats.log_produced_exposures == stats.log_delivered_exposures == 3200
    assert stats.log_spooled_exposures == stats.log_dropped_exposures == 0
    assert spool_files(spool) == []  # delivered claims are deleted


def test_a_stop_before_delivery_opened_still_delivers_the_spool(
    emulator: ConfidenceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short script: READY, no evaluation, shutdown. Delivery opens after the first state
    (READY never waits for aiohttp's import), so the stop can come before the log loops
    ever ran; what an earlier run spooled must still go out in the final flush."""
    import time

    from confidence import _runtime

    spool = tmp_path / "spool"
    emulator.inject(Route.FLAG_LOGS, Status(503))
    first = [f"s{i}" for i in range(50)]
    assert run_provider(emulator, spool, first).log_spooled_exposures == 50
    emulator.clear_faults()

    real = _runtime._import_aiohttp

    def slow_import() -> None:  # holds delivery back until after the stop
        time.sleep(0.5)
        real()

    monkeypatch.setattr(_runtime, "_import_aiohttp", slow_import)
    stats = run_provider(emulator, spool, [])
    assert set(units(emulator)) == set(first)
    assert stats.log_unspooled_exposures == stats.log_delivered_exposures == 50
    assert spool_files(spool) == []


def test_corrupt_and_truncated_files_are_set_aside_with_one_warning(
    emulator: ConfidenceEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    spool = LogSpool(spool_dir)
    from confidence._proto.confidence.flags.resolver.v1 import api_pb2

    request = api_pb2.WriteFlagLogsRequest()
    request.flag_assigned.add(resolve_id="r").flags.add(flag="flags/feature", targeting_key="ok")
    good = LogBatch(body=request.SerializeToString(), exposures=1, resolves=0)
    saved, refused = spool.save([good, good, good])
    assert len(saved) == 3 and refused == []
    files = spool_files(spool_dir, "*.spool")
    files[0].write_bytes(files[0].read_bytes()[:20])  # truncated
    data = bytearray(files[1].read_bytes())
    data[-1] ^= 0xFF  # corrupt body
    files[1].write_bytes(bytes(data))
    (spool_dir / "garbage.spool").write_bytes(b"not a spool file")

    caplog.set_level(logging.WARNING, logger="confidence.flag_logs")
    stats = run_provider(emulator, spool_dir, ["fresh"])
    warnings = [r for r in caplog.records if "corrupt or truncated" in r.getMessage()]
    assert len(warnings) == 1 and "3 corrupt" in warnings[0].getMessage()
    assert units(emulator) == Counter({"ok": 1, "fresh": 1})  # start-up went on
    assert stats.log_unspooled_exposures == 1
    assert len(spool_files(spool_dir, "*.corrupt")) == 3
    assert spool_files(spool_dir, "*.spool") == []


def test_the_spool_is_bounded_in_bytes_and_what_does_not_fit_is_counted_lost(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    emulator.inject(Route.FLAG_LOGS, Status(503))
    provider = make_provider(
        emulator, log_spool_dir=spool, log_spool_max_bytes=1000, shutdown_timeout=0.5
    )
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    client = api.get_client()
    for i in range(500):
        client.get_string_value("feature.color", "", EvaluationContext(f"c{i}"))
    api.shutdown()
    stats = provider.stats()
    on_disk = sum(p.stat().st_size for p in spool.glob("*.spool"))
    assert on_disk <= 1000
    assert stats.log_spooled_exposures == 0 and stats.log_dropped_exposures == 500


SHARED = """
    import json, os
    from openfeature import api
    from confidence import ConfidenceProvider

    provider = ConfidenceProvider(
        os.environ["TEST_SECRET"], encryption_key=os.environ["TEST_KEY"],
        cdn_base_url=os.environ["TEST_URL"], api_base_url=os.environ["TEST_URL"],
        log_spool_dir=os.environ["TEST_SPOOL"],
    )
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    api.shutdown()
    print(json.dumps({"unspooled": provider.stats().log_unspooled_exposures}))
"""


def test_two_processes_sharing_the_directory_never_send_a_file_twice(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    import json

    spool_dir = tmp_path / "spool"
    emulator.inject(Route.FLAG_LOGS, Status(503))
    users = [f"s{i}" for i in range(2000)]
    provider = make_provider(emulator, log_spool_dir=spool_dir, shutdown_timeout=0.5)
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    client = api.get_client()
    # Several drains, so the spool holds several files for the two processes to race for.
    for start in range(0, 2000, 250):
        for user in users[start : start + 250]:
            client.get_string_value("feature.color", "", EvaluationContext(user))
        provider._runtime._logs.drain_now()  # type: ignore[union-attr]
    api.shutdown()
    assert len(spool_files(spool_dir, "*.spool")) >= 8
    emulator.clear_faults()
    emulator.clear_records()

    script = tmp_path / "shared.py"
    script.write_text(textwrap.dedent(SHARED))
    env = {
        **os.environ,
        "TEST_SECRET": SECRET,
        "TEST_KEY": emulator.encryption_key_hex,
        "TEST_URL": emulator.base_url,
        "TEST_SPOOL": str(spool_dir),
    }
    procs = [
        subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    seen = units(emulator)
    assert set(seen) == set(users) and set(seen.values()) == {1}
    assert sum(o["unspooled"] for o in outputs) == 2000
    assert spool_files(spool_dir) == []


def test_backlog_overflow_goes_to_the_spool_instead_of_being_dropped(
    emulator: ConfidenceEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confidence._logs import flag_logs as _flag_logs

    monkeypatch.setattr(_flag_logs, "MAX_BACKLOG_BATCHES", 2)
    spool = tmp_path / "spool"
    emulator.inject(Route.FLAG_LOGS, Status(503))
    provider = make_provider(emulator, log_spool_dir=spool, shutdown_timeout=0.5)
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    client = api.get_client()
    runtime = provider._runtime
    assert runtime is not None
    for start in range(0, 600, 100):  # six batches into a backlog of two
        for i in range(start, start + 100):
            client.get_string_value("feature.color", "", EvaluationContext(f"o{i}"))
        runtime._logs.drain_now()
    during = provider.stats()
    assert during.log_spooled_exposures >= 300 and during.log_dropped_exposures == 0
    assert during.log_produced_exposures == (
        during.log_delivered_exposures
        + during.log_in_flight_exposures
        + during.log_queued_exposures
        + during.log_dropped_exposures
        + during.log_spooled_exposures
    )
    api.shutdown()
    final = provider.stats()
    assert final.log_spooled_exposures == 600 and final.log_dropped_exposures == 0

    emulator.clear_faults()
    monkeypatch.setattr(_flag_logs, "MAX_BACKLOG_BATCHES", 256)
    stats = run_provider(emulator, spool, [])
    seen = units(emulator)
    assert set(seen) == {f"o{i}" for i in range(600)} and set(seen.values()) == {1}
    assert stats.log_unspooled_exposures == 600
