"""EvaluationContext -> context_json (protocol.md §6.4 steps 3-4)."""

from __future__ import annotations

import datetime as dt
import json
import math
from types import MappingProxyType

import pytest
from openfeature.evaluation_context import EvaluationContext

from confidence._context import SKIP_APPLY_KEY, ContextError, encode_context


def decode(ctx: EvaluationContext | None) -> tuple[dict[str, object], bool]:
    data, skip = encode_context(ctx)
    return json.loads(data), skip


def test_none_and_empty_contexts_send_an_empty_object() -> None:
    assert encode_context(None) == (b"{}", False)
    assert encode_context(EvaluationContext()) == (b"{}", False)
    assert encode_context(EvaluationContext(targeting_key="")) == (b"{}", False)


def test_targeting_key_and_attributes() -> None:
    ctx = EvaluationContext(targeting_key="user-1", attributes={"country": "SE", "age": 42})
    assert decode(ctx) == ({"targeting_key": "user-1", "country": "SE", "age": 42}, False)


def test_targeting_key_attribute_overrides_the_field() -> None:
    ctx = EvaluationContext(targeting_key="user-1", attributes={"targeting_key": "other"})
    assert decode(ctx)[0] == {"targeting_key": "other"}


def test_value_kinds() -> None:
    ctx = EvaluationContext(
        attributes={
            "none": None,
            "flag": True,
            "int": 3,
            "float": 1.5,
            "str": "x",
            "list": [1, "a", [True]],
            "tuple": (1, 2),
            "dict": {"a": {"b": 1}},
            "proxy": MappingProxyType({"k": "v"}),
            "set": {7},
            "bytes": b"ab",
        }
    )
    out, _ = decode(ctx)
    assert out["none"] is None
    assert out["flag"] is True
    assert out["int"] == 3
    assert out["float"] == 1.5
    assert out["list"] == [1, "a", [True]]
    assert out["tuple"] == [1, 2]
    assert out["dict"] == {"a": {"b": 1}}
    assert out["proxy"] == {"k": "v"}
    assert out["set"] == "{7}"  # not a Sequence: "anything else -> str(value)"
    assert out["bytes"] == "b'ab'"


def test_datetimes_are_iso_8601() -> None:
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    naive = dt.datetime(2024, 5, 6, 7, 8, 9)
    out, _ = decode(
        EvaluationContext(attributes={"aware": aware, "naive": naive, "day": dt.date(2024, 5, 6)})
    )
    assert out == {
        "aware": "2024-05-06T07:08:09+00:00",
        "naive": "2024-05-06T07:08:09",
        "day": "2024-05-06",
    }


def test_nan_and_infinity_pass_through() -> None:
    data, _ = encode_context(EvaluationContext(attributes={"n": math.nan, "i": math.inf}))
    assert data == b'{"n":NaN,"i":Infinity}'


def test_unicode_is_utf8() -> None:
    data, _ = encode_context(EvaluationContext(attributes={"city": "Malmö"}))
    assert data == '{"city":"Malmö"}'.encode()


def test_odd_dict_keys_are_stringified() -> None:
    out, _ = decode(EvaluationContext(attributes={"m": {(1, 2): "x", 3: "y"}}))
    assert out == {"m": {"(1, 2)": "x", "3": "y"}}


def test_cycles_are_a_context_error() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ContextError):
        encode_context(EvaluationContext(attributes={"loop": loop}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", False), (1, False), (None, False)],
)
def test_skip_apply_only_for_a_real_true(value: object, expected: bool) -> None:
    attributes = {"a": 1, SKIP_APPLY_KEY: value}
    ctx = EvaluationContext(targeting_key="u", attributes=attributes)
    out, skip = decode(ctx)
    assert skip is expected
    assert out == {"targeting_key": "u", "a": 1}
    # The caller's context is untouched.
    assert ctx.attributes == {"a": 1, SKIP_APPLY_KEY: value}
    assert ctx.targeting_key == "u"


def test_skip_apply_without_targeting_key() -> None:
    ctx = EvaluationContext(attributes={SKIP_APPLY_KEY: True})
    assert encode_context(ctx) == (b"{}", True)
    assert SKIP_APPLY_KEY in ctx.attributes
