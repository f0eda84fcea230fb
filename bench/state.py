"""The benchmark's resolver states: the real state plus one large object flag.

`../shared/data/resolver_state_current.pb` (account `confidence-test`, protocol.md §2.3) has
three flags with tiny values. The "large object" figure needs a flag with a large value, so
the bench serves the real state with one extra flag, `flags/bench-large-object`, built from
`flags/tutorial-feature` (same client) with one rule on a new, fully allocated segment and a
variant holding ~200 fields (strings, numbers, bools, a nested struct and a list).

`toggled()` is the same state with a changed description on one flag: serving it and the
original alternately makes every poll a real swap (new content, new flag digest).

Runs in our environment only (it imports our generated protobuf classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from google.protobuf import json_format, struct_pb2

from confidence._proto.confidence.flags.admin.v1 import resolver_pb2

ROOT: Final = Path(__file__).resolve().parent.parent
DATA_DIR: Final = ROOT.parent / "shared" / "data"
STATE_PATH: Final = DATA_DIR / "resolver_state_current.pb"
KEY_PATH: Final = DATA_DIR / "encryption_key_test.hex"
ACCOUNT: Final = "confidence-test"  # protocol.md §2.3 (data/account_id disagrees)

BOOL_FLAG: Final = "fallthrough-test-2"  # two rules, one with a 0.5556 bitset segment
BOOL_KEY: Final = f"{BOOL_FLAG}.enabled"
LARGE_FLAG: Final = "bench-large-object"
LARGE_SEGMENT: Final = "segments/bench-everyone"


def large_value() -> dict[str, Any]:
    """The large object flag's value (~9 KB of JSON)."""
    value: dict[str, Any] = {}
    for i in range(60):
        value[f"title_{i:03d}"] = f"Welcome banner variant {i} — lorem ipsum dolor sit amet"
        value[f"weight_{i:03d}"] = float(i) * 1.5
        value[f"enabled_{i:03d}"] = i % 2 == 0
    value["nested"] = {f"k{i}": {"label": f"item {i}", "rank": float(i)} for i in range(20)}
    value["items"] = [f"entry-{i}" for i in range(30)]
    return value


def _schema_for(value: dict[str, Any]) -> dict[str, Any]:
    def kind(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolSchema": {}}
        if isinstance(v, float):
            return {"doubleSchema": {}}
        if isinstance(v, str):
            return {"stringSchema": {}}
        if isinstance(v, dict):
            return {"structSchema": {"schema": {k: kind(x) for k, x in v.items()}}}
        if isinstance(v, list):
            return {"listSchema": {"elementSchema": kind(v[0])}}
        raise TypeError(type(v))

    return {"schema": {k: kind(v) for k, v in value.items()}}


def real_state() -> bytes:
    return STATE_PATH.read_bytes()


def client_secret(state: bytes | None = None) -> str:
    parsed = resolver_pb2.ResolverState.FromString(state if state is not None else real_state())
    return str(parsed.client_credentials[0].client_secret.secret)


def encryption_key_hex() -> str:
    return KEY_PATH.read_text().strip()


def bench_state() -> bytes:
    """The real state plus `flags/bench-large-object`."""
    state = resolver_pb2.ResolverState.FromString(real_state())
    template = next(f for f in state.flags if f.name == "flags/tutorial-feature")
    name = f"flags/{LARGE_FLAG}"
    variant = f"{name}/variants/large"
    value = large_value()
    flag = resolver_pb2.Flag()
    flag.name = name
    flag.state = template.state
    flag.clients.extend(template.clients)
    json_format.ParseDict(_schema_for(value), flag.schema)
    v = flag.variants.add()
    v.name = variant
    s = struct_pb2.Struct()
    s.update(value)
    v.value.CopyFrom(s)
    rule = flag.rules.add()
    rule.name = f"{name}/rules/everyone"
    rule.segment = LARGE_SEGMENT
    rule.targeting_key_selector = "visitor_id"
    rule.enabled = True
    rule.assignment_spec.bucket_count = 10000
    a = rule.assignment_spec.assignments.add()
    a.assignment_id = "large"
    a.variant.variant = variant
    a.bucket_ranges.add(lower=0, upper=10000)
    state.flags.append(flag)
    segment = state.segments_no_bitsets.add()
    segment.name = LARGE_SEGMENT
    segment.state = next(iter(state.segments_no_bitsets)).state
    return state.SerializeToString()


def toggled(state: bytes) -> bytes:
    """`state` with a different description on the tutorial flag (a real content change)."""
    parsed = resolver_pb2.ResolverState.FromString(state)
    for f in parsed.flags:
        if f.name == "flags/tutorial-feature":
            f.description = (f.description or "") + " (bench toggle)"
    return parsed.SerializeToString()


# -- a large built state (issue 12 item 5) -----------------------------------------------------

LARGE_ACCOUNT: Final = "bench-large"
LARGE_SECRET: Final = "bench-large-client-secret"
LARGE_FLAGS: Final = 2000
LARGE_SEGMENTS: Final = 300
_COUNTRIES: Final = ("SE", "US", "DE", "FR", "GB", "NO", "DK", "FI", "ES", "IT")


def _large_segment_targeting(j: int) -> dict[str, Any]:
    """Segment j targets one attribute: a country, a plan set, or an age range (by j % 3)."""
    from confidence.testing.state_builder import attribute_eq, attribute_in

    kind = j % 3
    if kind == 0:
        return attribute_eq("country", _COUNTRIES[j % len(_COUNTRIES)])
    if kind == 1:
        return attribute_in("plan", [f"plan-{(j + k) % 7}" for k in range(3)])
    lo = 18 + j % 40
    return {
        "criteria": {
            "c": {
                "attribute": {
                    "attributeName": "age",
                    "rangeRule": {
                        "startInclusive": {"numberValue": lo},
                        "endExclusive": {"numberValue": lo + 10},
                    },
                }
            }
        },
        "expression": {"ref": "c"},
    }


def large_state(flags: int = LARGE_FLAGS, segments: int = LARGE_SEGMENTS) -> bytes:
    """A `ResolverState` built with `StateBuilder`: `flags` flags with 2 variants and 3
    attribute-targeted 50/50 rules each, over `segments` shared segments."""
    from confidence.testing.state_builder import StateBuilder, rollout

    b = StateBuilder(account=LARGE_ACCOUNT).client(LARGE_SECRET)
    for j in range(segments):
        b.segment(f"segments/bench-{j:03d}", targeting=_large_segment_targeting(j))
    schema = {"schema": {"enabled": {"boolSchema": {}}}}
    for i in range(flags):
        name = f"flags/bench-flag-{i:04d}"
        on, off = f"{name}/variants/on", f"{name}/variants/off"
        b.flag(
            name,
            variants={on: {"enabled": True}, off: {"enabled": False}},
            rules=[
                rollout(f"segments/bench-{(3 * i + k) % segments:03d}", {on: 50, off: 50})
                for k in range(3)
            ],
            schema=schema,
        )
    return b.build()


# -- the peer comparison's state (issue 12 item 6) -----------------------------------------------

PEER_ACCOUNT: Final = "bench-peers"
PEER_SECRET: Final = "bench-peers-client-secret"
SIMPLE_FLAG: Final = "simple"  # country == "SE" -> 50/50 on/off, else off
COMPLEX_FLAG: Final = "complex"  # 10 rules x (country in 100 codes, version range, age range)


def complex_rules() -> list[tuple[list[str], tuple[str, str], tuple[int, int]]]:
    """Rule k: country in 100 codes, version in (k.0.0, k+1.0.0), age in (17+k, 66+k), all
    bounds exclusive (every peer can say exclusive). The code lists overlap by half, so a user
    is in one or two lists and the version decides."""
    return [
        (
            [f"C{c:04d}" for c in range(k * 50, k * 50 + 100)],
            (f"{k}.0.0", f"{k + 1}.0.0"),
            (17 + k, 66 + k),
        )
        for k in range(10)
    ]


def peer_state() -> bytes:
    """Our form of the two peer flags (the other peers' forms are in bench/peers.py)."""
    from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

    b = StateBuilder(account=PEER_ACCOUNT).client(PEER_SECRET)
    b.segment("segments/sweden", targeting=attribute_eq("country", "SE"))
    schema = {"schema": {"enabled": {"boolSchema": {}}}}
    simple = f"flags/{SIMPLE_FLAG}"
    on, off = f"{simple}/variants/on", f"{simple}/variants/off"
    b.flag(
        simple,
        variants={on: {"enabled": True}, off: {"enabled": False}},
        rules=[rollout("segments/sweden", {on: 50, off: 50}, bucket_count=100)],
        schema=schema,
    )
    cx = f"flags/{COMPLEX_FLAG}"
    cx_on = f"{cx}/variants/on"
    rules = []
    for k, (codes, (v_lo, v_hi), (a_lo, a_hi)) in enumerate(complex_rules()):
        seg = f"segments/complex-{k}"
        b.segment(
            seg,
            targeting={
                "criteria": {
                    "country": {
                        "attribute": {
                            "attributeName": "country",
                            "setRule": {"values": [{"stringValue": c} for c in codes]},
                        }
                    },
                    "version": {
                        "attribute": {
                            "attributeName": "version",
                            "rangeRule": {
                                "startExclusive": {"versionValue": {"version": v_lo}},
                                "endExclusive": {"versionValue": {"version": v_hi}},
                            },
                        }
                    },
                    "age": {
                        "attribute": {
                            "attributeName": "age",
                            "rangeRule": {
                                "startExclusive": {"numberValue": a_lo},
                                "endExclusive": {"numberValue": a_hi},
                            },
                        }
                    },
                },
                "expression": {
                    "and": {"operands": [{"ref": "country"}, {"ref": "version"}, {"ref": "age"}]}
                },
            },
        )
        rules.append(rollout(seg, {cx_on: 100}, bucket_count=100, name=f"{cx}/rules/r{k}"))
    b.flag(
        cx,
        variants={cx_on: {"enabled": True}, f"{cx}/variants/off": {"enabled": False}},
        rules=rules,
        schema=schema,
    )
    return b.build()
