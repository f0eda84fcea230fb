"""Side-by-side benchmark: our provider vs the official one (0.15.3) vs OpenFeature's
InMemoryProvider (the floor), on this machine, in one invocation (`nox -s bench`).

Every contender runs in its own process (`bench/worker.py`), the official one in its own
virtualenv (`bench/.venv-official`, created here on first use) because it installs a
package also named `confidence`. All of them talk to one `ConfidenceEmulator` on 127.0.0.1
serving the real state (`../shared/data/resolver_state_current.pb`, account
`confidence-test`) plus one large object flag (bench/state.py); the official provider's
flag logs go to a loopback gRPC sink (bench/grpc_sink.py). Nothing leaves the machine.

Measurements alternate between contenders in chunks, so a noisy neighbour hits all of
them alike; only ratios measured within one repeat are compared. The whole set is repeated
(3 times by default) and the spread of each ratio is reported.

Output: a table on stdout, `bench/results/latest.json`, and the table in bench/README.md
(between the `bench-table` markers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import state as bench_state  # noqa: E402  (bench/state.py)

from confidence.testing.emulator import ConfidenceEmulator, Route  # noqa: E402

OFFICIAL_VERSION: Final = "0.15.3"
OFFICIAL_VENV: Final = HERE / ".venv-official"
OFFICIAL_PY: Final = OFFICIAL_VENV / "bin" / "python"
RESULTS: Final = HERE / "results"
README: Final = HERE / "README.md"
TABLE_START: Final = "<!-- bench-table:start -->"
TABLE_END: Final = "<!-- bench-table:end -->"
SUSTAINED_MARKERS: Final = ("<!-- sustained-table:start -->", "<!-- sustained-table:end -->")
PEERS_MARKERS: Final = ("<!-- peers-table:start -->", "<!-- peers-table:end -->")
PARTS: Final = ("steady", "startup", "background", "sustained", "peers")
REPEATED_PARTS: Final = ("steady", "startup", "background")
CONTENDERS: Final = ("ours", "official", "floor")


# -- environment ------------------------------------------------------------------------------


def ensure_official_venv() -> None:
    """bench/.venv-official with confidence-openfeature-provider==0.15.3 (pip, PyPI)."""
    if OFFICIAL_PY.exists():
        probe = subprocess.run(
            [str(OFFICIAL_PY), "-c", "import confidence; print(confidence.__version__)"],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        if probe.stdout.strip() == OFFICIAL_VERSION:
            return
        shutil.rmtree(OFFICIAL_VENV)
    print(f"creating {OFFICIAL_VENV} (confidence-openfeature-provider=={OFFICIAL_VERSION})")
    subprocess.run([sys.executable, "-m", "venv", str(OFFICIAL_VENV)], check=True)
    subprocess.run(
        [
            str(OFFICIAL_PY),
            "-m",
            "pip",
            "install",
            "-q",
            f"confidence-openfeature-provider=={OFFICIAL_VERSION}",
        ],
        check=True,
    )


def python_for(contender: str) -> str:
    return str(OFFICIAL_PY) if contender == "official" else sys.executable


@dataclass
class Setup:
    emulator: ConfidenceEmulator
    grpc_target: str
    secret: str
    key: str
    large_value: str
    state_a: bytes
    state_b: bytes

    def args(self, contender: str) -> list[str]:
        args = [
            "--contender",
            contender,
            "--base-url",
            self.emulator.base_url,
            "--grpc-target",
            self.grpc_target,
            "--secret",
            self.secret,
            "--key",
            self.key,
        ]
        if contender == "floor":
            args += ["--large-value", self.large_value]
        return args


@contextlib.contextmanager
def grpc_sink() -> Iterator[str]:
    proc = subprocess.Popen(
        [str(OFFICIAL_PY), str(HERE / "grpc_sink.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            raise RuntimeError("grpc sink did not start")
        yield f"127.0.0.1:{line[1]}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class Worker:
    """A contender process; `ask` sends one command and waits for its answer."""

    def __init__(
        self,
        setup: Setup,
        contender: str,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.contender = contender
        self.proc = subprocess.Popen(
            [python_for(contender), str(HERE / "worker.py"), *setup.args(contender), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),  # never import the repo's `confidence` by accident
            env=env,
        )
        self.status = self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.contender} worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- statistics -------------------------------------------------------------------------------


def summarize(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    n = len(s)
    us = 1e-3
    return {
        "n": n,
        "min_us": s[0] * us,
        "median_us": s[n // 2] * us,
        "p99_us": s[min(n - 1, int(n * 0.99))] * us,
        "mean_us": statistics.fmean(s) * us,
    }


# -- one repeat -------------------------------------------------------------------------------

#: figure -> (contenders, calls per contender, chunks)
LATENCY_FIGURES: Final = {
    "provider_sync": (("ours", "official", "floor"), 20_000, 4),
    "client_sync": (("ours", "official", "floor"), 10_000, 2),
    "client_async": (("ours", "official", "floor"), 10_000, 2),
    "object": (("ours", "official", "floor"), 5_000, 2),
}


@dataclass
class Repeat:
    index: int
    latency: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    throughput: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    startup: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    startup_large: dict[str, dict[str, float]] = field(default_factory=dict)
    background: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    rss_loaded_kb: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def rotate(seq: Sequence[str], k: int) -> list[str]:
    k %= len(seq)
    return list(seq[k:]) + list(seq[:k])


def run_steady(setup: Setup, rep: Repeat, scale: float) -> None:
    workers = {c: Worker(setup, c) for c in CONTENDERS}
    try:
        for c, w in workers.items():
            rep.checks[c] = w.ask(cmd="check")
        for figure, (who, n, chunks) in LATENCY_FIGURES.items():
            n = max(1000, int(n * scale))
            got: dict[str, list[int]] = {c: [] for c in who}
            for chunk in range(chunks):
                for c in rotate(who, chunk + rep.index):
                    got[c] += workers[c].ask(
                        cmd="latency", figure=figure, n=n // chunks, keys="cycle"
                    )["samples"]
            rep.latency[figure] = {c: summarize(s) for c, s in got.items()}
            print(
                f"  {figure:<14} "
                + "  ".join(
                    f"{c} {rep.latency[figure][c]['median_us']:.1f}"
                    f"/{rep.latency[figure][c]['p99_us']:.1f}us"
                    for c in who
                ),
                flush=True,
            )
        seconds = max(0.5, 2.0 * scale)
        for figure in ("provider_sync", "client_sync"):
            res: dict[str, dict[str, float]] = {}
            for c in rotate(CONTENDERS, rep.index):
                for threads in (1, 2, 1, 2):
                    r = workers[c].ask(
                        cmd="throughput", figure=figure, threads=threads, seconds=seconds / 2
                    )
                    key = f"t{threads}"
                    prev = res.setdefault(c, {})
                    prev[key] = prev.get(key, 0.0) + r["per_s"] / 2
            for c in res:
                res[c]["scaling"] = res[c]["t2"] / res[c]["t1"]
            rep.throughput[figure] = res
            print(
                f"  throughput {figure}: "
                + "  ".join(f"{c} {v['t1']:.0f}/s -> x{v['scaling']:.2f}" for c, v in res.items()),
                flush=True,
            )
        for c, w in workers.items():
            rep.rss_loaded_kb[c] = w.ask(cmd="rss")["rss_kb"]
    finally:
        for w in workers.values():
            w.close()


def precompile(env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [python_for("ours"), "-m", "confidence", "precompile"],
        env=env,
        cwd=tempfile.gettempdir(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def byte_compile_ours() -> None:
    """Write the .pyc files of our package, as installing a wheel does.

    The official provider is pip-installed, and pip byte-compiles what it installs; ours
    is this checkout (an editable install), whose .pyc files exist only if some process
    wrote them. With PYTHONDONTWRITEBYTECODE set (as on CI and this VM) none ever does, and
    every fresh process compiles the whole package from source: ~100 ms of "import" that
    no user of the wheel pays. (compileall writes regardless of that variable.)
    """
    subprocess.run(
        [python_for("ours"), "-m", "compileall", "-q", str(HERE.parent / "confidence")],
        cwd=tempfile.gettempdir(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_startup(setup: Setup, rep: Repeat, runs: int, label: str = "real state") -> Any:
    """Construction -> READY in fresh processes: cold (empty caches) and warm."""
    byte_compile_ours()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as warm_home:
        env_warm = dict(os.environ, HOME=warm_home, XDG_CACHE_HOME=f"{warm_home}/.cache")
        for c in ("ours", "official"):  # prime the warm caches
            Worker(setup, c, ["--startup"], env_warm).proc.wait()
        # A provider that stops right after READY abandons its background optimized compile
        # (docs/performance.md); warm means the optimized module is cached, as after any
        # process that ran for a second, or `python -m confidence precompile`.
        precompile(env_warm)
        for i in range(runs):
            for c in rotate(("ours", "official"), i + rep.index):
                with tempfile.TemporaryDirectory(prefix="bench-cold-") as cold_home:
                    env_cold = dict(
                        os.environ, HOME=cold_home, XDG_CACHE_HOME=f"{cold_home}/.cache"
                    )
                    for mode, env in (("cold", env_cold), ("warm", env_warm)):
                        w = Worker(setup, c, ["--startup"], env)
                        w.proc.wait()
                        r = results.setdefault(c, {})
                        r.setdefault(f"{mode}_ready_s", []).append(w.status["ready_s"])
                        r.setdefault(f"{mode}_rss_kb", []).append(w.status["rss_kb"])
                        r.setdefault(f"{mode}_import_s", []).append(w.status["import_s"])
    out = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in results.items()}
    print(
        f"  startup ({label}): "
        + "  ".join(
            f"{c} cold {v['cold_ready_s'] * 1e3:.0f}ms warm {v['warm_ready_s'] * 1e3:.0f}ms "
            f"(+import {v['warm_import_s'] * 1e3:.0f}ms) rss {v['warm_rss_kb'] / 1024:.0f}MiB"
            for c, v in out.items()
        ),
        flush=True,
    )
    return out


class Toggler:
    """Swaps the emulator's served state every `period` s (A <-> B) while running."""

    def __init__(self, setup: Setup, period: float = 0.1) -> None:
        self.setup = setup
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    def __enter__(self) -> Toggler:
        def run() -> None:
            flip = False
            while not self._stop.wait(self.period):
                flip = not flip
                self.setup.emulator.set_state(
                    self.setup.state_b if flip else self.setup.state_a,
                    account_id=bench_state.ACCOUNT,
                )
                self.swaps += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.setup.emulator.set_state(self.setup.state_a, account_id=bench_state.ACCOUNT)


def run_background(setup: Setup, rep: Repeat, scale: float) -> None:
    """p99 resolve latency while the state is swapped / logs are flushed every 100 ms."""
    seconds = max(1.0, 3.0 * scale)
    modes = {
        # mode: (state poll s, log poll s, keys); "swaps" also toggles the served state
        "quiet": (600.0, 600.0, "cycle"),
        "swaps": (0.1, 600.0, "cycle"),
        "quiet_unique": (600.0, 600.0, "unique"),
        "flushes": (600.0, 0.1, "unique"),
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for c in rotate(("ours", "official"), rep.index):
        for mode, (state_poll, log_poll, keys) in modes.items():
            w = Worker(
                setup,
                c,
                ["--state-poll", str(state_poll), "--log-poll", str(log_poll)],
            )
            try:
                w.ask(cmd="latency", figure="provider_sync", n=2000, keys=keys)  # warm up
                before = len(setup.emulator.requests_for(Route.STATE))
                ctx = Toggler(setup) if mode == "swaps" else contextlib.nullcontext()
                with ctx as toggler:
                    samples = w.ask(
                        cmd="latency_for", figure="provider_sync", seconds=seconds, keys=keys
                    )["samples"]
                stats = summarize(samples)
                if toggler is not None:
                    stats["state_swaps_served"] = toggler.swaps
                    stats["state_fetches"] = len(setup.emulator.requests_for(Route.STATE)) - before
                out.setdefault(c, {})[mode] = stats
            finally:
                w.close()
    rep.background = out
    print(
        "  background: "
        + "  ".join(
            f"{c} p99 quiet {v['quiet']['p99_us']:.0f} swaps {v['swaps']['p99_us']:.0f} "
            f"quiet/u {v['quiet_unique']['p99_us']:.0f} flushes {v['flushes']['p99_us']:.0f}us"
            for c, v in out.items()
        ),
        flush=True,
    )


# -- sustained traffic (issue 12) --------------------------------------------------------------

SUSTAINED_CHUNKS: Final = 30  # three per decile
POPULATIONS: Final = ("unique", "zipf")


@dataclass
class Sustained:
    """Per population and contender: the chunks in time order, RSS before the first chunk."""

    calls: dict[str, int]
    chunks: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    rss_start_kb: dict[str, dict[str, int]] = field(default_factory=dict)

    def deciles(self, population: str, contender: str) -> list[float]:
        """Per decile of the run, the median of its chunks' medians (equal-sized chunks;
        three per decile, so one chunk hit by a noisy neighbour does not move it)."""
        ch = self.chunks[population][contender]
        per = len(ch) // 10
        return [
            statistics.median(c["median_us"] for c in ch[d * per : (d + 1) * per])
            for d in range(10)
        ]

    def worst(self, population: str, contender: str) -> list[float]:
        """Per decile, its slowest chunk's median (what a decile's median could hide)."""
        ch = self.chunks[population][contender]
        per = len(ch) // 10
        return [max(c["median_us"] for c in ch[d * per : (d + 1) * per]) for d in range(10)]

    def rss(self, population: str, contender: str) -> tuple[int, int]:
        return (
            self.rss_start_kb[population][contender],
            int(self.chunks[population][contender][-1]["rss_kb"]),
        )


def run_sustained(setup: Setup, calls: dict[str, int]) -> Sustained:
    """`calls[c]` client evaluations per contender and population, in SUSTAINED_CHUNKS
    chunks alternating between contenders (rotating order), each population in fresh
    processes (so one population's dedup window and buffers do not carry into the other)."""
    out = Sustained(calls=dict(calls))
    for population in POPULATIONS:
        workers = {c: Worker(setup, c) for c in CONTENDERS}
        try:
            got: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
            out.rss_start_kb[population] = {
                c: w.ask(cmd="prepare", population=population)["rss_kb"] for c, w in workers.items()
            }
            t0 = time.perf_counter()
            for i in range(SUSTAINED_CHUNKS):
                for c in rotate(CONTENDERS, i):
                    n = max(1, calls[c] // SUSTAINED_CHUNKS)
                    got[c].append(workers[c].ask(cmd="sustained", population=population, n=n))
                # The emulator keeps every request it served; the bench needs none of them.
                setup.emulator.clear_records()
                if i % 4 == 3 or i == SUSTAINED_CHUNKS - 1:
                    print(
                        f"  sustained {population} chunk {i + 1}/{SUSTAINED_CHUNKS} "
                        f"({time.perf_counter() - t0:.0f}s): "
                        + "  ".join(
                            f"{c} {got[c][-1]['median_us']:.1f}us "
                            f"{got[c][-1]['rss_kb'] / 1024:.0f}MiB"
                            for c in CONTENDERS
                        ),
                        flush=True,
                    )
            out.chunks[population] = got
        finally:
            for w in workers.values():
                w.close()
    return out


#: Ours' RSS growth over a sustained run is bounded by the traffic-sized structures' own
#: bounds (bench/README.md, "What grows with traffic"): per resolver instance (the default
#: pool, max(2, min(8, cores))) the guest's dedup window (~9 MiB at 100,000 identities) and
#: its pending exposures (capped at 64 MiB; in practice what arrives before the first drain,
#: one log_poll_interval after the start, then one 0.5 s busy interval), whose high-water
#: mark the linear memory keeps, plus the host's dedup window (26.4 MB under churn). The
#: second bound is the leak check: once those are at their high-water marks, the second
#: half of the run (500,000 calls) may add at most 16 MiB, i.e. < 34 bytes per call.
#: One RSS sample is a noisy level: it includes the free memory glibc keeps in the drain and
#: event-loop threads' malloc arenas after each drain's transient buffers, which moved by up
#: to 8 MiB between consecutive chunks with no live growth (measured; malloc_trim(0) gave
#: 13 MiB of it back at the end). So each end of the half is the median of three chunks' RSS
#: (as a decile's latency is), which a leak moves as much as a single sample would.
POOL_SIZE: Final = max(2, min(8, os.cpu_count() or 1))
RSS_GROWTH_BOUND_MIB: Final = POOL_SIZE * (9.0 + 64.0) + 26.0
RSS_SECOND_HALF_BOUND_MIB: Final = 16.0


def rss_level(chunks: Sequence[dict[str, float]]) -> float:
    """The median RSS (kB) after `chunks` (see RSS_SECOND_HALF_BOUND_MIB)."""
    return statistics.median(c["rss_kb"] for c in chunks)


def sustained_ratios(sus: Sustained) -> dict[str, float]:
    r: dict[str, float] = {}
    for pop in POPULATIONS:
        ours = sus.deciles(pop, "ours")
        off = sus.deciles(pop, "official")
        r[f"sustained {pop}: ours last/first decile"] = ours[-1] / ours[0]
        r[f"sustained {pop}: ours/official, last decile"] = ours[-1] / off[-1]
        r[f"sustained {pop}: ours/official, all deciles (median)"] = statistics.median(
            a / b for a, b in zip(ours, off, strict=True)
        )
        r[f"sustained {pop}: ours/floor, last decile"] = ours[-1] / sus.deciles(pop, "floor")[-1]
        start, end = sus.rss(pop, "ours")
        r[f"sustained {pop}: ours RSS growth (MiB)"] = (end - start) / 1024
        r[f"sustained {pop}: ours slowest chunk / first decile"] = (
            max(sus.worst(pop, "ours")) / ours[0]
        )
        r[f"sustained {pop}: floor slowest chunk / first decile"] = (
            max(sus.worst(pop, "floor")) / sus.deciles(pop, "floor")[0]
        )
        ch = sus.chunks[pop]["ours"]
        half = len(ch) // 2
        r[f"sustained {pop}: ours RSS growth, second half (MiB)"] = (
            rss_level(ch[-3:]) - rss_level(ch[half - 3 : half])
        ) / 1024
    return r


SUSTAINED_TARGETS: Final = tuple(
    t
    for pop in POPULATIONS
    for t in (
        (
            f"sustained {pop}: ours last/first decile",
            "<=",
            1.15,
            f"{pop}: last decile <= 1.15x first",
        ),
        (
            f"sustained {pop}: ours/official, last decile",
            "<=",
            0.1,
            f"{pop}: ours <= 1/10 official (last decile)",
        ),
        (
            f"sustained {pop}: ours RSS growth (MiB)",
            "<=",
            RSS_GROWTH_BOUND_MIB,
            f"{pop}: ours RSS growth <= {RSS_GROWTH_BOUND_MIB:.0f} MiB (the structures' bounds,"
            f" pool of {POOL_SIZE})",
        ),
        (
            f"sustained {pop}: ours RSS growth, second half (MiB)",
            "<=",
            RSS_SECOND_HALF_BOUND_MIB,
            f"{pop}: ours RSS growth over the second half <= {RSS_SECOND_HALF_BOUND_MIB:.0f} MiB"
            " (no per-call leak; medians of 3 chunks)",
        ),
    )
)


def render_sustained(sus: Sustained, meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['when']} on {meta['machine']}. `client.get_*_details` through the OpenFeature "
        f"client, flags in turn: `fallthrough-test-2.enabled`, `fallthrough-test-1.enabled`, "
        f"`tutorial-feature.title` (its rule never matches). Calls per population: "
        + ", ".join(f"{c} {n:,}" for c, n in sus.calls.items())
        + f", in {SUSTAINED_CHUNKS} alternating chunks; a decile's figure is the median of its "
        "3 chunks' medians (µs). Ratios compare the same decile of wall-clock time. RSS: after "
        "READY and 2,000 warm-up calls, and after the last chunk.",
        "",
    ]
    for pop in POPULATIONS:
        title = {
            "unique": "every call a new targeting key",
            "zipf": "Zipf (s = 1) over 1,000,000 users",
        }[pop]
        lines += [f"**{pop}**: {title}", ""]
        lines.append(
            "| decile | ours | official | floor | ours/official | ours/floor "
            "| slowest chunk: ours / floor |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        d = {c: sus.deciles(pop, c) for c in CONTENDERS}
        w = {c: sus.worst(pop, c) for c in ("ours", "floor")}
        for i in range(10):
            lines.append(
                f"| {i + 1} | {fmt_us(d['ours'][i])} | {fmt_us(d['official'][i])} | "
                f"{fmt_us(d['floor'][i])} | {d['ours'][i] / d['official'][i]:.3f} | "
                f"{d['ours'][i] / d['floor'][i]:.2f} | "
                f"{fmt_us(w['ours'][i])} / {fmt_us(w['floor'][i])} |"
            )
        rss = {c: sus.rss(pop, c) for c in CONTENDERS}
        lines.append(
            "| RSS start → end | "
            + " | ".join(
                f"{a / 1024:.0f} → {b / 1024:.0f} MiB" for a, b in (rss[c] for c in CONTENDERS)
            )
            + " | - | - | - |"
        )
        lines.append("")
    lines.append("| target | value | met |")
    lines.append("|---|---|---|")
    r = sustained_ratios(sus)
    for key, op, bound, desc in SUSTAINED_TARGETS:
        lines.append(f"| {desc} | {r[key]:.3g} | {'yes' if met(r[key], op, bound) else '**no**'} |")
    for pop in POPULATIONS:
        ours_w = r[f"sustained {pop}: ours slowest chunk / first decile"]
        floor_w = r[f"sustained {pop}: floor slowest chunk / first decile"]
        lines.append(
            f"| {pop}: slowest chunk / first decile, ours vs floor (no target; the floor's "
            f"shows this VM's noise) | {ours_w:.3g} vs {floor_w:.3g} | - |"
        )

    return "\n".join(lines)


def run_soak(setup: Setup, seconds: float, population: str) -> list[dict[str, float]]:
    """Ours alone for `seconds`, printing the minute's median/p99 and RSS every minute."""
    w = Worker(setup, "ours")
    rows: list[dict[str, float]] = []
    try:
        rss0 = w.ask(cmd="rss")["rss_kb"]
        print(
            f"soak ({population}, {seconds:.0f}s): RSS at start {rss0 / 1024:.1f} MiB", flush=True
        )
        t0 = time.perf_counter()
        total = 0
        while (elapsed := time.perf_counter() - t0) < seconds:
            r = w.ask(
                cmd="sustained_for", population=population, seconds=min(60.0, seconds - elapsed)
            )
            setup.emulator.clear_records()
            total += r["calls"]
            r["minute"] = len(rows) + 1
            r["total_calls"] = total
            rows.append(r)
            print(
                f"  minute {len(rows)}: {r['calls']:,} calls (total {total:,}), median "
                f"{r['median_us']:.1f}us p99 {r['p99_us']:.1f}us, RSS {r['rss_kb'] / 1024:.1f} MiB "
                f"({(r['rss_kb'] - rss0) / 1024:+.1f})",
                flush=True,
            )
    finally:
        w.close()
    return rows


# -- peers (issue 12 item 6) --------------------------------------------------------------------

PEER_OURS_DIRECT: Final = "ours, provider called directly"
PEER_OURS_CLIENT: Final = "ours via client"
PEER_FLOOR: Final = "floor (InMemoryProvider via client)"
PEER_LD: Final = "LaunchDarkly variation() (file data source, events off)"
PEER_FLAGD: Final = "flagd in-process (FILE), called directly"


def run_peers(rounds: int, calls: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "peers.py"), "--rounds", str(rounds), "--calls", str(calls)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench/peers.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res = doc["results"]
    for flag in ("simple", "complex"):
        base = res[flag][PEER_OURS_CLIENT]["median_us"]
        print(
            f"  peers {flag}: "
            + "  ".join(f"{c.split(' (')[0]} {v['median_us']:.1f}" for c, v in res[flag].items())
            + f"  (ours via client {base:.1f}us)",
            flush=True,
        )
    for name, why in doc["skipped"].items():
        print(f"  peers: skipped {name}: {why}", flush=True)
    return doc


def peer_ratios(doc: dict[str, Any]) -> dict[str, float]:
    res = doc["results"]
    r: dict[str, float] = {}

    def med(flag: str, c: str) -> float:
        return float(res[flag][c]["median_us"])

    for flag in ("simple", "complex"):
        have = res[flag]
        if PEER_LD in have:
            r[f"{flag}: ours direct / LD variation()"] = med(flag, PEER_OURS_DIRECT) / med(
                flag, PEER_LD
            )
        if PEER_FLAGD in have:
            r[f"{flag}: ours direct / flagd direct"] = med(flag, PEER_OURS_DIRECT) / med(
                flag, PEER_FLAGD
            )
        r[f"{flag}: ours via client / floor"] = med(flag, PEER_OURS_CLIENT) / med(flag, PEER_FLOOR)
        others = [c for c in have if not c.startswith(("ours", "floor"))]
        if others:
            fastest = min(others, key=lambda c: med(flag, c))
            r[f"{flag}: ours direct / fastest peer"] = med(flag, PEER_OURS_DIRECT) / med(
                flag, fastest
            )
    return r


PEER_TARGETS: Final = (
    (
        "simple: ours direct / LD variation()",
        "<=",
        0.8,
        "simple: ours direct <= 0.8x LaunchDarkly variation()",
    ),
    ("simple: ours direct / flagd direct", "<=", 1.0, "simple: ours direct <= flagd direct"),
    ("simple: ours via client / floor", "<=", 2.0, "simple: ours via client <= 2x the floor"),
)


def render_peers(doc: dict[str, Any], meta: dict[str, Any]) -> str:
    res = doc["results"]
    lines = [
        f"Run {meta['when']} on {meta['machine']}; one process, {doc['rounds']} alternating "
        f"rounds of {doc['calls_per_round']:,} calls per contender and flag, a fresh user per "
        "call; each timed call includes building that SDK's context from the user. "
        "Median µs per call; versions: "
        + ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
        + ".",
        "",
        "| contender | simple flag (µs) | vs ours via client | complex flag (µs) "
        "| vs ours via client |",
        "|---|---|---|---|---|",
    ]
    base = {f: res[f][PEER_OURS_CLIENT]["median_us"] for f in ("simple", "complex")}
    for c in sorted(res["simple"], key=lambda c: res["simple"][c]["median_us"]):
        cells = []
        for f in ("simple", "complex"):
            v = res[f].get(c)
            if v is None:
                cells += ["-", "-"]
            else:
                cells += [fmt_us(v["median_us"]), f"{v['median_us'] / base[f]:.2f}"]
        label = f"**{c}**" if c.startswith("ours") else c
        lines.append(f"| {label} | {' | '.join(cells)} |")
    for name, why in doc["skipped"].items():
        lines.append(f"| {name}: skipped ({why}) | - | - | - | - |")
    lines += ["", "| target / ratio | value | met |", "|---|---|---|"]
    r = peer_ratios(doc)
    for key, op, bound, desc in PEER_TARGETS:
        if key in r:
            lines.append(
                f"| {desc} | {r[key]:.3g} | {'yes' if met(r[key], op, bound) else '**no**'} |"
            )
    for ratio in (
        "ours direct / LD variation()",
        "ours direct / flagd direct",
        "ours direct / fastest peer",
    ):
        s_key, c_key = f"simple: {ratio}", f"complex: {ratio}"
        if s_key in r and c_key in r:
            lines.append(
                f"| {ratio}: complex flag vs simple (lead widens if lower) | "
                f"{r[c_key]:.3g} vs {r[s_key]:.3g} | {'yes' if r[c_key] < r[s_key] else '**no**'} |"
            )
    return "\n".join(lines)


# -- ratios, targets, table ---------------------------------------------------------------------


def import_ready(S: dict[str, dict[str, float]], c: str, mode: str) -> float:
    """What a fresh process waits in all: importing the provider, then construction -> READY."""
    return S[c][f"{mode}_import_s"] + S[c][f"{mode}_ready_s"]


def startup_ratios(S: dict[str, dict[str, float]], suffix: str) -> dict[str, float]:
    out = {}
    for mode in ("cold", "warm"):
        out[f"ready {mode} ours/official{suffix}"] = (
            S["ours"][f"{mode}_ready_s"] / S["official"][f"{mode}_ready_s"]
        )
        out[f"import+ready {mode} ours/official{suffix}"] = import_ready(
            S, "ours", mode
        ) / import_ready(S, "official", mode)
    return out


def ratios(rep: Repeat) -> dict[str, float]:
    L, T, S, B = rep.latency, rep.throughput, rep.startup, rep.background
    ps = L["provider_sync"]
    return {
        "provider_sync.median ours/official": ps["ours"]["median_us"] / ps["official"]["median_us"],
        "provider_sync.p99 ours/official": ps["ours"]["p99_us"] / ps["official"]["p99_us"],
        "provider_sync.median ours/floor": ps["ours"]["median_us"] / ps["floor"]["median_us"],
        "client_sync.median ours/official": L["client_sync"]["ours"]["median_us"]
        / L["client_sync"]["official"]["median_us"],
        "client_sync.median ours/floor": L["client_sync"]["ours"]["median_us"]
        / L["client_sync"]["floor"]["median_us"],
        "client_async.median ours/official": L["client_async"]["ours"]["median_us"]
        / L["client_async"]["official"]["median_us"],
        "client_async.median ours/floor": L["client_async"]["ours"]["median_us"]
        / L["client_async"]["floor"]["median_us"],
        "client_async/client_sync median (ours)": L["client_async"]["ours"]["median_us"]
        / L["client_sync"]["ours"]["median_us"],
        "client_async/client_sync median (official)": L["client_async"]["official"]["median_us"]
        / L["client_sync"]["official"]["median_us"],
        "object.median ours/official": L["object"]["ours"]["median_us"]
        / L["object"]["official"]["median_us"],
        "object.p99 ours/official": L["object"]["ours"]["p99_us"]
        / L["object"]["official"]["p99_us"],
        "throughput provider 2t/1t (ours)": T["provider_sync"]["ours"]["scaling"],
        "throughput provider 2t/1t (official)": T["provider_sync"]["official"]["scaling"],
        "throughput provider 1t ours/official": T["provider_sync"]["ours"]["t1"]
        / T["provider_sync"]["official"]["t1"],
        "throughput client 2t/1t (ours)": T["client_sync"]["ours"]["scaling"],
        "throughput client 2t/1t (official)": T["client_sync"]["official"]["scaling"],
        "throughput client 2t/1t (floor)": T["client_sync"]["floor"]["scaling"],
        "ready cold ours/official": S["ours"]["cold_ready_s"] / S["official"]["cold_ready_s"],
        "ready warm ours/official": S["ours"]["warm_ready_s"] / S["official"]["warm_ready_s"],
        "ready warm ours (ms)": S["ours"]["warm_ready_s"] * 1e3,
        "rss after init ours/official": S["ours"]["warm_rss_kb"] / S["official"]["warm_rss_kb"],
        **startup_ratios(S, ""),
        **(startup_ratios(rep.startup_large, " (2,000 flags)") if rep.startup_large else {}),
        "swaps p99/quiet p99 (ours)": B["ours"]["swaps"]["p99_us"] / B["ours"]["quiet"]["p99_us"],
        "swaps p99/quiet p99 (official)": B["official"]["swaps"]["p99_us"]
        / B["official"]["quiet"]["p99_us"],
        "flushes p99/quiet p99 (ours)": B["ours"]["flushes"]["p99_us"]
        / B["ours"]["quiet_unique"]["p99_us"],
        "flushes p99/quiet p99 (official)": B["official"]["flushes"]["p99_us"]
        / B["official"]["quiet_unique"]["p99_us"],
    }


#: (ratio key, comparison, bound, description)
TARGETS: Final = (
    ("provider_sync.median ours/official", "<=", 1 / 20, "provider sync median <= 1/20 official"),
    ("provider_sync.p99 ours/official", "<=", 1 / 10, "provider sync p99 <= 1/10 official"),
    ("client_sync.median ours/floor", "<=", 2.0, "client.get_boolean_details <= 2x floor"),
    ("client_async/client_sync median (ours)", "<=", 1.2, "async <= 1.2x our sync"),
    ("throughput provider 2t/1t (ours)", ">=", 1.3, "2 threads >= 1.3x one thread"),
    ("ready cold ours/official", "<=", 0.5, "time to READY (cold) <= 1/2 official"),
    ("ready warm ours/official", "<=", 0.5, "time to READY (warm) <= 1/2 official"),
    ("ready warm ours (ms)", "<=", 100.0, "warm start with module cache <= 100 ms"),
    ("rss after init ours/official", "<=", 1.0, "RSS after init <= official"),
    ("import+ready warm ours/official", "<=", 0.75, "import + READY (warm) <= 0.75x official"),
    ("import+ready cold ours/official", "<=", 0.75, "import + READY (cold) <= 0.75x official"),
    (
        "ready warm ours/official (2,000 flags)",
        "<=",
        0.5,
        "2,000 flags: READY (warm) <= 1/2 official",
    ),
    (
        "ready cold ours/official (2,000 flags)",
        "<=",
        0.5,
        "2,000 flags: READY (cold) <= 1/2 official",
    ),
    (
        "import+ready warm ours/official (2,000 flags)",
        "<=",
        0.75,
        "2,000 flags: import + READY (warm) <= 0.75x official",
    ),
    (
        "import+ready cold ours/official (2,000 flags)",
        "<=",
        0.75,
        "2,000 flags: import + READY (cold) <= 0.75x official",
    ),
    ("swaps p99/quiet p99 (ours)", "<=", 3.0, "p99 during swaps <= 3x p99 without"),
)


def met(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def fmt_us(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def render(repeats: list[Repeat], meta: dict[str, Any]) -> str:
    lines: list[str] = []
    med = statistics.median
    lines.append(
        f"Run {meta['when']} on {meta['machine']}; {len(repeats)} repeat(s); values are the "
        "median over repeats with [min-max] across repeats. Times in µs unless noted."
    )
    lines.append("")
    lines.append(
        "| figure | ours median / p99 | official median / p99 | floor median / p99 | "
        "ours/official (median) | ours/floor (median) |"
    )
    lines.append("|---|---|---|---|---|---|")
    names = {
        "provider_sync": "provider `resolve_boolean_details` (sync)",
        "client_sync": "`client.get_boolean_details`",
        "client_async": "`client.get_boolean_details_async`",
        "object": "provider `resolve_object_details`, ~8 KB value",
    }
    for fig, label in names.items():
        cells = []
        for c in CONTENDERS:
            if c not in repeats[0].latency[fig]:
                cells.append("-")
                continue
            m = [r.latency[fig][c]["median_us"] for r in repeats]
            p = [r.latency[fig][c]["p99_us"] for r in repeats]
            cells.append(f"{fmt_us(med(m))} / {fmt_us(med(p))}")
        r_off = [
            r.latency[fig]["ours"]["median_us"] / r.latency[fig]["official"]["median_us"]
            for r in repeats
        ]
        r_floor = [
            r.latency[fig]["ours"]["median_us"] / r.latency[fig]["floor"]["median_us"]
            for r in repeats
        ]
        lines.append(f"| {label} | {' | '.join(cells)} | {spread(r_off)} | {spread(r_floor)} |")
    for fig, label in (("provider_sync", "provider"), ("client_sync", "client")):
        cells = []
        for c in CONTENDERS:
            t1 = med([r.throughput[fig][c]["t1"] for r in repeats])
            t2 = med([r.throughput[fig][c]["t2"] for r in repeats])
            sc = [r.throughput[fig][c]["scaling"] for r in repeats]
            cells.append(f"{t1:,.0f}/s → {t2:,.0f}/s (x{spread(sc)})")
        r_off = [
            r.throughput[fig]["ours"]["t1"] / r.throughput[fig]["official"]["t1"] for r in repeats
        ]
        lines.append(
            f"| throughput, {label}, 1 → 2 threads | {' | '.join(cells)} | "
            f"{spread(r_off)} (1 thread) | - |"
        )
    for mode in ("cold", "warm"):
        cells = []
        for c in ("ours", "official"):
            v = [r.startup[c][f"{mode}_ready_s"] * 1e3 for r in repeats]
            cells.append(f"{med(v):,.0f} ms")
        rr = [
            r.startup["ours"][f"{mode}_ready_s"] / r.startup["official"][f"{mode}_ready_s"]
            for r in repeats
        ]
        lines.append(
            f"| construction → READY ({mode}) | {cells[0]} | {cells[1]} | - | {spread(rr)} | - |"
        )
    for mode in ("cold", "warm"):
        # What a process waits in all: importing the provider, then construction -> READY.
        def total(r: Repeat, c: str, mode: str = mode) -> float:
            return (r.startup[c][f"{mode}_import_s"] + r.startup[c][f"{mode}_ready_s"]) * 1e3

        cells = [f"{med([total(r, c) for r in repeats]):,.0f} ms" for c in ("ours", "official")]
        rr = [total(r, "ours") / total(r, "official") for r in repeats]
        lines.append(
            f"| import + construction → READY ({mode}) | {cells[0]} | {cells[1]} | - | "
            f"{spread(rr)} | - |"
        )
    if all(r.startup_large for r in repeats):
        for mode in ("cold", "warm"):
            for what, fn in (
                ("construction → READY", lambda S, c, m: S[c][f"{m}_ready_s"]),
                ("import + construction → READY", import_ready),
            ):
                cells = [
                    f"{med([fn(r.startup_large, c, mode) * 1e3 for r in repeats]):,.0f} ms"
                    for c in ("ours", "official")
                ]
                rr = [
                    fn(r.startup_large, "ours", mode) / fn(r.startup_large, "official", mode)
                    for r in repeats
                ]
                lines.append(
                    f"| 2,000-flag state: {what} ({mode}) | {cells[0]} | {cells[1]} | - | "
                    f"{spread(rr)} | - |"
                )
    cells = []
    for c in ("ours", "official"):
        v = [r.startup[c]["warm_rss_kb"] / 1024 for r in repeats]
        cells.append(f"{med(v):,.1f} MiB")
    rr = [r.startup["ours"]["warm_rss_kb"] / r.startup["official"]["warm_rss_kb"] for r in repeats]
    lines.append(
        f"| RSS after init (default pool) | {cells[0]} | {cells[1]} | - | {spread(rr)} | - |"
    )
    for mode, base, label in (
        ("swaps", "quiet", "p99 while the state is swapped every 100 ms (vs none)"),
        ("flushes", "quiet_unique", "p99 while logs are flushed every 100 ms (vs none)"),
    ):
        cells = []
        for c in ("ours", "official"):
            a = med([r.background[c][mode]["p99_us"] for r in repeats])
            b = med([r.background[c][base]["p99_us"] for r in repeats])
            x = [r.background[c][mode]["p99_us"] / r.background[c][base]["p99_us"] for r in repeats]
            cells.append(f"{fmt_us(a)} vs {fmt_us(b)} (x{spread(x)})")
        rr = [
            r.background["ours"][mode]["p99_us"] / r.background["official"][mode]["p99_us"]
            for r in repeats
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | - | {spread(rr)} | - |")
    lines.append("")
    lines.append(
        "| target | ratio: median [min-max] over repeats | met (median) | met in every repeat |"
    )
    lines.append("|---|---|---|---|")
    all_ratios = [ratios(r) for r in repeats]
    for key, op, bound, desc in TARGETS:
        if not all(key in r for r in all_ratios):
            continue
        vals = [r[key] for r in all_ratios]
        ok = met(med(vals), op, bound)
        every = all(met(v, op, bound) for v in vals)
        lines.append(
            f"| {desc} | {spread(vals)} | {'yes' if ok else '**no**'} | "
            f"{'yes' if every else 'no'} |"
        )
    return "\n".join(lines)


def update_readme(
    table: str, markers: tuple[str, str] = (TABLE_START, TABLE_END), title: str = "Latest results"
) -> None:
    start, end = markers
    text = README.read_text() if README.exists() else ""
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    README.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    # A worker that exits mid-poll makes the emulator log a harmless "Connection lost".
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink for a quick look")
    parser.add_argument("--startup-runs", type=int, default=2)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only these parts (repeatable)"
    )
    parser.add_argument(
        "--sustained-calls",
        type=int,
        default=1_000_000,
        help="sustained: evaluations per population for ours and the floor",
    )
    parser.add_argument(
        "--sustained-official-calls",
        type=int,
        default=60_000,
        help="sustained: evaluations per population for the official provider (it costs"
        " ~0.3-0.7 ms each: 1M would take 5-12 min per population on this VM)",
    )
    parser.add_argument("--peer-rounds", type=int, default=20)
    parser.add_argument("--peer-calls", type=int, default=2000)
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="only a soak of ours for SECONDS"
    )
    parser.add_argument("--soak-population", choices=POPULATIONS, default="unique")
    args = parser.parse_args(argv)

    parts: list[str] = list(args.only or ([] if args.soak else PARTS))
    ensure_official_venv()
    # Steady-state figures measure the optimized resolver, not a cold start's quick code.
    precompile()
    state_a = bench_state.bench_state()
    state_b = bench_state.toggled(state_a)
    secret = bench_state.client_secret()
    key = bench_state.encryption_key_hex()
    repeated = [p for p in parts if p in REPEATED_PARTS]
    repeats: list[Repeat] = []
    sustained: Sustained | None = None
    peers: dict[str, Any] | None = None
    soak: list[dict[str, float]] | None = None
    t_start = time.time()
    with (
        grpc_sink() as grpc_target,
        ConfidenceEmulator(client_secret=secret, encryption_key=key).run_in_thread() as emulator,
        ConfidenceEmulator(
            client_secret=bench_state.LARGE_SECRET, encryption_key=key
        ).run_in_thread() as large_emulator,
    ):
        emulator.set_state(state_a, account_id=bench_state.ACCOUNT)
        setup = Setup(
            emulator=emulator,
            grpc_target=grpc_target,
            secret=secret,
            key=key,
            large_value=json.dumps(bench_state.large_value()),
            state_a=state_a,
            state_b=state_b,
        )
        large = bench_state.large_state() if "startup" in parts else b""
        large_emulator.set_state(large, account_id=bench_state.LARGE_ACCOUNT)
        large_setup = Setup(
            emulator=large_emulator,
            grpc_target=grpc_target,
            secret=bench_state.LARGE_SECRET,
            key=key,
            large_value="",
            state_a=large,
            state_b=large,
        )
        if args.soak:
            soak = run_soak(setup, args.soak, args.soak_population)
        if "peers" in parts:
            print("peers", flush=True)
            peers = run_peers(args.peer_rounds, args.peer_calls)
        if "sustained" in parts:
            print("sustained", flush=True)
            n = max(SUSTAINED_CHUNKS * 10, int(args.sustained_calls * args.scale))
            n_off = max(SUSTAINED_CHUNKS * 10, int(args.sustained_official_calls * args.scale))
            sustained = run_sustained(setup, {"ours": n, "official": n_off, "floor": n})
        for i in range(args.repeats if repeated else 0):
            print(f"repeat {i + 1}/{args.repeats}", flush=True)
            rep = Repeat(index=i)
            if "steady" in parts:
                run_steady(setup, rep, args.scale)
            if "startup" in parts:
                rep.startup = run_startup(setup, rep, args.startup_runs)
                rep.startup_large = run_startup(
                    large_setup, rep, args.startup_runs, label="2,000-flag state"
                )
            if "background" in parts:
                run_background(setup, rep, args.scale)
            repeats.append(rep)
            emulator.clear_records()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(t_start)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "official_version": OFFICIAL_VERSION,
        "duration_s": time.time() - t_start,
        "scale": args.scale,
        "parts": parts,
    }
    full = set(REPEATED_PARTS) <= set(parts)
    doc: dict[str, Any] = {
        "meta": meta,
        "repeats": [
            {
                "latency": r.latency,
                "throughput": r.throughput,
                "startup": r.startup,
                "startup_large": r.startup_large,
                "background": r.background,
                "rss_loaded_kb": r.rss_loaded_kb,
                "checks": r.checks,
                "ratios": ratios(r) if full else {},
            }
            for r in repeats
        ],
    }
    if sustained is not None:
        doc["sustained"] = {
            "calls": sustained.calls,
            "chunks": sustained.chunks,
            "rss_start_kb": sustained.rss_start_kb,
            "ratios": sustained_ratios(sustained),
        }
    if peers is not None:
        doc["peers"] = {**peers, "ratios": peer_ratios(peers)}
    if soak is not None:
        doc["soak"] = soak
    RESULTS.mkdir(exist_ok=True)
    name = "soak.json" if args.soak and not parts else "latest.json"
    (RESULTS / name).write_text(json.dumps(doc, indent=2) + "\n")
    write_readme = not args.no_readme and args.scale == 1.0
    if sustained is not None:
        table = render_sustained(sustained, meta)
        print("\n" + table)
        if write_readme:
            update_readme(table, SUSTAINED_MARKERS, "Sustained traffic (latest run)")
    if peers is not None:
        table = render_peers(peers, meta)
        print("\n" + table)
        if write_readme:
            update_readme(table, PEERS_MARKERS, "Peers (latest run)")
    if repeats and full:
        table = render(repeats, meta)
        print("\n" + table)
        if write_readme:
            update_readme(table)
    elif repeats:
        print(json.dumps(doc["repeats"][-1], indent=1)[:4000])
    print(
        f"\nwrote {RESULTS / name}"
        + (f" and {README}" if write_readme and (sustained or peers or full) else "")
        + f" ({meta['duration_s'] / 60:.1f} min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
