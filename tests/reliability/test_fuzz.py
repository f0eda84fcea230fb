"""Reliability: property-based fuzzing of the resolver (issue #6).

Hypothesis builds random but schema-valid resolver states — flags with random schemas and
variants that follow them, segments with attribute targeting or bitsets, rules with random
splits (some on segments that do not exist), archived flags, flags for other clients — and
random evaluation contexts. On every pool instance the resolver must:

- never trap and never report an error for such a state;
- return, for every flag with a variant, exactly that variant's value, of the schema's types
  (properties the variant leaves unset are null);
- agree with itself: the same answer from every instance of the pool.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_support import requires_wasm

from confidence._wasm.abi import Resolved, ResolveRequest
from confidence._wasm.pool import ResolverPool
from confidence.testing.state_builder import StateBuilder, attribute_eq, attribute_in, rollout

pytestmark = [requires_wasm]

SECRET = "fuzz-secret"
ACCOUNT = "fuzz-account"
CLIENT = "clients/fuzz"
ATTRIBUTES = ["country", "plan", "age", "beta", "user_id"]
INSTANCES = 3

# -- schemas and values that follow them ------------------------------------------------------

_LEAF_KINDS = ["boolSchema", "intSchema", "doubleSchema", "stringSchema"]


def _schemas(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    leaf: st.SearchStrategy[dict[str, Any]] = st.sampled_from(_LEAF_KINDS).map(
        lambda kind: {kind: {}}
    )
    if depth >= 2:
        return leaf
    return st.one_of(
        leaf,
        st.dictionaries(_names, _schemas(depth + 1), min_size=1, max_size=3).map(
            lambda props: {"structSchema": {"schema": props}}
        ),
        _schemas(depth + 1).map(lambda element: {"listSchema": {"elementSchema": element}}),
    )


_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def _value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind, body = next(iter(schema.items()))
    if kind == "boolSchema":
        return st.booleans()
    if kind == "intSchema":
        return st.integers(-(2**53), 2**53)  # Struct numbers are doubles
    if kind == "doubleSchema":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "stringSchema":
        return st.text(max_size=20)
    if kind == "listSchema":
        return st.lists(_value_for(body["elementSchema"]), max_size=3)
    return _struct_value(body["schema"])


def _struct_value(props: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    # Any property may be left out (unset) or null.
    return st.fixed_dictionaries(
        {}, optional={name: st.none() | _value_for(schema) for name, schema in props.items()}
    )


# -- states --------------------------------------------------------------------------------------


@dataclass
class FlagSpec:
    name: str
    schema: dict[str, Any]  # property -> FlagSchema JSON
    variants: dict[str, dict[str, Any]]  # variant name -> value
    archived: bool
    ours: bool


_attribute_values = st.one_of(
    st.sampled_from(["SE", "DK", "free", "pro", ""]),
    st.integers(-5, 120),
    st.booleans(),
    st.floats(-10, 130, allow_nan=False),
)


@st.composite
def states(draw: st.DrawFn) -> tuple[bytes, list[FlagSpec]]:
    builder = StateBuilder(account=ACCOUNT).client(SECRET, name=CLIENT)
    segments: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        name = f"segments/s{i}"
        targeting = draw(
            st.one_of(
                st.none(),
                st.builds(attribute_eq, st.sampled_from(ATTRIBUTES), _attribute_values),
                st.builds(
                    attribute_in,
                    st.sampled_from(ATTRIBUTES),
                    st.lists(_attribute_values, min_size=1, max_size=3),
                ),
            )
        )
        bits = draw(st.none() | st.sets(st.integers(0, 999_999), max_size=20))
        builder.segment(name, targeting=targeting, bits=bits)
        segments.append(name)

    specs: list[FlagSpec] = []
    for f in range(draw(st.integers(1, 4))):
        flag = f"flags/f{f}"
        props = draw(st.dictionaries(_names, _schemas(), min_size=1, max_size=4))
        variant_names = [f"{flag}/variants/v{v}" for v in range(draw(st.integers(1, 3)))]
        variants = {v: draw(_struct_value(props)) for v in variant_names}
        rules = []
        for _ in range(draw(st.integers(0, 3))):
            segment = draw(st.sampled_from([*segments, "segments/missing"]))
            cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(variants) - 1,
                                        max_size=len(variants) - 1)))
            bounds = [0, *cuts, draw(st.integers(max(cuts, default=0), 100))]
            weights = {v: bounds[i + 1] - bounds[i] for i, v in enumerate(variant_names)}
            selector = draw(st.sampled_from(["", "", "user_id"]))
            rules.append(rollout(segment, weights, targeting_key_selector=selector))
        archived = draw(st.booleans()) and draw(st.booleans())
        ours = draw(st.integers(0, 5)) > 0
        builder.flag(
            flag,
            variants=variants,
            rules=rules,
            clients=[CLIENT] if ours else ["clients/someone-else"],
            schema={"schema": props},
            state="ARCHIVED" if archived else "ACTIVE",
        )
        specs.append(FlagSpec(flag, props, variants, archived, ours))
    return builder.build(), specs


contexts = st.fixed_dictionaries(
    {},
    optional={
        "targeting_key": st.none() | st.text(max_size=12) | st.integers(0, 10**6),
        **{name: _attribute_values for name in ATTRIBUTES},
    },
)

# -- checks --------------------------------------------------------------------------------------


def _conforms(value: Any, schema: dict[str, Any]) -> bool:
    if value is None:
        return True
    kind, body = next(iter(schema.items()))
    if kind == "boolSchema":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "intSchema":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "doubleSchema":
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "stringSchema":
        return isinstance(value, str)
    if kind == "listSchema":
        return isinstance(value, list) and all(_conforms(v, body["elementSchema"]) for v in value)
    return isinstance(value, dict) and _conforms_struct(value, body["schema"])


def _conforms_struct(value: dict[str, Any], props: dict[str, Any]) -> bool:
    return all(key in props and _conforms(v, props[key]) for key, v in value.items())


def _same(resolved: Any, defined: Any) -> bool:
    """The resolved value is the variant's value; unset properties come back as null."""
    if isinstance(defined, dict):
        return isinstance(resolved, dict) and all(
            _same(resolved.get(k), defined.get(k)) for k in resolved.keys() | defined.keys()
        )
    if isinstance(defined, list):
        return (
            isinstance(resolved, list)
            and len(resolved) == len(defined)
            and all(_same(r, d) for r, d in zip(resolved, defined, strict=True))
        )
    if isinstance(defined, float) or isinstance(resolved, float):
        return not isinstance(resolved, bool) and float(resolved) == float(defined)
    return bool(resolved == defined)


def _answer(result: Resolved) -> list[tuple[Any, ...]]:
    return [
        (f.flag, f.variant, json.dumps(f.value, sort_keys=True), f.reason, f.assignment_id)
        for f in result.flags
    ]


@pytest.fixture(scope="module")
def pool() -> ResolverPool:
    return ResolverPool(size=INSTANCES)


@settings(
    max_examples=int(os.environ.get("CONFIDENCE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(state=states(), ctxs=st.lists(contexts, min_size=1, max_size=4))
def test_random_states_and_contexts(
    pool: ResolverPool, state: tuple[bytes, list[FlagSpec]], ctxs: list[dict[str, Any]]
) -> None:
    payload, specs = state
    pool.set_state(payload, ACCOUNT)
    slots = [pool.acquire() for _ in range(INSTANCES)]
    try:
        assert len({id(slot.instance) for slot in slots}) == INSTANCES
        by_name = {spec.name: spec for spec in specs}
        for ctx in ctxs:
            request = ResolveRequest(
                flags=tuple(by_name),  # by name: archived and others' flags are left out
                context_json=json.dumps(ctx).encode(),
                client_secret=SECRET,
                apply=False,
            )
            answers = []
            for slot in slots:
                result = slot.instance.resolve(request)  # a trap or error fails the test
                assert isinstance(result, Resolved)
                answers.append(_answer(result))
                returned = {f.flag for f in result.flags}
                assert returned == {s.name for s in specs if s.ours and not s.archived}
                for flag in result.flags:
                    spec = by_name[flag.flag]
                    if not flag.variant:
                        assert flag.value is None or flag.value == {}
                        continue
                    assert flag.variant in spec.variants
                    assert isinstance(flag.value, dict)
                    assert _conforms_struct(flag.value, spec.schema), (flag.value, spec.schema)
                    assert _same(flag.value, spec.variants[flag.variant])
            assert answers[1:] == answers[:-1], "instances disagree"
    finally:
        for slot in slots:
            pool.release(slot)
