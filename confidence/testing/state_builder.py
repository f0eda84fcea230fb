"""Build resolver states in code, for tests, the demo and the conformance runner.

Two ways in:
- `state_from_suite_json(doc)` turns the conformance suite's `state.json` form into a
  serialized `ResolverState` (flags/segments in protobuf JSON, bitsets as set-bit lists).
- `StateBuilder` writes one fluently::

      state = (
          StateBuilder(account="demo")
          .client("my-secret")
          .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
          .flag(
              "flags/checkout",
              variants={"new": {"enabled": True}, "old": {"enabled": False}},
              rules=[rollout("segments/sweden", {"new": 50, "old": 50})],
          )
      )
      payload = state.build()            # ResolverState bytes
      client_state = state.build_client_state()  # ClientResolverState bytes (what the CDN serves)
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from confidence._proto.confidence.flags.admin.v1 import resolver_pb2
from confidence._proto.confidence.iam.v1 import iam_pb2

__all__ = [
    "BITSET_SIZE",
    "StateBuilder",
    "attribute_eq",
    "attribute_in",
    "bitset_from_bits",
    "rollout",
    "state_from_suite_json",
    "with_materialization",
]

BITSET_SIZE = 1_000_000


def bitset_from_bits(bits: Iterable[int], size: int = BITSET_SIZE) -> bytes:
    """Gzip a bit vector (bit i = bit i%8, LSB first, of byte i//8)."""
    data = bytearray((size + 7) // 8)
    for i in bits:
        data[i // 8] |= 1 << (i % 8)
    return gzip.compress(bytes(data), mtime=0)


def _parse(message: Any, doc: Mapping[str, Any]) -> Any:
    return json_format.ParseDict(doc, message, ignore_unknown_fields=True)


def state_from_suite_json(doc: Mapping[str, Any]) -> tuple[bytes, str]:
    """The conformance suite's state.json → (serialized ResolverState, account id)."""
    state = resolver_pb2.ResolverState()
    for flag in doc.get("flags", {}).values():
        state.flags.append(_parse(resolver_pb2.Flag(), flag))
    for segment in doc.get("segments", {}).values():
        state.segments_no_bitsets.append(_parse(resolver_pb2.Segment(), segment))
    for segment_name, bits in doc.get("bitsets", {}).items():
        packed = state.bitsets.add(segment=segment_name)
        if bits == "ALL":
            packed.full_bitset = True
        else:
            packed.gzipped_bitset = bitset_from_bits(bits)
    for name, bloom in doc.get("bloomFilters", {}).items():
        state.bloom_filters.add(
            materialized_segment=name,
            data=base64.b64decode(bloom["data"]),
            hash_function_count=int(bloom["hashFunctionCount"]),
            bit_count=int(bloom["bitCount"]),
            strategy=int(bloom.get("strategy", 1)),
        )
    for secret, entry in doc.get("clients", {}).items():
        client = _parse(iam_pb2.Client(), entry["client"])
        credential = _parse(iam_pb2.ClientCredential(), entry["clientCredential"])
        if not credential.client_secret.secret:
            credential.client_secret.secret = secret
        state.clients.append(client)
        state.client_credentials.append(credential)
    account_name = doc.get("account", {}).get("name", "accounts/test")
    account_id = account_name.split("/", 1)[1] if "/" in account_name else account_name
    return state.SerializeToString(), account_id


# -- targeting helpers (protobuf JSON of confidence.flags.types.v1.Targeting) --------------


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, (int, float)):
        return {"numberValue": v}
    return {"stringValue": str(v)}


def attribute_eq(attribute: str, value: Any) -> dict[str, Any]:
    """Targeting: `attribute == value`."""
    return {
        "criteria": {
            "c": {"attribute": {"attributeName": attribute, "eqRule": {"value": _value(value)}}}
        },
        "expression": {"ref": "c"},
    }


def attribute_in(attribute: str, values: Sequence[Any]) -> dict[str, Any]:
    """Targeting: `attribute in values`."""
    return {
        "criteria": {
            "c": {
                "attribute": {
                    "attributeName": attribute,
                    "setRule": {"values": [_value(v) for v in values]},
                }
            }
        },
        "expression": {"ref": "c"},
    }


def rollout(
    segment: str,
    weights: Mapping[str, int],
    *,
    name: str | None = None,
    bucket_count: int = 100,
    targeting_key_selector: str = "",
    environments: Sequence[str] = (),
) -> dict[str, Any]:
    """A rule splitting `segment` between variants by weight (buckets out of bucket_count).

    A single variant with the full bucket range is a full rollout (no unit needed).
    """
    assignments = []
    lower = 0
    for i, (variant, weight) in enumerate(weights.items()):
        upper = lower + weight
        assignments.append(
            {
                "assignmentId": f"{variant}-{i}",
                "variant": {"variant": variant},
                "bucketRanges": [{"lower": lower, "upper": upper}],
            }
        )
        lower = upper
    rule: dict[str, Any] = {
        "segment": segment,
        "enabled": True,
        "assignmentSpec": {"bucketCount": bucket_count, "assignments": assignments},
    }
    if targeting_key_selector:
        # Blank means the default selector (targeting_key) with its lenient rules; an
        # explicit selector, even "targeting_key", is strict (as the conformance suite has it).
        rule["targetingKeySelector"] = targeting_key_selector
    if name:
        rule["name"] = name
    if environments:
        rule["environments"] = list(environments)
    return rule


def with_materialization(
    rule: Mapping[str, Any],
    *,
    write: str | None = None,
    read: str | None = None,
    must_match: bool = False,
    segment_targeting_can_be_ignored: bool = False,
) -> dict[str, Any]:
    """A copy of `rule` with a `materializationSpec`.

    `write=read="materializations/x"` makes a sticky rule: a unit's first assignment is
    recorded, and later resolves return it whatever the bucketing says. With
    `segment_targeting_can_be_ignored` they do so even when the unit no longer matches the
    segment's targeting; without it the targeting must still match. `must_match`: only
    units already recorded in `read` match the rule.
    """
    spec: dict[str, Any] = {}
    if write:
        spec["writeMaterialization"] = write
    if read:
        spec["readMaterialization"] = read
    if must_match or segment_targeting_can_be_ignored:
        spec["mode"] = {
            "materializationMustMatch": must_match,
            "segmentTargetingCanBeIgnored": segment_targeting_can_be_ignored,
        }
    return {**rule, "materializationSpec": spec}


class StateBuilder:
    """A small fluent builder of `ResolverState` for tests and demos."""

    def __init__(self, account: str = "test-account") -> None:
        self.account_id = account
        self._state = resolver_pb2.ResolverState()
        self._client_names: list[str] = []

    def client(
        self,
        secret: str,
        *,
        name: str = "clients/test-client",
        credential: str | None = None,
        environments: Sequence[str] = (),
    ) -> StateBuilder:
        if name not in self._client_names:
            self._state.clients.add(name=name)
            self._client_names.append(name)
        cred = self._state.client_credentials.add(
            name=credential or f"{name}/clientCredentials/{len(self._state.client_credentials)}"
        )
        cred.client_secret.secret = secret
        cred.environments.extend(environments)
        return self

    def segment(
        self,
        name: str,
        *,
        targeting: Mapping[str, Any] | None = None,
        bits: Iterable[int] | None = None,
    ) -> StateBuilder:
        doc: dict[str, Any] = {"name": name, "state": "ALLOCATED"}
        if targeting is not None:
            doc["targeting"] = dict(targeting)
        self._state.segments_no_bitsets.append(_parse(resolver_pb2.Segment(), doc))
        packed = self._state.bitsets.add(segment=name)
        if bits is None:
            packed.full_bitset = True
        else:
            packed.gzipped_bitset = bitset_from_bits(bits)
        return self

    def flag(
        self,
        name: str,
        *,
        variants: Mapping[str, Mapping[str, Any]],
        rules: Sequence[Mapping[str, Any]] = (),
        clients: Sequence[str] | None = None,
        schema: Mapping[str, Any] | None = None,
        state: str = "ACTIVE",
    ) -> StateBuilder:
        doc: dict[str, Any] = {
            "name": name,
            "state": state,
            "clients": list(clients if clients is not None else self._client_names),
            "variants": [{"name": v, "value": dict(value)} for v, value in variants.items()],
            "rules": [
                {"name": r.get("name") or f"{name}/rules/rule-{i}", **r}
                for i, r in enumerate(rules)
            ],
        }
        if schema is not None:
            doc["schema"] = dict(schema)
        self._state.flags.append(_parse(resolver_pb2.Flag(), doc))
        return self

    def build(self) -> bytes:
        """The serialized ResolverState."""
        return bytes(self._state.SerializeToString())

    def build_client_state(self, log_destinations: Sequence[int] = ()) -> bytes:
        """The serialized ClientResolverState, as the CDN serves it (before encryption)."""
        return bytes(
            resolver_pb2.ClientResolverState(
                state=self.build(), account=self.account_id, log_destinations=list(log_destinations)
            ).SerializeToString()
        )
