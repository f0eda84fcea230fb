"""The resolver ABI (resolver/README.md) on top of one wasm instance.

Turns typed Python requests into the protobuf messages of `proto/confidence/wasm/v1/abi.proto`
and back. Values come back as JSON text decoded with one `json.loads`, which is far cheaper
than walking a protobuf Struct.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from confidence._engine import CompiledResolver, Export, WasmInstance, WasmTrap
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._proto.confidence.wasm.v1 import abi_pb2

__all__ = [
    "MaterializationMode",
    "MaterializationRecord",
    "ResolveReason",
    "ResolveRequest",
    "Resolved",
    "ResolvedFlag",
    "ResolverError",
    "ResolverInstance",
    "StateSummary",
    "Suspended",
    "WasmTrap",
]

_OK: Final = 0
_ERROR: Final = 1


class ResolverError(Exception):
    """An error the guest reported (bad state, unknown client secret, ...).

    The instance stays healthy. Messages never contain a client secret.
    """


class MaterializationMode(enum.IntEnum):
    UNSUPPORTED = abi_pb2.MATERIALIZATION_MODE_UNSUPPORTED
    DISCOVERY = abi_pb2.MATERIALIZATION_MODE_DISCOVERY
    COMPLETE = abi_pb2.MATERIALIZATION_MODE_COMPLETE


class ResolveReason(enum.IntEnum):
    UNSPECIFIED = 0
    MATCH = 1
    NO_SEGMENT_MATCH = 2
    NO_TREATMENT_MATCH = 3
    FLAG_ARCHIVED = 4
    TARGETING_KEY_ERROR = 5
    ERROR = 6
    UNRECOGNIZED_TARGETING_RULE = 7
    MATERIALIZATION_NOT_SUPPORTED = 8
    TYPE_MISMATCH = 9
    FLAG_NOT_FOUND = 10


@dataclass(frozen=True, slots=True)
class MaterializationRecord:
    """(unit, materialization, rule) → variant. rule == "" is an inclusion record."""

    unit: str
    materialization: str
    rule: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    flags: tuple[str, ...]  # "flags/<name>"; empty = every flag of the client
    context_json: bytes  # the evaluation context as a JSON object
    client_secret: str
    apply: bool
    materialization_mode: MaterializationMode = MaterializationMode.UNSUPPORTED
    materializations: tuple[MaterializationRecord, ...] = ()
    skip_logging: bool = False

    def __repr__(self) -> str:  # never show the secret
        return (
            f"ResolveRequest(flags={self.flags!r}, apply={self.apply}, "
            f"materialization_mode={self.materialization_mode.name})"
        )


@dataclass(frozen=True, slots=True)
class ResolvedFlag:
    flag: str
    variant: str
    value: dict[str, Any] | None
    reason: int
    should_apply: bool
    assignment_origin: str
    assignment_id: str


@dataclass(frozen=True, slots=True)
class Resolved:
    flags: tuple[ResolvedFlag, ...]
    resolve_id: str
    writes: tuple[MaterializationRecord, ...]


@dataclass(frozen=True, slots=True)
class Suspended:
    reads: tuple[MaterializationRecord, ...]


@dataclass(frozen=True, slots=True)
class StateSummary:
    flag_digests: Mapping[str, int]
    segment_count: int
    client_count: int


@dataclass(frozen=True, slots=True)
class FlushedLogs:
    write_flag_logs_request: bytes  # serialized WriteFlagLogsRequest (b"" when nothing)
    more_pending: bool
    flag_assigned_count: int


def _sdk(version: str) -> api_pb2.Sdk:
    return api_pb2.Sdk(id=api_pb2.SDK_ID_PYTHON_LOCAL_PROVIDER, version=version)


def now_millis() -> int:
    return time.time_ns() // 1_000_000


class ResolverInstance:
    """One wasm instance speaking the ABI. Not thread-safe; the pool serializes use."""

    def __init__(
        self,
        compiled: CompiledResolver,
        *,
        sdk_version: str,
        enable_apply_dedup: bool = True,
        disable_exposure_collection: bool = False,
        memory_limit: int | None = None,
    ) -> None:
        self._wasm: WasmInstance = (
            compiled.instantiate()
            if memory_limit is None
            else compiled.instantiate(memory_limit=memory_limit)
        )
        if self._wasm.abi_version != 1:
            raise ResolverError(f"resolver.wasm speaks ABI {self._wasm.abi_version}, expected 1")
        configure = abi_pb2.Configure(
            rng_seed=int.from_bytes(os.urandom(8), "little"),
            sdk=_sdk(sdk_version),
            enable_apply_dedup=enable_apply_dedup,
            disable_exposure_collection=disable_exposure_collection,
        )
        result = abi_pb2.ConfigureResult.FromString(
            self._call(Export.CONFIGURE, configure.SerializeToString())
        )
        self.resolver_version: str = result.resolver_version
        self.state_generation = 0  # which pool state this instance holds

    def _call(self, export: str, payload: bytes) -> bytes:
        response = self._wasm.call(export, payload)
        if not response:
            raise WasmTrap(f"{export} returned an empty response")
        status = response[0]
        if status == _OK:
            return response[1:]
        if status == _ERROR:
            raise ResolverError(response[1:].decode("utf-8", "replace"))
        raise WasmTrap(f"{export} returned unknown status {status}")

    def set_state(self, state: bytes, account_id: str) -> StateSummary:
        payload = abi_pb2.SetState(state=state, account_id=account_id).SerializeToString()
        result = abi_pb2.SetStateResult.FromString(self._call(Export.SET_STATE, payload))
        return StateSummary(
            flag_digests={f.name: f.digest for f in result.flags},
            segment_count=result.segment_count,
            client_count=result.client_count,
        )

    def resolve(self, request: ResolveRequest, now_ms: int | None = None) -> Resolved | Suspended:
        call = abi_pb2.ResolveCall(
            flags=request.flags,
            context_json=request.context_json,
            client_secret=request.client_secret,
            apply=request.apply,
            now_unix_millis=now_millis() if now_ms is None else now_ms,
            materialization_mode=int(request.materialization_mode),
            skip_logging=request.skip_logging,
        )
        if request.materializations:
            call.materializations.extend(
                api_pb2.MaterializationRecord(
                    unit=r.unit, materialization=r.materialization, rule=r.rule, variant=r.variant
                )
                for r in request.materializations
            )
        result = abi_pb2.ResolveResult.FromString(
            self._call(Export.RESOLVE, call.SerializeToString())
        )
        if result.WhichOneof("result") == "suspended":
            return Suspended(
                reads=tuple(_record(r) for r in result.suspended.materializations_to_read)
            )
        resolved = result.resolved
        return Resolved(
            flags=tuple(
                ResolvedFlag(
                    flag=f.flag,
                    variant=f.variant,
                    value=json.loads(f.value_json) if f.value_json else None,
                    reason=f.reason,
                    should_apply=f.should_apply,
                    assignment_origin=f.assignment_origin,
                    assignment_id=f.assignment_id,
                )
                for f in resolved.flags
            ),
            resolve_id=resolved.resolve_id,
            writes=tuple(_record(r) for r in resolved.materializations_to_write),
        )

    def flush_logs(self, now_ms: int | None = None, max_assigned_bytes: int = 0) -> FlushedLogs:
        payload = abi_pb2.FlushLogs(
            now_unix_millis=now_millis() if now_ms is None else now_ms,
            max_assigned_bytes=max_assigned_bytes,
        ).SerializeToString()
        result = abi_pb2.FlushLogsResult.FromString(self._call(Export.FLUSH_LOGS, payload))
        return FlushedLogs(
            write_flag_logs_request=result.write_flag_logs_request,
            more_pending=result.more_pending,
            flag_assigned_count=result.flag_assigned_count,
        )

    def memory_size(self) -> int:
        return self._wasm.memory_size()


def _record(r: Any) -> MaterializationRecord:
    return MaterializationRecord(
        unit=r.unit, materialization=r.materialization, rule=r.rule, variant=r.variant
    )
