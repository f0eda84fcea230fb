"""Reliability under load (issue #6).

For `CONFIDENCE_LOAD_SECONDS` (default 60): two threads and an event loop evaluate as fast as
they can, each evaluation with a unit of its own, while the CDN swaps the state every 100 ms
and the flag-log endpoint flaps (503 for 0.5 s of every 3 s). At the end:

- no evaluation failed and none saw a value outside the states served;
- memory is flat: the resident set stays within a bound after warm-up (a leaked resolver
  instance per state swap alone would be hundreds of MiB);
- nothing is lost or doubled: Confidence received exactly one resolve count and exactly one
  exposure per evaluation.

The emulator runs in a process of its own (controlled through a pipe) so that neither its
CPU time nor the logs it decodes count against the provider's process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.to_thread
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from provider_support import SECRET, make_provider, requires_wasm, sample_state

pytestmark = [requires_wasm, pytest.mark.slow, pytest.mark.usefixtures("openfeature_api")]

SECONDS = float(os.environ.get("CONFIDENCE_LOAD_SECONDS", "60"))
COLORS = ("red", "green", "blue", "yellow")
SWAP_EVERY = 0.1
# The log endpoint answers 503 for the first DOWN seconds of every FLAP_PERIOD. (Its delivery
# retries back off 0.5 s, then 1 s: an endpoint that is down half of every second at this
# load leaves too little time between retries to catch up, and the bounded backlog drops,
# with a warning, which is the designed behaviour under sustained overload.)
FLAP_PERIOD = 3.0
DOWN = 0.5
MiB = 1024 * 1024
RSS_BOUND = 96 * MiB


# -- the emulator process ------------------------------------------------------------------------


def _emulator_process(conn: Connection, states: list[bytes]) -> None:
    """Serve `states` in turn, flap the log endpoint, count what arrives; obey `conn`."""
    from confidence.testing.emulator import ConfidenceEmulator, Route, Status

    exposures: dict[str, int] = {}
    resolves: dict[str, int] = {}
    changes = {"swaps": 0, "outages": 0, "refused": 0}
    lock = threading.Lock()
    swapping = threading.Event()
    flapping = threading.Event()
    done = threading.Event()

    def count(emu: ConfidenceEmulator) -> None:
        posted = len(emu.requests_for(Route.FLAG_LOGS))
        accepted = len(emu.flag_logs)
        batches = emu.take_flag_log_batches()  # and forget them: memory stays flat
        with lock:
            changes["refused"] += posted - accepted  # answered 503
            for batch in batches:
                for assigned in batch.flag_assigned:
                    for applied in assigned.flags:
                        exposures[applied.flag] = exposures.get(applied.flag, 0) + 1
                for info in batch.flag_resolve_info:
                    for v in info.variant_resolve_info:
                        resolves[info.flag] = resolves.get(info.flag, 0) + v.count

    def background(emu: ConfidenceEmulator) -> None:
        turn = 0
        started = time.monotonic()
        down = False
        while not done.wait(SWAP_EVERY):
            if swapping.is_set():
                turn += 1
                emu.set_state(states[turn % len(states)])
                changes["swaps"] += 1
            want_down = flapping.is_set() and (time.monotonic() - started) % FLAP_PERIOD < DOWN
            if want_down != down:
                emu.clear_faults(Route.FLAG_LOGS)
                if want_down:
                    emu.inject(Route.FLAG_LOGS, Status(503))
                    changes["outages"] += 1
                down = want_down
            count(emu)

    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
        emu.set_state(states[0])
        worker = threading.Thread(target=background, args=(emu,))
        worker.start()
        conn.send({"base_url": emu.base_url, "key": emu.encryption_key_hex})
        try:
            while True:
                command = conn.recv()
                if command == "start":
                    swapping.set()
                    flapping.set()
                elif command == "calm":  # no more swaps or 503s
                    swapping.clear()
                    flapping.clear()
                    time.sleep(3 * SWAP_EVERY)
                elif command == "totals":
                    count(emu)
                    with lock:
                        conn.send({"exposures": exposures, "resolves": resolves, **changes})
                elif command == "exit":
                    break
                conn.send("ok") if command != "totals" else None
        finally:
            done.set()
            worker.join()


class RemoteEmulator:
    def __init__(self, conn: Connection, info: dict[str, str]) -> None:
        self._conn = conn
        self.base_url = info["base_url"]
        self.cdn_base_url = self.api_base_url = self.base_url
        self.encryption_key_hex = info["key"]

    def call(self, command: str) -> Any:
        self._conn.send(command)
        if not self._conn.poll(60):
            raise AssertionError(f"the emulator process did not answer {command!r}")
        return self._conn.recv()


@pytest.fixture
def remote_emulator() -> Iterator[RemoteEmulator]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    states = [sample_state(color=color).build() for color in COLORS]
    process = context.Process(target=_emulator_process, args=(theirs, states), daemon=True)
    process.start()
    try:
        assert ours.poll(60), "the emulator process did not start"
        yield RemoteEmulator(ours, ours.recv())
        ours.send("exit")
        process.join(15)
    finally:
        if process.is_alive():
            process.kill()
            process.join()


# -- the load ------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_threads_and_a_loop_under_swaps_and_a_flapping_log_endpoint(
    remote_emulator: RemoteEmulator,
) -> None:
    emu = remote_emulator
    counts = {"thread-0": 0, "thread-1": 0, "loop": 0}
    failures: list[Any] = []
    seen: set[str] = set()
    stats: list[Any] = []
    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def check(details: Any) -> None:
        if details.error_code is not None or details.value not in COLORS:
            failures.append((details.value, details.error_code, details.error_message))
        seen.add(details.value)

    def thread_worker(name: str) -> None:
        client = api.get_client()
        while not stop.is_set():
            n = counts[name]
            check(client.get_string_details("feature.color", "x", EvaluationContext(f"{name}-{n}")))
            counts[name] = n + 1

    def sampler(start: float) -> None:
        while not stop.wait(0.5):
            rss.append((time.monotonic() - start, _rss()))

    async def main() -> None:
        provider = make_provider(
            emu,  # type: ignore[arg-type]
            state_poll_interval=0.05,
            log_poll_interval=0.2,
            pool_size=3,
            shutdown_timeout=20.0,
        )
        async with provider:
            api.set_provider_and_wait(provider)  # returns at once: started on this loop
            client = api.get_client()
            emu.call("start")
            start = time.monotonic()
            threads = [
                threading.Thread(target=thread_worker, args=(f"thread-{i}",)) for i in range(2)
            ]
            threads.append(threading.Thread(target=sampler, args=(start,)))
            for thread in threads:
                thread.start()
            try:
                while time.monotonic() - start < SECONDS:
                    for _ in range(50):
                        n = counts["loop"]
                        ctx = EvaluationContext(f"loop-{n}")
                        check(await client.get_string_details_async("feature.color", "x", ctx))
                        counts["loop"] = n + 1
                    await anyio.sleep(0)  # let the provider's own tasks run too
            finally:
                stop.set()
                for thread in threads:
                    await anyio.to_thread.run_sync(thread.join)
            await anyio.to_thread.run_sync(emu.call, "calm")
            stats.append(provider.stats())
        # Leaving `async with` delivered the rest (the endpoint no longer flaps).
        api.shutdown()

    anyio.run(main)
    totals = emu.call("totals")
    evaluations = sum(counts.values())

    print(f"\n{evaluations} evaluations {counts}; {totals['swaps']} state swaps, "
          f"{totals['outages']} log outages, {totals['refused']} log posts refused; "
          f"RSS {[round(size / MiB) for _, size in rss]} MiB")
    assert failures == [], failures[:5]
    assert min(counts.values()) > 0, counts
    # The load really ran through swaps and outages.
    assert seen == set(COLORS)
    assert totals["swaps"] >= SECONDS / SWAP_EVERY / 2
    assert totals["outages"] >= SECONDS / FLAP_PERIOD / 2 and totals["refused"] > 0
    assert stats[0].log_dropped_exposures == 0 and stats[0].log_dropped_resolves == 0
    # Exactly one resolve count and one exposure per evaluation (each had its own unit).
    assert totals["resolves"].get("flags/feature", 0) == evaluations
    assert totals["exposures"].get("flags/feature", 0) == evaluations

    # Memory: after a warm-up (a quarter of the run), the resident set stays within a bound.
    warm = [size for at, size in rss if at >= SECONDS / 4]
    assert warm, rss
    growth = max(warm) - warm[0]
    assert growth < RSS_BOUND, f"RSS grew by {growth / MiB:.0f} MiB under load"
