"""One contender of the benchmark, in its own process, driven over stdin/stdout.

    python bench/worker.py --contender ours|official|floor --base-url URL ...

`ours` and `floor` run in the project's environment; `official` runs in
`bench/.venv-official`, where `confidence` is the official provider 0.15.3 (so this file
imports no `confidence` module at top level and nothing from the project).

Protocol: one JSON command per stdin line, one JSON answer per stdout line. The worker sits
idle in `readline()` while another contender is measured, so contenders never overlap.

Commands: `latency` (timed calls, returns the samples in ns), `throughput` (calls/s over
N threads), `latency_for` (timed calls for a while, for the background-activity figures),
`rss`, `quit`. With `--startup`, the worker instead times construction → READY once, prints
one JSON line and exits (fresh process per measurement: cold and warm starts).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

BOOL_FLAG = "fallthrough-test-2"
BOOL_KEY = f"{BOOL_FLAG}.enabled"
LARGE_FLAG = "bench-large-object"

#: The sustained figure's flags, one per call in turn: two boolean flags whose rules match
#: (a 90/10 fallthrough rule then a 50/50 rule, and a one-rule flag), and a string flag whose
#: only rule (visitor_id == "tutorial_visitor") never matches these users (default value).
SUSTAINED_FLAGS = (
    ("bool", BOOL_KEY, False),
    ("bool", "fallthrough-test-1.enabled", False),
    ("str", "tutorial-feature.title", ""),
)
ZIPF_USERS = 1_000_000
ZIPF_S = 1.0

_now = time.perf_counter_ns


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def contexts(n: int, *, unique_from: int | None = None) -> list[EvaluationContext]:
    """`n` users; cycling ids 0..n-1, or fresh ids from `unique_from` (every exposure new)."""
    base = 0 if unique_from is None else unique_from
    return [
        EvaluationContext(
            targeting_key=f"user-{base + i}",
            attributes={
                "visitor_id": f"user-{base + i}",
                "country": ("SE", "US", "DE")[i % 3],
                "plan": "premium" if i % 2 else "free",
                "age": 20 + i % 50,
            },
        )
        for i in range(n)
    ]


# -- contenders -------------------------------------------------------------------------------


def make_ours(args: argparse.Namespace) -> Any:
    from confidence.provider import ConfidenceProvider

    kwargs: dict[str, Any] = {}
    if args.pool_size:
        kwargs["pool_size"] = args.pool_size
    return lambda: ConfidenceProvider(
        args.secret,
        encryption_key=args.key,
        cdn_base_url=args.base_url,
        api_base_url=args.base_url,
        state_poll_interval=args.state_poll,
        log_poll_interval=args.log_poll,
        **kwargs,
    )


def make_official(args: argparse.Namespace) -> Any:
    import grpc
    import httpx

    from confidence import ConfidenceProvider

    target = httpx.URL(args.base_url)

    class ToLoopback(httpx.HTTPTransport):
        """Sends the state fetch (CDN URL) to the emulator on 127.0.0.1 instead."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            request.url = request.url.copy_with(
                scheme=target.scheme, host=target.host, port=target.port
            )
            request.headers["Host"] = f"{target.host}:{target.port}"
            return super().handle_request(request)

    return lambda: ConfidenceProvider(
        client_secret=args.secret,
        encryption_key=args.key,
        state_poll_interval=args.state_poll,
        log_poll_interval=args.log_poll,
        http_client=httpx.Client(transport=ToLoopback(), timeout=30.0),
        # Flag logs go to the bench's gRPC sink on loopback (bench/grpc_sink.py).
        grpc_channel=grpc.insecure_channel(args.grpc_target),
    )


def make_floor(args: argparse.Namespace) -> Any:
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    large = json.loads(args.large_value) if args.large_value else {}
    return lambda: InMemoryProvider(
        {
            BOOL_KEY: InMemoryFlag(default_variant="on", variants={"on": True, "off": False}),
            "fallthrough-test-1.enabled": InMemoryFlag(
                default_variant="on", variants={"on": True, "off": False}
            ),
            "tutorial-feature.title": InMemoryFlag(
                default_variant="w", variants={"w": "Warm welcome to Confidence!"}
            ),
            LARGE_FLAG: InMemoryFlag(default_variant="large", variants={"large": large}),
        }
    )


#: contender -> (args -> constructor); the factory does the imports, so construction → READY
#: excludes import time (reported separately as `import_s`).
FACTORIES: dict[str, Callable[[argparse.Namespace], Callable[[], Any]]] = {
    "ours": make_ours,
    "official": make_official,
    "floor": make_floor,
}


# -- measurements ----------------------------------------------------------------------------


class Population:
    """The sustained figure's users, the same sequence in every contender's process.

    `unique`: every call a new targeting key. `zipf`: keys drawn from 1,000,000 users with
    P(rank k) ~ 1/k^s (s = 1: the top user gets ~7 % of calls, and about half of the calls
    go to users seen before), seeded, so every contender sees the same draws.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.next = 0
        self.rng = random.Random(12)
        # 8 bytes per user (a list of floats would be ~32 MB, and show in RSS).
        self.cum = array.array("d")
        if kind == "zipf":
            total = 0.0
            for k in range(1, ZIPF_USERS + 1):
                total += k**-ZIPF_S
                self.cum.append(total)

    def ids(self, n: int) -> list[int]:
        if self.kind == "unique":
            start = self.next
            self.next += n
            return list(range(start, start + n))
        return self.rng.choices(range(ZIPF_USERS), cum_weights=self.cum, k=n)


def sustained_ctx(prefix: str, uid: int) -> EvaluationContext:
    key = f"{prefix}-{uid}"
    return EvaluationContext(
        targeting_key=key,
        attributes={
            "visitor_id": key,
            "country": ("SE", "US", "DE")[uid % 3],
            "plan": "premium" if uid % 2 else "free",
            "age": 20 + uid % 50,
        },
    )


class Worker:
    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.client = api.get_client()
        self.ctxs = contexts(1000)
        self.unique_next = 10_000_000
        self.populations: dict[str, Population] = {}
        self.calls_done = 0

    def _ctx_list(self, n: int, keys: str) -> list[EvaluationContext]:
        if keys == "unique":
            ctxs = contexts(n, unique_from=self.unique_next)
            self.unique_next += n
            return ctxs
        return [self.ctxs[i % len(self.ctxs)] for i in range(n)]

    def call_for(self, figure: str) -> Callable[[EvaluationContext], Any]:
        p, c = self.provider, self.client
        if figure == "provider_sync":
            return lambda ctx: p.resolve_boolean_details(BOOL_KEY, False, ctx)
        if figure == "client_sync":
            return lambda ctx: c.get_boolean_details(BOOL_KEY, False, ctx)
        if figure == "object":
            return lambda ctx: p.resolve_object_details(LARGE_FLAG, {}, ctx)
        raise ValueError(figure)

    def check(self) -> dict[str, Any]:
        """One evaluation of each figure's flag, so the orchestrator can see they agree."""
        ctx = self.ctxs[1]
        b = self.client.get_boolean_details(BOOL_KEY, False, ctx)
        o = self.client.get_object_details(LARGE_FLAG, {}, ctx)
        return {
            "bool": [b.value, str(b.reason), b.variant, str(b.error_code)],
            "object_keys": len(o.value) if isinstance(o.value, dict) else None,
            "object_reason": str(o.reason),
        }

    def latency(self, figure: str, n: int, keys: str) -> list[int]:
        ctxs = self._ctx_list(n, keys)
        if figure == "client_async":
            return asyncio.run(self._latency_async(ctxs))
        fn = self.call_for(figure)
        for ctx in ctxs[:200]:  # warm the path (caches, instance)
            fn(ctx)
        samples = [0] * n
        now = _now
        gc.collect()
        for i, ctx in enumerate(ctxs):
            t0 = now()
            fn(ctx)
            samples[i] = now() - t0
        return samples

    async def _latency_async(self, ctxs: list[EvaluationContext]) -> list[int]:
        c = self.client
        for ctx in ctxs[:200]:
            await c.get_boolean_details_async(BOOL_KEY, False, ctx)
        samples = [0] * len(ctxs)
        now = _now
        gc.collect()
        for i, ctx in enumerate(ctxs):
            t0 = now()
            await c.get_boolean_details_async(BOOL_KEY, False, ctx)
            samples[i] = now() - t0
        return samples

    def throughput(self, figure: str, threads: int, seconds: float) -> dict[str, Any]:
        fn = self.call_for(figure)
        stop = threading.Event()
        counts = [0] * threads
        barrier = threading.Barrier(threads + 1)

        def loop(slot: int) -> None:
            ctxs = self.ctxs
            n = len(ctxs)
            i = slot * 17
            barrier.wait()
            while not stop.is_set():
                for _ in range(50):
                    fn(ctxs[i % n])
                    i += 1
                counts[slot] += 50

        pool = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
        return {"calls": sum(counts), "elapsed": elapsed, "per_s": sum(counts) / elapsed}

    def prepare(self, population: str) -> dict[str, Any]:
        """Build the population and warm the path (2,000 calls of it, untimed), so RSS
        before the first chunk counts the provider, not the bench's own tables."""
        self.sustained(population, 2000)
        gc.collect()
        return {"rss_kb": rss_kb()}

    def sustained(self, population: str, n: int) -> dict[str, Any]:
        """`n` client evaluations, a new context object per call (built outside the timer),
        the flags of SUSTAINED_FLAGS in turn; the chunk's median/p99 and RSS after it."""
        pop = self.populations.get(population)
        if pop is None:
            pop = self.populations[population] = Population(population)
        prefix = "u" if population == "unique" else "z"
        c = self.client
        getters = [
            (c.get_boolean_details if kind == "bool" else c.get_string_details, key, default)
            for kind, key, default in SUSTAINED_FLAGS
        ]
        nflags = len(getters)
        samples = [0] * n
        now = _now
        t_start = time.perf_counter()
        for i, uid in enumerate(pop.ids(n)):
            ctx = sustained_ctx(prefix, uid)
            get, key, default = getters[(self.calls_done + i) % nflags]
            t0 = now()
            get(key, default, ctx)
            samples[i] = now() - t0
        elapsed = time.perf_counter() - t_start
        self.calls_done += n
        samples.sort()
        return {
            "n": n,
            "median_us": samples[n // 2] / 1e3,
            "p99_us": samples[min(n - 1, int(n * 0.99))] / 1e3,
            "mean_us": sum(samples) / n / 1e3,
            "elapsed_s": elapsed,
            "rss_kb": rss_kb(),
        }

    def sustained_for(self, population: str, seconds: float) -> dict[str, Any]:
        """Sustained chunks of 5,000 calls for about `seconds` (the soak's minute)."""
        samples_med: list[float] = []
        p99: list[float] = []
        calls = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            r = self.sustained(population, 5000)
            samples_med.append(r["median_us"])
            p99.append(r["p99_us"])
            calls += r["n"]
        samples_med.sort()
        p99.sort()
        return {
            "calls": calls,
            "median_us": samples_med[len(samples_med) // 2],
            "p99_us": p99[len(p99) // 2],
            "rss_kb": rss_kb(),
        }

    def latency_for(self, figure: str, seconds: float, keys: str) -> list[int]:
        fn = self.call_for(figure)
        batch = 2000
        samples: list[int] = []
        now = _now
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            ctxs = self._ctx_list(batch, keys)
            for ctx in ctxs:
                t0 = now()
                fn(ctx)
                samples.append(now() - t0)
        return samples


def serve(worker: Worker) -> None:
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "quit":
            break
        if kind == "check":
            reply: Any = worker.check()
        elif kind == "latency":
            reply = {"samples": worker.latency(cmd["figure"], cmd["n"], cmd.get("keys", "cycle"))}
        elif kind == "latency_for":
            reply = {
                "samples": worker.latency_for(
                    cmd["figure"], cmd["seconds"], cmd.get("keys", "cycle")
                )
            }
        elif kind == "prepare":
            reply = worker.prepare(cmd["population"])
        elif kind == "sustained":
            reply = worker.sustained(cmd["population"], cmd["n"])
        elif kind == "sustained_for":
            reply = worker.sustained_for(cmd["population"], cmd["seconds"])
        elif kind == "throughput":
            reply = worker.throughput(cmd["figure"], cmd["threads"], cmd["seconds"])
        elif kind == "rss":
            reply = {"rss_kb": rss_kb()}
        else:
            reply = {"error": f"unknown command {kind}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contender", choices=sorted(FACTORIES), required=True)
    parser.add_argument("--base-url", default="")
    parser.add_argument("--grpc-target", default="")
    parser.add_argument("--secret", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--state-poll", type=float, default=30.0)
    parser.add_argument("--log-poll", type=float, default=10.0)
    parser.add_argument("--pool-size", type=int, default=0)
    parser.add_argument("--large-value", default="")
    parser.add_argument("--startup", action="store_true")
    args = parser.parse_args()

    t_import = time.perf_counter()
    construct = FACTORIES[args.contender](args)
    t0 = time.perf_counter()
    provider = construct()
    api.set_provider_and_wait(provider)
    ready_s = time.perf_counter() - t0
    status = {
        "ready_s": ready_s,
        "import_s": t0 - t_import,
        "rss_kb": rss_kb(),
        "pid": os.getpid(),
    }
    print(json.dumps(status), flush=True)
    if args.startup:
        api.shutdown()
        return 0
    try:
        serve(Worker(provider))
    finally:
        api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
