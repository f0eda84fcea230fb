"""Reliability: bad evaluation input (issue #6).

Contexts with every JSON type in every attribute, deep nesting, huge strings, odd targeting
keys, unicode (lone surrogates included), NaN and infinities, keys with dots; flag keys that
are empty, absurdly long or have empty path segments. Every one gets a documented outcome
(docs/errors.md): a value, or the caller's default with an error code. Nothing raises.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from provider_support import SECRET, requires_wasm, sample_state

from confidence import ConfidenceProvider
from confidence.provider import MAX_FLAG_KEY_LENGTH

pytestmark = [requires_wasm]

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfidenceProvider]:
    path = tmp_path_factory.mktemp("state") / "state.pb"
    path.write_bytes(sample_state().build_client_state())
    p = ConfidenceProvider(SECRET, state_file=path, offline=True, pool_size=2)
    p.initialize(EvaluationContext())
    yield p
    p.shutdown()


def _nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


class Odd:
    def __str__(self) -> str:
        return "odd"


EVERY_KIND: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    10**30,
    1.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "SE",
    "Malmö 😀 \u202e\x00",
    "\ud800 lone surrogate",
    [],
    [1, "SE", None, [True]],
    {},
    {"nested": {"x": [1, 2]}, 3: "int key", (1, 2): "tuple key"},
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
    dt.date(2024, 5, 6),
    decimal.Decimal("1.10"),
    {1, 2},
    b"\x00\xff",
    Odd(),
]


@pytest.mark.parametrize("value", EVERY_KIND, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("attribute", ["country", "other", "a.b", "", "targeting_key"])
def test_every_kind_of_value_in_every_attribute(
    provider: ConfidenceProvider, attribute: str, value: Any
) -> None:
    ctx = EvaluationContext("user-1", {attribute: value})
    swedish = provider.resolve_boolean_details("swedish.enabled", False, ctx)
    if attribute == "targeting_key" and swedish.error_code is not None:
        # The attribute replaces the unit; a unit that is not a string or a whole number
        # (or is over 100 characters) is a context error.
        assert swedish.error_code == ErrorCode.INVALID_CONTEXT
        assert swedish.value is False
    else:
        assert swedish.error_code is None, swedish.error_message
        matches = attribute == "country" and value == "SE"
        assert swedish.value is matches or (attribute == "country" and isinstance(value, list))
        assert swedish.reason in (Reason.TARGETING_MATCH, Reason.DEFAULT)
    # A flag that does not look at attributes is unaffected (unless the unit itself is bad).
    feature = provider.resolve_string_details("feature.color", "none", ctx)
    assert feature.value in ("blue", "none")
    assert feature.error_code in (None, ErrorCode.INVALID_CONTEXT)


@pytest.mark.parametrize(
    ("unit", "valid"),
    [
        ("user-1", True),
        ("", True),
        ("ü😀", True),
        ("x" * 100, True),
        ("x" * 101, False),
        ("x" * (10 * MiB), False),
        (7, True),
        (10**30, True),
        (7.0, True),
        (7.5, False),
        (True, False),
        (math.nan, False),
        (math.inf, False),
        ([1], False),
        ({"a": 1}, False),
    ],
    ids=lambda v: f"{type(v).__name__}:{str(v)[:12]}",
)
@pytest.mark.parametrize("how", ["field", "attribute"])
def test_targeting_keys_of_every_type(
    provider: ConfidenceProvider, unit: Any, valid: bool, how: str
) -> None:
    ctx = (
        EvaluationContext(unit)  # the SDK does not check the field's type
        if how == "field" and unit != ""
        else EvaluationContext(None, {"targeting_key": unit})
    )
    details = provider.resolve_string_details("split.group", "default", ctx)
    if valid:
        assert details.error_code is None, details.error_message
        assert details.value in ("a", "b")
    else:
        assert (details.value, details.reason, details.error_code) == (
            "default",
            Reason.ERROR,
            ErrorCode.INVALID_CONTEXT,
        )


@pytest.mark.parametrize(
    ("depth", "code"),
    [(10, None), (120, None), (200, ErrorCode.INVALID_CONTEXT), (5000, ErrorCode.INVALID_CONTEXT)],
)
def test_deep_nesting(provider: ConfidenceProvider, depth: int, code: ErrorCode | None) -> None:
    ctx = EvaluationContext("user-1", {"deep": _nested(depth), "list": [[[]]] * 3})
    details = provider.resolve_string_details("feature.color", "default", ctx)
    assert details.error_code == code, details.error_message
    assert details.value == ("blue" if code is None else "default")


def test_huge_strings(provider: ConfidenceProvider) -> None:
    ctx = EvaluationContext("user-1", {"blob": "x" * (10 * MiB), "country": "SE"})
    assert provider.resolve_boolean_details("swedish.enabled", False, ctx).value is True


def test_keys_with_dots_are_plain_names(provider: ConfidenceProvider) -> None:
    ctx = EvaluationContext("user-1", {"country.code": "SE", "country": "DK"})
    assert provider.resolve_boolean_details("swedish.enabled", False, ctx).value is False
    ctx = EvaluationContext("user-1", {"country.code": "DK", "country": "SE"})
    assert provider.resolve_boolean_details("swedish.enabled", False, ctx).value is True


def test_lone_surrogates_are_repaired_not_fatal(provider: ConfidenceProvider) -> None:
    # A split surrogate pair is the character it encodes; a lone one becomes U+FFFD.
    joined = EvaluationContext(None, {"targeting_key": "\ud83d\ude00"})
    direct = EvaluationContext("😀")
    a = provider.resolve_string_details("split.group", "d", joined)
    b = provider.resolve_string_details("split.group", "d", direct)
    assert (a.value, a.error_code) == (b.value, None)
    lone = EvaluationContext("user-1", {"country": "S\udce9"})
    details = provider.resolve_boolean_details("swedish.enabled", False, lone)
    assert (details.value, details.reason, details.error_code) == (False, Reason.DEFAULT, None)


def test_cyclic_context_is_invalid(provider: ConfidenceProvider) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    details = provider.resolve_string_details("feature.color", "d", EvaluationContext("u", loop))
    assert (details.value, details.error_code) == ("d", ErrorCode.INVALID_CONTEXT)


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", ErrorCode.FLAG_NOT_FOUND),
        (".", ErrorCode.FLAG_NOT_FOUND),
        ("..", ErrorCode.FLAG_NOT_FOUND),
        (".color", ErrorCode.FLAG_NOT_FOUND),
        ("feature..color", ErrorCode.FLAG_NOT_FOUND),  # an empty path segment
        ("feature.color.", ErrorCode.FLAG_NOT_FOUND),
        ("feature.nested..x", ErrorCode.FLAG_NOT_FOUND),
        # A trailing dot is an empty path: the whole value, as the official provider does.
        ("feature.", ErrorCode.TYPE_MISMATCH),
        ("f" * MAX_FLAG_KEY_LENGTH, ErrorCode.FLAG_NOT_FOUND),
        ("f" * (MAX_FLAG_KEY_LENGTH + 1), ErrorCode.FLAG_NOT_FOUND),
        ("f" * (50 * MiB), ErrorCode.FLAG_NOT_FOUND),
        ("feature." + "x." * 600, ErrorCode.FLAG_NOT_FOUND),
        ("flags/feature", ErrorCode.FLAG_NOT_FOUND),
        (" feature", ErrorCode.FLAG_NOT_FOUND),
        ("feat\x00ure", ErrorCode.FLAG_NOT_FOUND),
        ("feat\ud800ure", ErrorCode.FLAG_NOT_FOUND),
        ("fé😀", ErrorCode.FLAG_NOT_FOUND),
        ("feature.color", None),
    ],
    ids=lambda v: repr(v)[:24] if isinstance(v, str) else str(v),
)
def test_flag_keys(provider: ConfidenceProvider, key: str, code: ErrorCode | None) -> None:
    details = provider.resolve_string_details(key, "default", EvaluationContext("user-1"))
    assert details.error_code == code, details.error_message
    assert details.value == ("blue" if code is None else "default")
    assert len(details.error_message or "") < 2 * MAX_FLAG_KEY_LENGTH  # no giant echo
    if code is not None:
        assert details.reason == Reason.ERROR


def test_trailing_dot_is_the_whole_value(provider: ConfidenceProvider) -> None:
    details = provider.resolve_object_details("feature.", {}, EvaluationContext("user-1"))
    assert details.error_code is None and details.value["color"] == "blue"  # type: ignore[index]


@pytest.mark.anyio
async def test_the_async_path_maps_the_same_way(provider: ConfidenceProvider) -> None:
    for key, ctx, code in [
        ("", EvaluationContext("u"), ErrorCode.FLAG_NOT_FOUND),
        ("x" * 5000, EvaluationContext("u"), ErrorCode.FLAG_NOT_FOUND),
        ("split.group", EvaluationContext(None, {"targeting_key": 7.5}), ErrorCode.INVALID_CONTEXT),
        ("feature.color", EvaluationContext("u", {"d": _nested(300)}), ErrorCode.INVALID_CONTEXT),
        ("feature.color", EvaluationContext("u", {"s": "\ud800"}), None),
    ]:
        details = await provider.resolve_string_details_async(key, "default", ctx)
        assert details.error_code == code, (key[:20], details.error_message)


# -- property-based: arbitrary contexts and keys never escape as exceptions -----------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None), max_size=40)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
_keys = st.text(st.characters(codec=None), max_size=30) | st.sampled_from(
    ["feature", "feature.color", "feature.size", "feature.nested.deep.x", "split.group", ""]
)
_ALLOWED = {None, ErrorCode.FLAG_NOT_FOUND, ErrorCode.TYPE_MISMATCH, ErrorCode.INVALID_CONTEXT}
_KINDS: list[tuple[str, Any, type | tuple[type, ...]]] = [
    ("boolean", False, bool),
    ("string", "d", str),
    ("integer", 0, int),
    ("float", 0.0, float),
    ("object", {}, dict),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=_keys,
    unit=st.one_of(st.none(), _scalars),
    attributes=st.dictionaries(st.text(max_size=10), _values, max_size=6),
    kind=st.sampled_from(_KINDS),
)
def test_any_context_and_key_give_a_documented_outcome(
    provider: ConfidenceProvider,
    key: str,
    unit: Any,
    attributes: dict[str, Any],
    kind: tuple[str, Any, type | tuple[type, ...]],
) -> None:
    name, default, expected_type = kind
    ctx = EvaluationContext(None, {**attributes, "targeting_key": unit})
    details: FlagResolutionDetails[Any] = getattr(provider, f"resolve_{name}_details")(
        key, default, ctx
    )
    assert details.error_code in _ALLOWED, (details.error_code, details.error_message)
    if details.error_code is not None:
        assert details.value == default and details.reason == Reason.ERROR
    else:
        assert isinstance(details.value, expected_type)
        assert not (expected_type is int and isinstance(details.value, bool))
