"""OpenFeature EvaluationContext -> the resolver's `context_json` (protocol.md §6.4 steps 3-4).

One job: turn the caller's context into the JSON object the resolver reads, and pull out the
per-evaluation `_confidence_skip_apply` switch, without touching the caller's objects.

Value mapping:
- `targeting_key` goes in only when truthy; an attribute named `targeting_key` wins over it.
- None, bool, int, float, str, list/tuple and dict map to their JSON kinds. NaN and
  +/-Infinity are written as the JSON extensions `NaN`/`Infinity` (the resolver reads them;
  a NaN targeting key is a targeting-key error there, which is the right answer).
- `datetime`/`date` become ISO 8601 (`isoformat()`), not `str()`: an aware datetime keeps its
  offset, so the resolver reads it as RFC 3339; a naive one has no offset and the resolver
  reads it as UTC. `str()` would give a space-separated form that the resolver also accepts,
  but ISO is the unambiguous, standard spelling and what users see in other SDKs.
- Any other Mapping/Sequence (e.g. a MappingProxyType attribute) becomes an object/list;
  anything else becomes `str(value)`.

No cache: the OpenFeature client merges the API, transaction, client and invocation
contexts into a *new* EvaluationContext (and a new attributes dict) on every evaluation, so
an identity-keyed cache never hits through the SDK, and a content-keyed one costs about as
much as the `json.dumps` it would save.
"""

from __future__ import annotations

import datetime as _dt
import json
import json.encoder
from collections.abc import Mapping, Sequence
from typing import Any, Final

from openfeature.evaluation_context import EvaluationContext

from confidence.errors import ContextError

__all__ = ["SKIP_APPLY_KEY", "ContextError", "encode_context"]

#: Attribute that turns off exposure logging for one evaluation. Only a real `True` counts.
SKIP_APPLY_KEY: Final = "_confidence_skip_apply"

_EMPTY: Final = b"{}"
_KEY_OPEN: Final = b'{"targeting_key":'
_encode_str: Final = json.encoder.encode_basestring


def _default(value: object) -> Any:  # Any: JSON values
    # Called by json for anything it does not know natively.
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k) if not _is_json_key(k) else k: v for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return list(value)
    return str(value)


def _is_json_key(key: object) -> bool:
    return key is None or isinstance(key, (str, int, float, bool))


_ENCODER: Final = json.JSONEncoder(
    skipkeys=False,
    ensure_ascii=False,
    check_circular=True,
    allow_nan=True,
    separators=(",", ":"),
    default=_default,
)


# The same C encoder `_ENCODER.encode` builds on every call, built once. Without a markers
# dict (which would be shared across threads, and a shared attributes dict encoded by two
# threads at once would then look like a cycle): a cycle ends in RecursionError instead,
# and `_dumps` then redoes the encoding on the checked path for the usual error.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_FAST_ENCODE: Final = (
    _c_make_encoder(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    if _c_make_encoder is not None
    else None
)


def _sanitize(value: Any, depth: int = 0) -> Any:  # Any: JSON values
    """Slow path: stringify dict keys json cannot take (tuples, objects...)."""
    if depth > 64:
        raise ContextError("evaluation context is nested too deeply")
    if isinstance(value, Mapping):
        return {
            (k if _is_json_key(k) else str(k)): _sanitize(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, depth + 1) for v in value]
    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. text decoded with errors="surrogateescape") are not Unicode,
        # and the resolver would refuse the whole context for one of them. Join split pairs
        # and replace the rest with U+FFFD, as the resolver does for an escaped lone one.
        fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return fixed.encode("utf-8")


def _dumps(obj: dict[str, Any]) -> bytes:  # Any: JSON values
    if _FAST_ENCODE is not None:
        try:
            text = "".join(_FAST_ENCODE(obj, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # the checked path below gives the error (or the sanitized retry)
        else:
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                return _utf8(text)
    try:
        return _utf8(_ENCODER.encode(obj))
    except TypeError:
        # A dict key json refuses (only reachable with odd user data): retry on a copy
        # whose keys are strings. Still never mutates the caller's objects.
        try:
            return _utf8(_ENCODER.encode(_sanitize(obj)))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ContextError(f"evaluation context is not serializable: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # json raises ValueError("Circular reference detected") for cycles.
        raise ContextError(f"evaluation context is not serializable: {exc}") from None


def encode_context(ctx: EvaluationContext | None) -> tuple[bytes, bool]:
    """Return `(context_json, skip_apply)` for one evaluation.

    `skip_apply` is True only when the `_confidence_skip_apply` attribute is exactly `True`;
    the key itself is never sent to the resolver. The caller's context is left untouched.
    """
    if ctx is None:
        return _EMPTY, False
    attributes = ctx.attributes
    targeting_key = ctx.targeting_key
    has_skip = SKIP_APPLY_KEY in attributes
    if not targeting_key and not has_skip:
        if not attributes:
            return _EMPTY, False
        if type(attributes) is dict:
            # Fast path: the attributes dict already is the JSON object; no copy needed.
            return _dumps(attributes), False
    if (
        targeting_key
        and not has_skip
        and type(targeting_key) is str
        and type(attributes) is dict
        and "targeting_key" not in attributes
    ):
        # The common case (a key and plain attributes): the key spliced in front of the
        # attributes' JSON, which is what encoding {"targeting_key": key, **attributes} gives,
        # without building that dict.
        text = _encode_str(targeting_key)
        try:
            key = text.encode("utf-8")
        except UnicodeEncodeError:
            key = _utf8(text)  # (as _dumps would fix it; no pair spans the quotes)
        if not attributes:
            return _KEY_OPEN + key + b"}", False
        return _KEY_OPEN + key + b"," + _dumps(attributes)[1:], False
    # Any: JSON values
    fields: dict[str, Any] = {"targeting_key": targeting_key} if targeting_key else {}
    fields.update(attributes)
    skip_apply = False
    if has_skip:
        skip_apply = fields.pop(SKIP_APPLY_KEY) is True
    return (_dumps(fields) if fields else _EMPTY), skip_apply
