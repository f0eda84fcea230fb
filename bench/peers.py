"""Peer comparison (issue 12 item 6): local-evaluation SDKs for Python, side by side.

    python bench/peers.py [--rounds 20] [--calls 2000]   (prints one JSON document)

Everything runs offline in this one process, in the bench's virtualenv (`nox -s bench`
installs the peers beside ours): each SDK loads its flags from a file written here, with
no network, and no events / metrics upload where the SDK lets us turn them off.

Two flags, expressed in each SDK's own format with the same meaning:

- `simple`: `country == "SE"` → a 50/50 split between on/off (by the user's key), else off;
- `complex`: 10 rules, each `country in <100 codes> and version in (k.0.0, k+1.0.0) and age
  in (17+k, 66+k)` → on; no rule → off. No split, so every peer must give the same answer
  for the same user (checked before timing; a peer that disagrees is reported, not timed).

Timing: a fresh user (new key, new attributes) per call; each timed call includes building
the SDK's own context object from that user (`EvaluationContext`, an LD `Context`, a
GrowthBook instance, an Unleash context dict), since a request must build one for each SDK.
Rounds alternate between contenders (the order rotates every round); every contender sees
the same users in a round. The figure is the median of all per-call samples.

A peer whose package is missing is skipped and named in `skipped`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import state as bench_state  # noqa: E402
from openfeature import api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

SIMPLE: Final = bench_state.SIMPLE_FLAG
COMPLEX: Final = bench_state.COMPLEX_FLAG
RULES: Final = bench_state.complex_rules()

User = tuple[str, dict[str, Any]]
#: contender -> flag -> call(key, attributes) -> bool
Calls = dict[str, dict[str, Callable[[str, dict[str, Any]], Any]]]


def users(n: int, start: int, rng: random.Random) -> list[User]:
    """`n` fresh users: half of them in SE; a code, version and age for the complex flag."""
    out: list[User] = []
    for i in range(start, start + n):
        out.append(
            (
                f"user-{i}",
                {
                    "country": "SE" if i % 2 else rng.choice(("US", "DE", "FR")),
                    "code": f"C{rng.randrange(600):04d}",
                    "version": f"{rng.randrange(11)}.{rng.randrange(1, 10)}.{rng.randrange(1, 10)}",
                    "age": rng.randrange(10, 90),
                },
            )
        )
    return out


def expected_complex(attrs: dict[str, Any]) -> bool:
    def vt(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    for codes, (v_lo, v_hi), (a_lo, a_hi) in RULES:
        if (
            attrs["code"] in codes
            and vt(v_lo) < vt(attrs["version"]) < vt(v_hi)
            and a_lo < attrs["age"] < a_hi
        ):
            return True
    return False


# The complex flag reads the code from an attribute named `country` in every SDK; the user
# carries the simple flag's country separately, so each call maps `code` -> `country`.


def cx_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"country": attrs["code"], "version": attrs["version"], "age": attrs["age"]}


def sx_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"country": attrs["country"]}


# -- contenders --------------------------------------------------------------------------------

#: The two measured flags and how each maps a user's attributes.
FLAGS: Final = ((SIMPLE, sx_attrs), (COMPLEX, cx_attrs))


def via_client(client: Any, suffix: str = "") -> dict[str, Callable[[str, dict[str, Any]], Any]]:
    """Both flags through an OpenFeature client (flag key + `suffix`): the one call shape
    every OpenFeature contender is measured with, so their timings differ only by provider."""
    return {
        f: (
            lambda key, a, k=f + suffix, m=m: client.get_boolean_value(
                k, False, EvaluationContext(targeting_key=key, attributes=m(a))
            )
        )
        for f, m in FLAGS
    }


def direct(provider: Any, suffix: str = "") -> dict[str, Callable[[str, dict[str, Any]], Any]]:
    """Both flags through `provider.resolve_boolean_details` itself, skipping the SDK."""
    return {
        f: (
            lambda key, a, k=f + suffix, m=m: provider.resolve_boolean_details(
                k, False, EvaluationContext(targeting_key=key, attributes=m(a))
            ).value
        )
        for f, m in FLAGS
    }


def setup_floor(calls: Calls, tmp: Path) -> None:
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    flag = InMemoryFlag(default_variant="on", variants={"on": True, "off": False})
    api.set_provider_and_wait(InMemoryProvider({SIMPLE: flag, COMPLEX: flag}), domain="floor")
    client = api.get_client("floor")
    calls["floor (InMemoryProvider via client)"] = via_client(client)


def setup_ours(calls: Calls, tmp: Path) -> None:
    from confidence.provider import ConfidenceProvider

    path = tmp / "ours.pb"
    path.write_bytes(bench_state.peer_state())
    provider = ConfidenceProvider(
        bench_state.PEER_SECRET,
        state_file=path,
        account_id=bench_state.PEER_ACCOUNT,
        offline=True,
    )
    api.set_provider_and_wait(provider, domain="ours")
    client = api.get_client("ours")
    calls["ours, provider called directly"] = direct(provider, ".enabled")
    calls["ours via client"] = via_client(client, ".enabled")


def flagd_doc() -> dict[str, Any]:
    def rule(codes: list[str], v: tuple[str, str], a: tuple[int, int]) -> dict[str, Any]:
        return {
            "and": [
                {"in": [{"var": "country"}, codes]},
                {"sem_ver": [{"var": "version"}, ">", v[0]]},
                {"sem_ver": [{"var": "version"}, "<", v[1]]},
                {"<": [a[0], {"var": "age"}, a[1]]},
            ]
        }

    return {
        "flags": {
            SIMPLE: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {
                    "if": [
                        {"==": [{"var": "country"}, "SE"]},
                        {"fractional": [["on", 50], ["off", 50]]},
                        "off",
                    ]
                },
            },
            COMPLEX: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"if": [*(x for r in RULES for x in (rule(*r), "on")), "off"]},
            },
        }
    }


def setup_flagd(calls: Calls, tmp: Path) -> None:
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    path = tmp / "flagd.json"
    path.write_text(json.dumps(flagd_doc()))
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    api.set_provider_and_wait(provider, domain="flagd")
    client = api.get_client("flagd")
    calls["flagd in-process (FILE), called directly"] = direct(provider)
    calls["flagd via client"] = via_client(client)


def ld_doc() -> dict[str, Any]:
    def flag(key: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "key": key,
            "version": 1,
            "on": True,
            "variations": [True, False],
            "offVariation": 1,
            "fallthrough": {"variation": 1},
            "targets": [],
            "contextTargets": [],
            "prerequisites": [],
            "rules": rules,
            "salt": f"{key}-salt",
            "trackEvents": False,
        }

    def clause(attr: str, op: str, values: list[Any]) -> dict[str, Any]:
        return {"contextKind": "user", "attribute": attr, "op": op, "values": values}

    simple = flag(
        SIMPLE,
        [
            {
                "id": "se",
                "clauses": [clause("country", "in", ["SE"])],
                "rollout": {
                    "variations": [
                        {"variation": 0, "weight": 50000},
                        {"variation": 1, "weight": 50000},
                    ]
                },
            }
        ],
    )
    cx = flag(
        COMPLEX,
        [
            {
                "id": f"r{k}",
                "clauses": [
                    clause("country", "in", codes),
                    clause("version", "semVerGreaterThan", [v[0]]),
                    clause("version", "semVerLessThan", [v[1]]),
                    clause("age", "greaterThan", [a[0]]),
                    clause("age", "lessThan", [a[1]]),
                ],
                "variation": 0,
            }
            for k, (codes, v, a) in enumerate(RULES)
        ],
    )
    return {"flags": {SIMPLE: simple, COMPLEX: cx}}


def ld_config(path: Path) -> Any:
    from ldclient.config import Config
    from ldclient.integrations import Files

    return Config(
        "bench-sdk-key",
        update_processor_class=Files.new_data_source(paths=[str(path)]),
        send_events=False,
        diagnostic_opt_out=True,
    )


def setup_ld(calls: Calls, tmp: Path) -> None:
    from ldclient import Context, LDClient

    path = tmp / "ld.json"
    path.write_text(json.dumps(ld_doc()))
    ld = LDClient(config=ld_config(path), start_wait=5)
    if not ld.is_initialized():
        raise RuntimeError("LaunchDarkly client did not initialize from the file")

    def ctx(key: str, attrs: dict[str, Any]) -> Any:
        b = Context.builder(key)
        for k, v in attrs.items():
            b.set(k, v)
        return b.build()

    calls["LaunchDarkly variation() (file data source, events off)"] = {
        f: (lambda key, a, f=f, m=m: ld.variation(f, ctx(key, m(a)), False))
        for f, m in FLAGS
    }
    try:
        from ld_openfeature import LaunchDarklyProvider
    except ImportError:
        return
    api.set_provider_and_wait(LaunchDarklyProvider(ld_config(path)), domain="ld")
    client = api.get_client("ld")
    calls["LaunchDarkly via its OpenFeature provider"] = via_client(client)


def growthbook_features() -> dict[str, Any]:
    return {
        SIMPLE: {
            "defaultValue": False,
            "rules": [
                {
                    "condition": {"country": "SE"},
                    "key": f"{SIMPLE}-split",
                    "variations": [True, False],
                    "weights": [0.5, 0.5],
                    "coverage": 1.0,
                    "hashAttribute": "id",
                }
            ],
        },
        COMPLEX: {
            "defaultValue": False,
            "rules": [
                {
                    "condition": {
                        "country": {"$in": codes},
                        "version": {"$vgt": v[0], "$vlt": v[1]},
                        "age": {"$gt": a[0], "$lt": a[1]},
                    },
                    "force": True,
                }
                for codes, v, a in RULES
            ],
        },
    }


def setup_growthbook(calls: Calls, tmp: Path) -> None:
    from growthbook import GrowthBook

    features = growthbook_features()

    def call(flag: str, key: str, attrs: dict[str, Any]) -> bool:
        gb = GrowthBook(attributes={"id": key, **attrs}, features=features)
        return bool(gb.is_on(flag))

    calls["GrowthBook, a new instance per request"] = {
        f: (lambda key, a, f=f, m=m: call(f, key, m(a)))
        for f, m in FLAGS
    }


def unleash_doc() -> dict[str, Any]:
    def constraint(name: str, op: str, **kw: Any) -> dict[str, Any]:
        return {
            "contextName": name,
            "operator": op,
            "caseInsensitive": False,
            "inverted": False,
            **kw,
        }

    return {
        "version": 2,
        "features": [
            {
                "name": SIMPLE,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": "50", "stickiness": "userId", "groupId": SIMPLE},
                        "constraints": [constraint("country", "IN", values=["SE"])],
                    }
                ],
            },
            {
                "name": COMPLEX,
                "enabled": True,
                "strategies": [
                    {
                        "name": "default",
                        "parameters": {},
                        "constraints": [
                            constraint("country", "IN", values=codes),
                            constraint("version", "SEMVER_GT", value=v[0]),
                            constraint("version", "SEMVER_LT", value=v[1]),
                            constraint("age", "NUM_GT", value=str(a[0])),
                            constraint("age", "NUM_LT", value=str(a[1])),
                        ],
                    }
                    for codes, v, a in RULES
                ],
            },
        ],
    }


def setup_unleash(calls: Calls, tmp: Path) -> None:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    path = tmp / "unleash.json"
    path.write_text(json.dumps(unleash_doc()))
    cache = FileCache("bench", directory=str(tmp / "unleash-cache"))
    cache.bootstrap_from_file(path)
    client = UnleashClient(
        url="http://127.0.0.1:9/",  # never contacted: fetch_toggles=False, no metrics
        app_name="bench",
        cache=cache,
        disable_metrics=True,
        disable_registration=True,
    )
    client.initialize_client(fetch_toggles=False)

    def ctx(key: str, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"userId": key, "properties": {k: str(v) for k, v in attrs.items()}}

    calls["Unleash is_enabled() (bootstrapped from a file)"] = {
        f: (lambda key, a, f=f, m=m: client.is_enabled(f, ctx(key, m(a))))
        for f, m in FLAGS
    }


SETUPS: Final = (
    ("floor", setup_floor),
    ("ours", setup_ours),
    ("flagd", setup_flagd),
    ("launchdarkly", setup_ld),
    ("growthbook", setup_growthbook),
    ("unleash", setup_unleash),
)


# -- measurement --------------------------------------------------------------------------------


def check(calls: Calls, sample: list[User]) -> dict[str, dict[str, Any]]:
    """Each contender's answers on `sample`: the complex flag must match `expected_complex`
    exactly; the simple flag must be off outside SE and split roughly in half inside."""
    out: dict[str, dict[str, Any]] = {}
    want = [expected_complex(a) for _, a in sample]
    for name, fns in calls.items():
        if name.startswith("floor"):
            continue
        got_cx = [bool(fns[COMPLEX](k, a)) for k, a in sample]
        got_sx = [bool(fns[SIMPLE](k, a)) for k, a in sample]
        se = [g for g, (_, a) in zip(got_sx, sample, strict=True) if a["country"] == "SE"]
        out[name] = {
            "complex_agrees": got_cx == want,
            "complex_on": sum(got_cx),
            "simple_on_outside_se": sum(
                g for g, (_, a) in zip(got_sx, sample, strict=True) if a["country"] != "SE"
            ),
            "simple_on_share_in_se": sum(se) / max(1, len(se)),
        }
    out["_expected"] = {"complex_on": sum(want), "users": len(sample)}
    return out


def measure(calls: Calls, rounds: int, n: int) -> dict[str, dict[str, list[int]]]:
    rng = random.Random(12)
    names = list(calls)
    samples: dict[str, dict[str, list[int]]] = {
        f: {c: [] for c in names} for f in (SIMPLE, COMPLEX)
    }
    now = time.perf_counter_ns
    start = 1_000_000
    for r in range(rounds):
        for flag in (SIMPLE, COMPLEX):
            batch = users(n, start, rng)
            start += n
            order = names[r % len(names) :] + names[: r % len(names)]
            for c in order:
                fn = calls[c][flag]
                out = samples[flag][c]
                gc.collect()
                for key, attrs in batch:
                    t0 = now()
                    fn(key, attrs)
                    out.append(now() - t0)
    return samples


def summarize(s: list[int]) -> dict[str, float]:
    s = sorted(s)
    n = len(s)
    return {"n": n, "median_us": s[n // 2] / 1e3, "p99_us": s[min(n - 1, int(n * 0.99))] / 1e3}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """SDKs log at INFO/WARNING on start (no network, multiple instances): keep stdout JSON."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000, help="calls per contender per round")
    args = parser.parse_args()
    calls: Calls = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in (
        "openfeature-sdk",
        "openfeature-provider-flagd",
        "launchdarkly-server-sdk",
        "launchdarkly-openfeature-server",
        "growthbook",
        "UnleashClient",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as d, quiet():
        tmp = Path(d)
        for name, setup in SETUPS:
            try:
                setup(calls, tmp)
            except ImportError as exc:
                skipped[name] = f"not installed: {exc.name}"
            except Exception as exc:  # a peer that cannot start is reported, not fatal
                skipped[name] = f"{type(exc).__name__}: {exc}"
        checks = check(calls, users(2000, 0, random.Random(7)))
        bad = [
            c
            for c, v in checks.items()
            if not c.startswith("_")
            and (
                not v["complex_agrees"]
                or v["simple_on_outside_se"]
                or not 0.4 < v["simple_on_share_in_se"] < 0.6
            )
        ]
        for c in bad:
            skipped[c] = f"answers disagree with the flag's definition: {checks[c]}"
            calls.pop(c)
        # One untimed warm-up round (imports, caches, first-call paths).
        measure(calls, 1, 300)
        samples = measure(calls, args.rounds, args.calls)
        api.shutdown()
    doc = {
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "versions": versions,
        "skipped": skipped,
        "checks": checks,
        "results": {f: {c: summarize(s) for c, s in by.items()} for f, by in samples.items()},
        "pid": os.getpid(),
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
