"""`explain`: the resolver's own trace, from code, the CLI and the emulator.

Everything runs on the real resolver.wasm; the provider and emulator tests use real
sockets on 127.0.0.1 and the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from confidence._wasm.abi import MaterializationMode, Resolved, ResolveRequest
from confidence._wasm.pool import ResolverPool
from confidence._wasm.resolve import FlagResolver
from confidence.explain import Explanation
from confidence.testing.emulator import ConfidenceEmulator
from confidence.testing.state_builder import (
    StateBuilder,
    attribute_eq,
    attribute_in,
    rollout,
    state_from_suite_json,
    with_materialization,
)
from tests.provider_support import SECRET, SHARED, make_provider, requires_wasm

pytestmark = requires_wasm

ACCOUNT = "explain-account"
CONFORMANCE = SHARED / "conformance" / "state.json"


def _v(flag: str, name: str) -> str:
    return f"flags/{flag}/variants/{name}"


def _range(attribute: str, low: float, high: float) -> dict[str, Any]:
    return {
        "criteria": {
            "c": {
                "attribute": {
                    "attributeName": attribute,
                    "rangeRule": {
                        "startInclusive": {"numberValue": low},
                        "endExclusive": {"numberValue": high},
                    },
                }
            }
        },
        "expression": {"ref": "c"},
    }


def _materialized(name: str) -> dict[str, Any]:
    return {
        "criteria": {"m": {"materializedSegment": {"materializedSegment": name}}},
        "expression": {"ref": "m"},
    }


def explain_state() -> StateBuilder:
    """Flags with one kind of decision each."""
    ab = {_v("ab", "a"): {"g": "a"}, _v("ab", "b"): {"g": "b"}}
    return (
        StateBuilder(account=ACCOUNT)
        .client(SECRET)
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .segment("segments/adults", targeting=_range("age", 18, 65))
        .segment("segments/nordic", targeting=attribute_in("country", ["NO", "DK"]))
        .segment("segments/vip", targeting=_materialized("materializations/vip"))
        .flag(
            "flags/targeted",
            variants={_v("targeted", "on"): {"on": True}},
            rules=[
                rollout(
                    "segments/sweden", {_v("targeted", "on"): 100}, name="flags/targeted/rules/se"
                ),
                rollout(
                    "segments/adults",
                    {_v("targeted", "on"): 100},
                    name="flags/targeted/rules/adults",
                ),
                rollout(
                    "segments/nordic",
                    {_v("targeted", "on"): 100},
                    name="flags/targeted/rules/nordic",
                ),
            ],
        )
        .flag(
            "flags/half",
            variants=ab,
            rules=[rollout("segments/everyone", {_v("ab", "a"): 50}, bucket_count=100)],
        )
        .flag(
            "flags/custom-key",
            variants=ab,
            rules=[
                rollout(
                    "segments/everyone",
                    {_v("ab", "a"): 50, _v("ab", "b"): 50},
                    targeting_key_selector="user.id",
                )
            ],
        )
        .flag(
            "flags/old",
            variants=ab,
            rules=[rollout("segments/everyone", {_v("ab", "a"): 100})],
            state="ARCHIVED",
        )
        .flag(
            "flags/vip",
            variants={_v("vip", "gold"): {"tier": "gold"}},
            rules=[rollout("segments/vip", {_v("vip", "gold"): 100})],
        )
        .flag(
            "flags/sticky",
            variants=ab,
            rules=[
                with_materialization(
                    rollout("segments/everyone", {_v("ab", "a"): 50, _v("ab", "b"): 50}),
                    write="materializations/sticky",
                    read="materializations/sticky",
                )
            ],
        )
    )


@pytest.fixture(scope="module")
def pool() -> Iterator[ResolverPool]:
    p = ResolverPool(1, enable_apply_dedup=False, disable_exposure_collection=True)
    p.set_state(explain_state().build(), ACCOUNT)
    yield p
    p.close()


def explain(pool: ResolverPool, flag: str, context: dict[str, Any], **kw: Any) -> Explanation:
    request = ResolveRequest(
        flags=(f"flags/{flag}",),
        context_json=json.dumps(context).encode(),
        client_secret=SECRET,
        apply=False,
        **kw,
    )
    return Explanation.from_document(FlagResolver(pool).explain(request))


def first_criterion(e: Explanation, rule: int = 0) -> Any:
    return e.rules[rule].segments[0].criteria[0]


# -- traces ------------------------------------------------------------------------------------


def test_a_match_names_rule_criterion_and_variant(pool: ResolverPool) -> None:
    e = explain(pool, "targeted", {"targeting_key": "u1", "country": "SE"})
    assert (e.presence, e.reason, e.variant) == ("resolved", "MATCH", _v("targeted", "on"))
    assert e.rule == "flags/targeted/rules/se"
    assert len(e.rules) == 1 and e.rules[0].outcome == "match"
    c = first_criterion(e)
    assert (c.attribute, c.seen, c.matched, c.reason) == ("country", "SE", True, None)
    assert e.rules[0].bucketing is not None and e.rules[0].bucketing.full_rollout
    assert e.value == {"on": True}
    assert "match" in e.render()


def test_each_criterion_kind_says_why_it_missed(pool: ResolverPool) -> None:
    e = explain(pool, "targeted", {"targeting_key": "u1", "age": 70, "country": "FI"})
    assert e.reason == "NO_SEGMENT_MATCH" and e.variant == ""
    reasons = [first_criterion(e, i).reason for i in range(3)]
    assert reasons == ["not_equal", "out_of_range", "not_in_list"]
    assert [r.outcome for r in e.rules] == ["segment_not_matched"] * 3
    missing = explain(pool, "targeted", {"targeting_key": "u1"})
    assert first_criterion(missing).reason == "missing_attribute"
    assert first_criterion(missing).present is False
    typed = explain(pool, "targeted", {"targeting_key": "u1", "age": "old", "country": True})
    assert [first_criterion(typed, i).reason for i in range(3)] == ["wrong_type"] * 3


def test_a_bucket_outside_the_allocation(pool: ResolverPool) -> None:
    outcomes = {}
    for n in range(40):
        e = explain(pool, "half", {"targeting_key": f"user-{n}"})
        b = e.rules[0].bucketing
        assert b is not None and b.bucket is not None and b.salt == "everyone"
        outcomes[b.bucket < 50] = e
    inside, outside = outcomes[True], outcomes[False]
    assert inside.reason == "MATCH" and inside.rules[0].bucketing.assignment is not None  # type: ignore[union-attr]
    assert outside.rules[0].outcome == "bucket_not_allocated"
    assert outside.rules[0].bucketing.assignment is None  # type: ignore[union-attr]
    assert outside.reason == "NO_SEGMENT_MATCH" and outside.variant == ""


def test_a_missing_targeting_key(pool: ResolverPool) -> None:
    e = explain(pool, "custom-key", {"targeting_key": "u1"})
    assert e.rules[0].outcome == "targeting_key_missing"
    assert e.rules[0].targeting_key is not None
    assert (e.rules[0].targeting_key.selector, e.rules[0].targeting_key.seen) == ("user.id", None)
    e = explain(pool, "half", {})
    assert e.rules[0].outcome == "no_unit_for_bucketing"
    e = explain(pool, "half", {"targeting_key": 1.5})
    assert (e.rules[0].outcome, e.reason) == ("targeting_key_error", "TARGETING_KEY_ERROR")


def test_an_archived_flag(pool: ResolverPool) -> None:
    e = explain(pool, "old", {"targeting_key": "u1"})
    assert (e.presence, e.reason, e.rules) == ("archived", "FLAG_ARCHIVED", ())
    assert "archived" in e.render()
    assert explain(pool, "nope", {}).presence == "not_found"


def test_a_materialized_segment_and_a_sticky_read(pool: ResolverPool) -> None:
    from confidence._wasm.abi import MaterializationRecord

    no = explain(
        pool, "vip", {"targeting_key": "u1"}, materialization_mode=MaterializationMode.COMPLETE
    )
    assert first_criterion(no).kind == "materialized_segment"
    assert (first_criterion(no).source, first_criterion(no).matched) == ("store", False)
    yes = explain(
        pool,
        "vip",
        {"targeting_key": "u1"},
        materialization_mode=MaterializationMode.COMPLETE,
        materializations=(MaterializationRecord("u1", "materializations/vip"),),
    )
    assert (yes.reason, yes.variant) == ("MATCH", _v("vip", "gold"))
    rule = "flags/sticky/rules/rule-0"
    sticky = explain(
        pool,
        "sticky",
        {"targeting_key": "u1"},
        materialization_mode=MaterializationMode.COMPLETE,
        materializations=(
            MaterializationRecord("u1", "materializations/sticky", rule, _v("ab", "b")),
        ),
    )
    read = sticky.rules[0].materialization_read
    assert read is not None and (read.answer, read.variant) == ("recorded", _v("ab", "b"))
    assert sticky.variant == _v("ab", "b") and sticky.rules[0].sticky_variant == _v("ab", "b")
    # a write is reported, not made
    assert sticky.writes == (("u1", "materializations/sticky", rule, _v("ab", "b")),)


def test_without_a_store_materializations_are_not_supported(pool: ResolverPool) -> None:
    e = explain(pool, "vip", {"targeting_key": "u1"})
    assert e.reason == "MATERIALIZATION_NOT_SUPPORTED"


# -- the property: the trace's answer is the resolve's -----------------------------------------

_SUITE: dict[str, Any] = {}


def _suite() -> dict[str, Any]:
    if not _SUITE:
        doc = json.loads(CONFORMANCE.read_text())
        cases = json.loads((CONFORMANCE.parent / "cases.json").read_text())
        state, account = state_from_suite_json(doc)
        pool = ResolverPool(1, enable_apply_dedup=False, disable_exposure_collection=True)
        pool.set_state(state, account)
        secrets = sorted({c["resolveRequest"]["clientSecret"] for c in cases})
        contexts = [c["resolveRequest"].get("evaluationContext") or {} for c in cases]
        attrs = sorted({k for c in contexts for k in c} | {"targeting_key", "user", "country"})
        values = [v for c in contexts for v in c.values() if not isinstance(v, dict)]
        _SUITE.update(
            pool=pool, flags=sorted(doc["flags"]), secrets=secrets, attrs=attrs, values=values
        )
    return _SUITE


def _contexts() -> st.SearchStrategy[dict[str, Any]]:
    suite = _suite()
    scalar = st.one_of(
        st.sampled_from(suite["values"]) if suite["values"] else st.none(),
        st.none(),
        st.booleans(),
        st.integers(-5, 200),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.text(max_size=6),
        st.sampled_from(["SE", "NO", "user1", "1.2.3", "2024-01-01T00:00:00Z"]),
    )
    value = st.one_of(scalar, st.lists(scalar, max_size=3))
    return st.dictionaries(st.sampled_from(suite["attrs"]), value, max_size=6)


@pytest.mark.skipif(
    not CONFORMANCE.is_file(),
    reason="../shared/conformance/state.json is not present (team workspace and CI only)",
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_trace_answer_equals_a_normal_resolve(data: st.DataObject) -> None:
    suite = _suite()
    flag = data.draw(st.sampled_from(suite["flags"]))
    secret = data.draw(st.sampled_from(suite["secrets"]))
    context = data.draw(_contexts())
    mode = MaterializationMode.COMPLETE
    request = ResolveRequest(
        flags=(flag,),
        context_json=json.dumps(context).encode(),
        client_secret=secret,
        apply=False,
        materialization_mode=mode,
        skip_logging=True,
    )
    pool: ResolverPool = suite["pool"]
    with pool.borrow() as instance:
        resolved = instance.resolve(request)
        doc = instance.explain(request)
    assert isinstance(resolved, Resolved) and isinstance(doc, dict)
    e = Explanation.from_document(doc)
    if not resolved.flags:
        assert e.presence != "resolved" and e.variant == ""
        return
    got = resolved.flags[0]
    assert e.presence == "resolved"
    assert (e.variant, e.rule, e.assignment_id) == (
        got.variant,
        got.assignment_origin,
        got.assignment_id,
    )
    assert e.reason == _reason_name(got.reason)
    assert e.should_apply == got.should_apply


def _reason_name(reason: int) -> str:
    from confidence._wasm.abi import ResolveReason

    return ResolveReason(reason).name


# -- from code, the CLI and the emulator ------------------------------------------------------


@pytest.fixture
def served() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
        emu.set_state(explain_state().build(), account_id=ACCOUNT)
        yield emu


def test_provider_explain_sends_no_exposure(served: ConfidenceEmulator) -> None:
    provider = make_provider(served)
    api.set_provider_and_wait(provider)
    try:
        e = provider.explain("targeted", EvaluationContext("u1", {"country": "SE"}))
        assert (e.reason, e.variant) == ("MATCH", _v("targeted", "on"))
        plain = provider.explain("targeted", {"targeting_key": "u1", "age": 30})
        assert plain.rule == "flags/targeted/rules/adults"
        with pytest.raises(OpenFeatureError):
            provider.explain("", None)
        assert sum(provider.stats().resolves_by_reason.values()) == 0
        # one real evaluation, so the flush below demonstrably carries what was resolved
        client = api.get_client()
        ctx = EvaluationContext("u1", {"country": "SE"})
        assert client.get_boolean_value("targeted.on", False, ctx) is True
    finally:
        api.shutdown()  # the final flush
    assert served.exposure_count() == 1
    assert sum(served.resolve_counts()["flags/targeted"].values()) == 1


def test_the_emulator_serves_the_trace_over_http(served: ConfidenceEmulator) -> None:
    body = json.dumps({"flag": "targeted", "context": {"targeting_key": "u1", "age": 5}}).encode()
    req = urllib.request.Request(
        f"{served.base_url}/v1/explain",
        data=body,
        headers={"Authorization": f"ClientSecret {SECRET}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.loads(resp.read())
    e = Explanation.from_document(doc)
    assert e.reason == "NO_SEGMENT_MATCH"
    assert e.rules[1].segments[0].criteria[0].reason == "out_of_range"
    assert served.explain("targeted", {"country": "SE", "targeting_key": "x"}).reason == "MATCH"
    served.set_inclusion("u9", "materializations/vip")
    assert served.explain("vip", {"targeting_key": "u9"}).reason == "MATCH"
    bad = urllib.request.Request(f"{served.base_url}/v1/explain", data=body)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 401


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confidence", "explain", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_a_tree_and_json(tmp_path: Path) -> None:
    state = tmp_path / "state.pb"
    state.write_bytes(explain_state().build_client_state())
    ctx = json.dumps({"targeting_key": "u1", "age": 70, "country": "FI"})
    tree = _cli("--state", str(state), "--flag", "targeted", "--context", ctx)
    assert tree.returncode == 0, tree.stderr
    assert "not_in_list" in tree.stdout and "out_of_range" in tree.stdout
    assert "rule flags/targeted/rules/se -> segment_not_matched" in tree.stdout
    as_json = _cli("--state", str(state), "--flag", "targeted", "--context", ctx, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["reason"] == "NO_SEGMENT_MATCH"
    assert SECRET not in tree.stdout + as_json.stdout
    bad = _cli("--state", str(state), "--flag", "targeted", "--context", "[1]")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
